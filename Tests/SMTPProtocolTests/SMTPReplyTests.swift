import XCTest
import NIOCore
@testable import SMTPProtocol

final class SMTPReplyTests: XCTestCase {
    func testFormattingSingleAndMultiLine() {
        XCTAssertEqual(SMTPReply(code: 250, enhanced: "2.0.0", "Ok").wireString, "250 2.0.0 Ok\r\n")
        XCTAssertEqual(SMTPReply(code: 220, "mx.example ESMTP").wireString, "220 mx.example ESMTP\r\n")
        XCTAssertEqual(SMTPReply(code: 250, lines: ["mx.example", "PIPELINING", "8BITMIME"]).wireString,
                       "250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        XCTAssertEqual(SMTPReply(code: 550, enhanced: "5.7.1", lines: ["Sender Domain", "must resolve"]).wireString,
                       "550-5.7.1 Sender Domain\r\n550 5.7.1 must resolve\r\n")
        XCTAssertEqual(SMTPReply(code: 250, lines: [""]).wireString, "250\r\n")
        // CR/LF injected by a delegate cannot break the framing.
        XCTAssertEqual(SMTPReply(code: 550, enhanced: "5.0.0", "a\r\n250 ok").wireString, "550 5.0.0 a  250 ok\r\n")
    }

    func testClassification() {
        XCTAssertTrue(SMTPReply(code: 354, "go").isPositive)
        XCTAssertFalse(SMTPReply(code: 354, "go").isPositiveCompletion)
        XCTAssertTrue(SMTPReply(code: 451, "x").isTransient)
        XCTAssertTrue(SMTPReply(code: 552, "x").isPermanent)
        XCTAssertFalse(SMTPReply(code: 452, "x").isPermanent)
    }

    func testParsingRoundTrip() throws {
        let replies = [
            SMTPReply(code: 250, enhanced: "2.0.0", "Ok: queued as ABC"),
            SMTPReply(code: 250, lines: ["mx.example", "PIPELINING", "SIZE 1000"]),
            SMTPReply(code: 550, enhanced: "5.7.1", lines: ["one", "two"]),
            SMTPReply(code: 421, enhanced: "4.4.2", "mx Error: timeout exceeded"),
        ]
        for reply in replies {
            var parser = SMTPReplyParser()
            var parsed: SMTPReply?
            let lines = reply.wireString.split(separator: "\r\n", omittingEmptySubsequences: true)
            for (i, line) in lines.enumerated() {
                parsed = try parser.feed(line: String(line))
                XCTAssertEqual(parsed == nil, i < lines.count - 1)
            }
            XCTAssertEqual(parsed, reply)
        }
    }

    func testParsingTable() throws {
        let table: [(String, SMTPReply)] = [
            ("250 2.1.5 Ok", SMTPReply(code: 250, enhanced: "2.1.5", "Ok")),
            ("550 5.1.1", SMTPReply(code: 550, enhanced: "5.1.1", "")),
            ("220", SMTPReply(code: 220, "")),
            ("550 4.1.1 mismatch class", SMTPReply(code: 550, "4.1.1 mismatch class")),
            ("250 2.0 not enhanced", SMTPReply(code: 250, "2.0 not enhanced")),
        ]
        for (line, expected) in table {
            var parser = SMTPReplyParser()
            XCTAssertEqual(try parser.feed(line: line), expected, line)
        }
        for bad in ["25", "abc def", "2500 x", "250x"] {
            var parser = SMTPReplyParser()
            XCTAssertThrowsError(try parser.feed(line: bad), bad)
        }
        var parser = SMTPReplyParser()
        XCTAssertNil(try parser.feed(line: "250-a"))
        XCTAssertThrowsError(try parser.feed(line: "251 b"))
    }

    func testStatusTable() {
        let expected: [(SMTPStatus, String)] = [
            (.syntaxError, "500 5.5.2 Error: command not recognized\r\n"),
            (.badSequence, "503 5.5.1 Error: bad sequence of commands\r\n"),
            (.lineTooLong, "500 5.5.2 Error: line too long\r\n"),
            (.messageTooBig, "552 5.3.4 Error: message file too big\r\n"),
            (.tooManyRecipients, "452 4.5.3 Error: too many recipients\r\n"),
            (.storageFailure, "451 4.3.0 Error: queue file write error\r\n"),
            (.bareLineEndingInData, "554 5.5.2 Error: bare <CR> or <LF> in message data\r\n"),
            (SMTPStatus("no-such-status"), "451 4.3.0 Error: internal error\r\n"),
        ]
        for (status, wire) in expected {
            XCTAssertEqual(SMTPReply(status).wireString, wire, "\(status)")
        }
        XCTAssertEqual(SMTPReply(.timeout, hostname: "mx.example").wireString, "421 4.4.2 mx.example Error: timeout exceeded\r\n")
        // every table entry has a consistent enhanced class
        for (status, entry) in SMTPStatus.table {
            if let enhanced = entry.enhanced {
                XCTAssertEqual(enhanced.first, String(entry.code).first, "\(status)")
            }
        }
    }
}
