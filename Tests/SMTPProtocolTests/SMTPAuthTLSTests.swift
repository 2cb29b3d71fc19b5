import XCTest
import Foundation
import NIOCore
@testable import SMTPProtocol

/// STARTTLS and AUTH in the pure state machine: exact replies, table driven.
final class SMTPAuthTLSTests: XCTestCase {
    typealias Machine = SMTPServerStateMachine

    func machine(tls: Bool = true, plaintextAuth: Bool = false, requireAuth: Bool = true, tlsActive: Bool = false) -> Machine {
        var m = Machine(configuration: .init(hostname: "mx.test", maxMessageSize: 1000, maxRecipients: 5, maxErrors: 10,
                                             smtpUTF8: false, tlsAvailable: tls, authMechanisms: ["PLAIN", "LOGIN"],
                                             allowPlaintextAuth: plaintextAuth, requireAuth: requireAuth),
                        tlsActive: tlsActive)
        _ = m.handle(.connectionDecision(nil))
        return m
    }

    func run(_ lines: [String], _ m: inout Machine) -> [String] { transcript(lines, &m) }

    static func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

    func testEHLOAdvertisesSTARTTLSBeforeAndAUTHAfterTLS() {
        var m = machine()
        XCTAssertEqual(run(["EHLO c"], &m), ["250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n250 STARTTLS\r\n"])
        XCTAssertEqual(run(["STARTTLS"], &m), ["220 2.0.0 Ready to start TLS\r\n[tls]"])
        XCTAssertEqual(m.state, .greeting, "RFC 3207: the session starts over")
        XCTAssertTrue(m.tlsActive)
        XCTAssertEqual(run(["EHLO c"], &m), ["250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n250 AUTH PLAIN LOGIN\r\n"])
        XCTAssertEqual(run(["STARTTLS"], &m), ["503 5.5.1 Error: TLS already active\r\n"])
    }

    func testTable() {
        let plain = Self.b64("\0shop\0secret")
        let wrong = Self.b64("\0shop\0guess")
        // (tls active at start, plaintext auth allowed, lines, expected replies)
        let table: [(Bool, Bool, [String], [String])] = [
            // No relay without AUTH.
            (true, false, ["EHLO c", "MAIL FROM:<a@b.example>"],
             ["", "530 5.7.0 Authentication required\r\n[refused: relay attempt without authentication]"]),
            // AUTH before TLS is refused (R1), even with valid credentials.
            (false, false, ["EHLO c", "AUTH PLAIN \(plain)"],
             ["", "538 5.7.11 Encryption required for requested authentication mechanism\r\n[refused: AUTH before TLS]"]),
            // ...unless an operator allowed it.
            (false, true, ["EHLO c", "AUTH PLAIN \(plain)"], ["", "[auth shop:secret]235 2.7.0 Authentication successful\r\n"]),
            (true, false, ["EHLO c", "AUTH PLAIN \(plain)", "MAIL FROM:<a@b.example>"],
             ["", "[auth shop:secret]235 2.7.0 Authentication successful\r\n", "250 2.1.0 Ok\r\n"]),
            (true, false, ["EHLO c", "AUTH PLAIN \(wrong)", "MAIL FROM:<a@b.example>"],
             ["", "[auth shop:guess]535 5.7.8 Error: authentication failed\r\n",
              "530 5.7.0 Authentication required\r\n[refused: relay attempt without authentication]"]),
            (true, false, ["EHLO c", "AUTH PLAIN", plain], ["", "334 \r\n", "[auth shop:secret]235 2.7.0 Authentication successful\r\n"]),
            (true, false, ["EHLO c", "AUTH LOGIN", Self.b64("shop"), Self.b64("secret")],
             ["", "334 VXNlcm5hbWU6\r\n", "334 UGFzc3dvcmQ6\r\n", "[auth shop:secret]235 2.7.0 Authentication successful\r\n"]),
            (true, false, ["EHLO c", "AUTH LOGIN \(Self.b64("shop"))", Self.b64("secret")],
             ["", "334 UGFzc3dvcmQ6\r\n", "[auth shop:secret]235 2.7.0 Authentication successful\r\n"]),
            (true, false, ["EHLO c", "AUTH LOGIN", "*"], ["", "334 VXNlcm5hbWU6\r\n", "501 5.0.0 Authentication cancelled\r\n"]),
            (true, false, ["EHLO c", "AUTH PLAIN !!notbase64"], ["", "501 5.5.2 Error: invalid authentication response\r\n"]),
            (true, false, ["EHLO c", "AUTH PLAIN \(Self.b64("nonul"))"], ["", "501 5.5.2 Error: invalid authentication response\r\n"]),
            // authzid must be the user itself: no logging in as someone else.
            (true, false, ["EHLO c", "AUTH PLAIN \(Self.b64("other\0shop\0secret"))"], ["", "535 5.7.8 Error: authentication failed\r\n"]),
            (true, false, ["EHLO c", "AUTH CRAM-MD5"], ["", "504 5.5.4 Error: unsupported authentication mechanism\r\n"]),
            (true, false, ["AUTH PLAIN \(plain)"], ["503 5.5.1 Error: send HELO/EHLO first\r\n"]),
            (true, false, ["EHLO c", "AUTH PLAIN \(plain)", "AUTH PLAIN \(plain)"],
             ["", "[auth shop:secret]235 2.7.0 Authentication successful\r\n", "503 5.5.1 Error: already authenticated\r\n"]),
            // A mail transaction cannot straddle STARTTLS.
            (false, true, ["EHLO c", "AUTH PLAIN \(plain)", "MAIL FROM:<>", "STARTTLS"],
             ["", "[auth shop:secret]235 2.7.0 Authentication successful\r\n", "250 2.1.0 Ok\r\n", "503 5.5.1 Error: bad sequence of commands\r\n"]),
            (false, false, ["STARTTLS"], ["503 5.5.1 Error: send HELO/EHLO first\r\n"]),
            (false, false, ["EHLO c", "STARTTLS now"], ["", "501 5.5.4 Syntax error in parameters or arguments\r\n"]),
        ]
        for (index, (tlsActive, plaintext, lines, expected)) in table.enumerated() {
            var m = machine(plaintextAuth: plaintext, tlsActive: tlsActive)
            var got = run(lines, &m)
            if lines.first?.hasPrefix("EHLO") == true, expected.first == "" { got[0] = "" }
            XCTAssertEqual(got, expected, "row \(index): \(lines)")
        }
    }

    func testAuthenticationIsForgottenAfterSTARTTLS() {
        var m = machine(plaintextAuth: true)
        _ = run(["EHLO c", "AUTH PLAIN \(Self.b64("\0shop\0secret"))"], &m)
        XCTAssertEqual(m.authenticatedAs, "shop")
        _ = run(["STARTTLS"], &m)
        XCTAssertNil(m.authenticatedAs)
        XCTAssertNil(m.heloName)
    }

    func testSTARTTLSWithoutTLSConfigured() {
        var m = machine(tls: false)
        XCTAssertEqual(run(["EHLO c", "STARTTLS"], &m)[1], "454 4.7.0 TLS not available\r\n")
    }

    func testDuplicateRecipientIsKeptOnce() {
        var m = machine(tlsActive: true)
        _ = run(["EHLO c", "AUTH PLAIN \(Self.b64("\0shop\0secret"))", "MAIL FROM:<a@b.example>", "RCPT TO:<x@y.example>",
                 "RCPT TO:<x@y.example>", "RCPT TO:<z@y.example>"], &m)
        XCTAssertEqual(m.envelope?.recipients, ["x@y.example", "z@y.example"])
    }

    func testCommandLimitClosesTheConnection() {
        var m = Machine(configuration: .init(hostname: "mx.test", maxErrors: 100, maxCommands: 10))
        _ = m.handle(.connectionDecision(nil))
        let replies = run(Array(repeating: "NOOP", count: 11), &m)
        XCTAssertEqual(replies[9], "250 2.0.0 Ok\r\n")
        XCTAssertEqual(replies[10], "421 4.7.0 mx.test Error: too many commands\r\n[close]")
    }
}
