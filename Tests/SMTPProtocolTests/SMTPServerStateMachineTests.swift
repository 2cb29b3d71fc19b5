import XCTest
import NIOCore
@testable import SMTPProtocol

final class SMTPServerStateMachineTests: XCTestCase {
    typealias Machine = SMTPServerStateMachine
    let config = Machine.Configuration(hostname: "mx.test", maxMessageSize: 1000, maxRecipients: 2, maxErrors: 3)

    /// Feeds command lines; answers every ask with `nil` (accept) / 250 for data.
    /// Returns the wire replies, one string per input.
    private func run(_ lines: [String], machine: inout Machine) -> [String] {
        var out: [String] = []
        for line in lines {
            var wire = ""
            var queue = machine.handle(.line(.line(Array(line.utf8))))
            while !queue.isEmpty {
                let action = queue.removeFirst()
                switch action {
                case .send(let reply): wire += reply.wireString
                case .askMailFrom: queue += machine.handle(.mailDecision(nil))
                case .askRcptTo(_, let path, _):
                    queue += machine.handle(.rcptDecision(path.hasPrefix("bad") ? SMTPReply(code: 550, enhanced: "5.1.1", "no") : nil))
                case .askData: queue += machine.handle(.dataDecision(SMTPReply(code: 250, enhanced: "2.0.0", "queued")))
                case .startData: wire += "[data]"
                case .startTLS:
                    wire += "[tls]"
                    queue += machine.handle(.tlsStarted)
                case .askAuth(let user, let password):
                    wire += "[auth \(user):\(password)]"
                    queue += machine.handle(.authDecision(password == "secret" ? nil : SMTPReply(.authFailed)))
                case .refused: break
                case .close: wire += "[close]"
                case .readChunk(let size, let last, _): wire += "[chunk \(size)\(last ? " last" : "")]"
                case .discardChunk(let size): wire += "[discard \(size)]"
                }
            }
            out.append(wire)
        }
        return out
    }

    private func started() -> Machine {
        var m = Machine(configuration: config)
        XCTAssertEqual(m.handle(.connectionDecision(nil)), [.send(SMTPReply(code: 220, "mx.test ESMTP"))])
        return m
    }

    func testTable() {
        // (commands, expected replies, final state)
        let table: [([String], [String], Machine.State)] = [
            (["NOOP"], ["250 2.0.0 Ok\r\n"], .greeting),
            (["MAIL FROM:<a@b.example>"], ["503 5.5.1 Error: send HELO/EHLO first\r\n"], .greeting),
            (["HELO c", "RCPT TO:<a@b.example>"], ["250 mx.test\r\n", "503 5.5.1 Error: need MAIL command\r\n"], .afterHelo),
            (["HELO c", "DATA"], ["250 mx.test\r\n", "503 5.5.1 Error: need RCPT command\r\n"], .afterHelo),
            (["HELO c", "MAIL FROM:<>", "DATA"], ["250 mx.test\r\n", "250 2.1.0 Ok\r\n", "503 5.5.1 Error: need RCPT command\r\n"], .inMail),
            (["HELO c", "MAIL FROM:<>", "MAIL FROM:<>"], ["250 mx.test\r\n", "250 2.1.0 Ok\r\n", "503 5.5.1 Error: nested MAIL command\r\n"], .inMail),
            (["HELO c", "MAIL FROM:<> SIZE=1001"], ["250 mx.test\r\n", "552 5.3.4 Error: message file too big\r\n"], .afterHelo),
            (["HELO c", "MAIL FROM:<> SIZE=1000 BODY=8BITMIME"], ["250 mx.test\r\n", "250 2.1.0 Ok\r\n"], .inMail),
            (["HELO c", "MAIL FROM:<> SIZE=x"], ["250 mx.test\r\n", "501 5.5.4 Syntax error in parameters or arguments\r\n"], .afterHelo),
            (["HELO c", "MAIL FROM:<> BODY=BINARYMIME"], ["250 mx.test\r\n", "501 5.5.4 Syntax error in parameters or arguments\r\n"], .afterHelo),
            (["HELO c", "MAIL FROM:<> MT-PRIORITY=3"], ["250 mx.test\r\n", "555 5.5.4 Unsupported option\r\n"], .afterHelo),
            (["HELO c", "MAIL FROM:<jörg@x.example>"], ["250 mx.test\r\n", "553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n"], .afterHelo),
            (["HELO c", "MAIL FROM:<jörg@x.example> SMTPUTF8"], ["250 mx.test\r\n", "250 2.1.0 Ok\r\n"], .inMail),
            (["HELO c", "MAIL FROM:<>", "RCPT TO:<a@b.example> XRCPTFORWARD=1"], ["250 mx.test\r\n", "250 2.1.0 Ok\r\n", "555 5.5.4 Unsupported option\r\n"], .inMail),
            (["HELO c", "MAIL FROM:<>", "RCPT TO:<bad@b.example>", "DATA"],
             ["250 mx.test\r\n", "250 2.1.0 Ok\r\n", "550 5.1.1 no\r\n", "503 5.5.1 Error: need RCPT command\r\n"], .inMail),
            (["HELO c", "MAIL FROM:<>", "RCPT TO:<a@b.example>", "RCPT TO:<c@b.example>", "RCPT TO:<d@b.example>"],
             ["250 mx.test\r\n", "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n", "250 2.1.5 Ok\r\n", "452 4.5.3 Error: too many recipients\r\n"], .inRcpt),
            (["HELO c", "MAIL FROM:<>", "RCPT TO:<a@b.example>", "RSET", "RCPT TO:<a@b.example>"],
             ["250 mx.test\r\n", "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n", "250 2.0.0 Ok\r\n", "503 5.5.1 Error: need MAIL command\r\n"], .afterHelo),
            (["HELO c", "MAIL FROM:<>", "RCPT TO:<a@b.example>", "DATA"],
             ["250 mx.test\r\n", "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n[data]"], .inData),
            (["HELO c", "MAIL FROM:<>", "EHLO again"], ["250 mx.test\r\n", "250 2.1.0 Ok\r\n",
              "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 DSN\r\n"], .afterHelo),
            (["VRFY x", "HELP", "QUIT", "NOOP"], ["252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n",
              "214 2.0.0 See https://www.rfc-editor.org/rfc/rfc5321\r\n", "221 2.0.0 Bye\r\n[close]", ""], .quit),
            (["FOO", "BAR", "BAZ", "NOOP"], ["500 5.5.2 Error: command not recognized\r\n", "500 5.5.2 Error: command not recognized\r\n",
              "500 5.5.2 Error: command not recognized\r\n421 4.7.0 mx.test Error: too many errors\r\n[close]", ""], .quit),
        ]
        for (index, (lines, expected, finalState)) in table.enumerated() {
            var m = started()
            XCTAssertEqual(run(lines, machine: &m), expected, "row \(index): \(lines)")
            XCTAssertEqual(m.state, finalState, "row \(index)")
        }
    }

    func testDataOutcomes() {
        let mail = ["EHLO c", "MAIL FROM:<s@x.example> SIZE=10", "RCPT TO:<a@b.example>", "DATA"]
        var m = started()
        _ = run(mail, machine: &m)
        XCTAssertEqual(m.state, .inData)
        XCTAssertEqual(m.handle(.line(.line(Array("NOOP".utf8)))), [.send(SMTPReply(.storageFailure)), .close],
                       "a command fed during DATA is a caller bug: fail safe")

        m = started(); _ = run(mail, machine: &m)
        let body = ByteBuffer(string: "hi\r\n")
        let expectedEnvelope = SMTPEnvelope(reversePath: "s@x.example", mailParameters: ["SIZE": "10"], recipients: ["a@b.example"])
        XCTAssertEqual(m.handle(.dataComplete(.message(body))), [.askData(envelope: expectedEnvelope, message: body)])
        XCTAssertTrue(m.isAwaitingDecision)
        let queued = SMTPReply(code: 250, enhanced: "2.0.0", "Ok: queued as X")
        XCTAssertEqual(m.handle(.dataDecision(queued)), [.send(queued)])
        XCTAssertEqual(m.state, .afterHelo)
        XCTAssertNil(m.envelope)

        m = started(); _ = run(mail, machine: &m)
        XCTAssertEqual(m.handle(.dataComplete(.tooBig(size: 5000))), [.send(SMTPReply(code: 552, enhanced: "5.3.4", "Error: message file too big"))])
        XCTAssertEqual(m.state, .afterHelo)

        m = started(); _ = run(mail, machine: &m)
        XCTAssertEqual(m.handle(.dataComplete(.bareLineEnding)), [.send(SMTPReply(code: 554, enhanced: "5.5.2", "Error: bare <CR> or <LF> in message data"))])
        XCTAssertEqual(m.state, .afterHelo)
    }

    func testLineEventsAndConnectionDecisions() {
        var m = started()
        XCTAssertEqual(m.handle(.line(.tooLong)), [.send(SMTPReply(code: 500, enhanced: "5.5.2", "Error: line too long"))])
        XCTAssertEqual(m.handle(.line(.bareLineFeed)), [.send(SMTPReply(code: 500, enhanced: "5.5.2", "Error: bare <LF> received"))])
        XCTAssertEqual(m.errorCount, 2)
        XCTAssertEqual(m.handle(.timeout), [.send(SMTPReply(code: 421, enhanced: "4.4.2", "mx.test Error: timeout exceeded")), .close])

        var refused = Machine(configuration: config)
        XCTAssertTrue(refused.isAwaitingDecision)
        let busy = SMTPReply(code: 421, enhanced: "4.7.0", "too many connections")
        XCTAssertEqual(refused.handle(.connectionDecision(busy)), [.send(busy), .close])
        XCTAssertEqual(refused.state, .quit)
    }

    func testShutdownWaitsForOpenTransaction() {
        var m = started()
        _ = run(["EHLO c", "MAIL FROM:<>"], machine: &m)
        XCTAssertEqual(m.handle(.shutdown), [])
        XCTAssertEqual(m.handle(.line(.line(Array("RSET".utf8)))),
                       [.send(SMTPReply(.ok)), .send(SMTPReply(.shuttingDown, hostname: "mx.test")), .close])
    }

    func testDelegateRefusalsDoNotCountAsErrors() {
        var m = started()
        _ = run(["HELO c", "MAIL FROM:<>", "RCPT TO:<bad1@x.example>", "RCPT TO:<bad2@x.example>", "RCPT TO:<bad3@x.example>", "RCPT TO:<bad4@x.example>"], machine: &m)
        XCTAssertEqual(m.errorCount, 0)
        XCTAssertEqual(m.state, .inMail)
    }
}
