import XCTest
@testable import SMTPProtocol

final class SMTPCommandParserTests: XCTestCase {
    private func parse(_ s: String) -> Result<SMTPCommand, SMTPCommandError> {
        SMTPCommandParser.parse(Array(s.utf8))
    }

    func testValidCommands() {
        let table: [(String, SMTPCommand)] = [
            ("EHLO client.example", .ehlo("client.example")),
            ("ehlo [192.0.2.1]", .ehlo("[192.0.2.1]")),
            ("HeLo client", .helo("client")),
            ("MAIL FROM:<>", .mail(reversePath: "", parameters: [:])),
            ("mail from:<a@b.example>", .mail(reversePath: "a@b.example", parameters: [:])),
            ("MAIL FROM: <a@b.example>", .mail(reversePath: "a@b.example", parameters: [:])),
            ("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME", .mail(reversePath: "a@b.example", parameters: ["SIZE": "1000", "BODY": "8BITMIME"])),
            ("MAIL FROM:<a@b.example> smtputf8", .mail(reversePath: "a@b.example", parameters: ["SMTPUTF8": ""])),
            ("MAIL FROM:<\"john doe\"@b.example>", .mail(reversePath: "\"john doe\"@b.example", parameters: [:])),
            ("MAIL FROM:<\"a>b\\\"c\"@b.example>", .mail(reversePath: "\"a>b\\\"c\"@b.example", parameters: [:])),
            ("MAIL FROM:<@relay.example,@r2.example:a@b.example>", .mail(reversePath: "a@b.example", parameters: [:])),
            ("RCPT TO:<x.y+tag@sub.b-c.example>", .rcpt(forwardPath: "x.y+tag@sub.b-c.example", parameters: [:])),
            ("RCPT TO:<Postmaster>", .rcpt(forwardPath: "Postmaster", parameters: [:])),
            ("RCPT TO:<a@[192.0.2.1]>", .rcpt(forwardPath: "a@[192.0.2.1]", parameters: [:])),
            ("RCPT TO:<a@[IPv6:2001:db8::1]>", .rcpt(forwardPath: "a@[IPv6:2001:db8::1]", parameters: [:])),
            ("RCPT TO:<jörg@bücher.example>", .rcpt(forwardPath: "jörg@bücher.example", parameters: [:])),
            ("RCPT TO:<a@b.example> NOTIFY=NEVER", .rcpt(forwardPath: "a@b.example", parameters: ["NOTIFY": "NEVER"])),
            ("DATA", .data), ("data", .data), ("RSET", .rset), ("QUIT", .quit),
            ("NOOP", .noop), ("NOOP anything", .noop),
            ("VRFY bob", .vrfy("bob")), ("HELP", .help(nil)), ("HELP MAIL", .help("MAIL")),
        ]
        for (line, expected) in table {
            XCTAssertEqual(try parse(line).get(), expected, line)
        }
    }

    func testInvalidCommands() {
        let table: [(String, SMTPStatus)] = [
            ("", .syntaxError),
            ("FOO bar", .syntaxError),
            ("STARTTLS now", .parameterSyntax),
            ("AUTH", .parameterSyntax),
            ("AUTH PLAIN a b", .parameterSyntax),
            ("MAILFROM:<a@b>", .syntaxError),
            ("EHLO", .parameterSyntax),
            ("EHLO ", .parameterSyntax),
            ("EHLO a b", .parameterSyntax),
            ("MAIL", .parameterSyntax),
            ("MAIL TO:<a@b.example>", .parameterSyntax),
            ("MAIL FROM:a@b.example", .senderSyntax),
            ("MAIL FROM:<a@b.example", .senderSyntax),
            ("MAIL FROM:<a@>", .senderSyntax),
            ("MAIL FROM:<@b.example>", .senderSyntax),
            ("MAIL FROM:<a..b@b.example>", .senderSyntax),
            ("MAIL FROM:<.a@b.example>", .senderSyntax),
            ("MAIL FROM:<a@b..example>", .senderSyntax),
            ("MAIL FROM:<a@-b.example>", .senderSyntax),
            ("MAIL FROM:<a b@b.example>", .senderSyntax),
            ("MAIL FROM:<a@b.example>SIZE=1", .parameterSyntax),
            ("MAIL FROM:<a@b.example> SIZE=", .parameterSyntax),
            ("MAIL FROM:<a@b.example> =1", .parameterSyntax),
            ("MAIL FROM:<a@b.example> SIZE=1 SIZE=2", .parameterSyntax),
            ("MAIL FROM:<Postmaster>", .senderSyntax),
            ("RCPT TO:<>", .recipientSyntax),
            ("RCPT TO:<a@[300.1.1.1]>", .recipientSyntax),
            ("RCPT TO:<\"unterminated@b.example>", .recipientSyntax),
            ("RCPT TO:<" + String(repeating: "a", count: 250) + "@b.example>", .recipientSyntax),
            ("DATA x", .parameterSyntax),
            ("QUIT now", .parameterSyntax),
            ("VRFY", .parameterSyntax),
            ("NOOP\u{0}", .invalidCharacter),
            ("MAIL FROM:<a@b.example>\r", .invalidCharacter),
            ("RCPT TO:<a\tb@c.example>", .invalidCharacter),
        ]
        for (line, status) in table {
            switch parse(line) {
            case .success(let command): XCTFail("\(line) parsed as \(command)")
            case .failure(let error): XCTAssertEqual(error.status, status, line)
            }
        }
    }
}
