import XCTest
import NIOCore
import NIOPosix
import Logging
@testable import SMTPServer

/// Golden transcripts over real loopback: raw bytes in, exact reply bytes out.
final class SMTPServerTranscriptTests: XCTestCase {
    let greeting = "220 mx.test ESMTP\r\n"
    let bye = "221 2.0.0 Bye\r\n"

    func testPipelinedTransactionInOnePacket() async throws {
        try await withServer { _, port, delegate in
            let client = try await RawClient(port: port)
            try await client.send("EHLO c.example\r\nMAIL FROM:<s@x.example> SIZE=20\r\nRCPT TO:<a@b.example>\r\n"
                + "RCPT TO:<refuse@b.example>\r\nRCPT TO:<c@b.example>\r\nDATA\r\nSubject: t\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n")
            let transcript = try await client.waitForClose()
            XCTAssertEqual(transcript, greeting + ehloReply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                + "550 5.1.1 <refuse@b.example>: Recipient address rejected\r\n250 2.1.5 Ok\r\n"
                + "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 1\r\n" + bye)
            XCTAssertEqual(delegate.deliveries.count, 1)
            let delivery = try XCTUnwrap(delegate.deliveries.first)
            XCTAssertEqual(delivery.envelope, SMTPEnvelope(reversePath: "s@x.example", mailParameters: ["SIZE": "20"],
                                                           recipients: ["a@b.example", "c@b.example"]))
            XCTAssertEqual(String(buffer: delivery.message), "Subject: t\r\n\r\n.dot\r\nbody\r\n")
            XCTAssertEqual(delivery.session.heloName, "c.example")
            XCTAssertEqual(delivery.session.tls, false)
            XCTAssertNotNil(delivery.session.remoteAddress)
            let closed = await delegate.wait { $0.closedCount == 1 }
            XCTAssertTrue(closed)
        }
    }

    func testPipeliningOrderWithSlowDelegate() async throws {
        try await withServer(delegate: RecordingDelegate(rcptDelay: .milliseconds(50))) { _, port, delegate in
            let client = try await RawClient(port: port)
            try await client.send("HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nNOOP\r\nRCPT TO:<refuse@b.example>\r\nRSET\r\nQUIT\r\n")
            let transcript = try await client.waitForClose()
            XCTAssertEqual(transcript, greeting + "250 mx.test\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n"
                + "550 5.1.1 <refuse@b.example>: Recipient address rejected\r\n250 2.0.0 Ok\r\n" + bye)
            XCTAssertEqual(Array(delegate.calls.prefix(4)), ["open", "mail <> helo=c", "rcpt <a@b.example>", "rcpt <refuse@b.example>"])
        }
    }

    func testRsetMidTransactionAndDataBeforeRcpt() async throws {
        try await withServer { _, port, delegate in
            let client = try await RawClient(port: port)
            try await client.send("EHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<a@b.example>\r\nRSET\r\nDATA\r\n"
                + "MAIL FROM:<s@x.example>\r\nDATA\r\nQUIT\r\n")
            let transcript = try await client.waitForClose()
            XCTAssertEqual(transcript, greeting + ehloReply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n"
                + "503 5.5.1 Error: need RCPT command\r\n250 2.1.0 Ok\r\n503 5.5.1 Error: need RCPT command\r\n" + bye)
            XCTAssertTrue(delegate.deliveries.isEmpty)
        }
    }

    func testTenMegabyteLineIsRefusedWithBoundedMemory() async throws {
        try await withServer { server, port, _ in
            let client = try await RawClient(port: port)
            try await client.send("EHLO c\r\n")
            let chunk = [UInt8](repeating: UInt8(ascii: "A"), count: 1 << 20)
            for _ in 0..<10 { try await client.send(chunk) }
            try await client.send("\r\nNOOP\r\nQUIT\r\n")
            let transcript = try await client.waitForClose(timeout: .seconds(30))
            XCTAssertEqual(transcript, greeting + ehloReply + "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n" + bye)
            // line limit + one socket read of slack; never the 10 MB line
            XCTAssertLessThan(server.stats.peakBufferedBytes, 2048 + 256 * 1024)
        }
    }

    func testNulBytesAndBareLineFeedInCommands() async throws {
        try await withServer { _, port, delegate in
            let client = try await RawClient(port: port)
            try await client.send(Array("HELO c\r\nNO\u{0}OP\r\nNOOP\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n".utf8)
                + [0x61, 0x00, 0x62, 0x0D, 0x0A] + Array(".\r\nQUIT\r\n".utf8))
            let transcript = try await client.waitForClose()
            XCTAssertEqual(transcript, greeting + "250 mx.test\r\n500 5.5.2 Error: invalid character in command\r\n"
                + "500 5.5.2 Error: bare <LF> received\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                + "250 2.0.0 Ok: queued as 1\r\n" + bye)
            XCTAssertEqual(delegate.deliveries.first.map { Array($0.message.readableBytesView) }, [0x61, 0x00, 0x62, 0x0D, 0x0A])
        }
    }

    func testOversizedMessageIs552AndSessionContinues() async throws {
        try await withServer { server, port, delegate in
            let client = try await RawClient(port: port)
            try await client.send("EHLO c\r\nMAIL FROM:<s@x.example> SIZE=2000000\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n")
            _ = await client.waitFor("354 ")
            let line = Array(String(repeating: "x", count: 998).utf8) + [0x0D, 0x0A]
            var chunk: [UInt8] = []
            for _ in 0..<100 { chunk += line }  // 100 KB
            for _ in 0..<15 { try await client.send(chunk) }  // 1.5 MB > 1 MiB
            try await client.send(".\r\nNOOP\r\nQUIT\r\n")
            let transcript = try await client.waitForClose(timeout: .seconds(30))
            XCTAssertEqual(transcript, greeting + ehloReply + "552 5.3.4 Error: message file too big\r\n250 2.1.0 Ok\r\n"
                + "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n552 5.3.4 Error: message file too big\r\n250 2.0.0 Ok\r\n" + bye)
            XCTAssertTrue(delegate.deliveries.isEmpty)
            XCTAssertLessThan(server.stats.peakBufferedBytes, (1 << 20) + 256 * 1024)
        }
    }

    func testMaxRecipients() async throws {
        try await withServer { _, port, delegate in
            let client = try await RawClient(port: port)
            var input = "EHLO c\r\nMAIL FROM:<s@x.example>\r\n"
            for i in 1...101 { input += "RCPT TO:<r\(i)@b.example>\r\n" }
            input += "DATA\r\nhi\r\n.\r\nQUIT\r\n"
            try await client.send(input)
            let transcript = try await client.waitForClose()
            let expected = greeting + ehloReply + "250 2.1.0 Ok\r\n" + String(repeating: "250 2.1.5 Ok\r\n", count: 100)
                + "452 4.5.3 Error: too many recipients\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 1\r\n" + bye
            XCTAssertEqual(transcript, expected)
            XCTAssertEqual(delegate.deliveries.first?.envelope.recipients.count, 100)
            XCTAssertEqual(delegate.deliveries.first?.envelope.recipients.last, "r100@b.example")
        }
    }

    func testUnterminatedDataThenCloseDeliversNothing() async throws {
        try await withServer { _, port, delegate in
            let client = try await RawClient(port: port)
            try await client.send("EHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<a@b.example>\r\nDATA\r\nSubject: x\r\n\r\nhalf a message\r\n")
            _ = await client.waitFor("354 ")
            await client.close()
            let closed = await delegate.wait { $0.closedCount == 1 }
            XCTAssertTrue(closed)
            XCTAssertTrue(delegate.deliveries.isEmpty)
            XCTAssertFalse(delegate.calls.contains { $0.hasPrefix("data") })
        }
    }

    /// SMTP smuggling: none of these sequences ends DATA; the injected commands are never
    /// executed and the message is refused after the real end.
    func testSmugglingVariantsAreRefusedNotSplit() async throws {
        let variants = ["\n.\r\n", "\r.\r", "\n.\n", "\r\n.\n", "\r.\r\n", "\r\n.\r", "\n.\r"]
        try await withServer { _, port, delegate in
            for variant in variants {
                let client = try await RawClient(port: port)
                try await client.send("EHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n")
                _ = await client.waitFor("354 ")
                try await client.send("Subject: innocent\r\n\r\nhello" + variant
                    + "MAIL FROM:<admin@x.example>\r\nRCPT TO:<victim@b.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n")
                let transcript = try await client.waitForClose()
                XCTAssertEqual(transcript, greeting + ehloReply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                    + "554 5.5.2 Error: bare <CR> or <LF> in message data\r\n" + bye, variant.debugDescription)
            }
            XCTAssertTrue(delegate.deliveries.isEmpty)
            XCTAssertFalse(delegate.calls.contains { $0.contains("admin@") || $0.contains("victim@") })
        }
    }

    func testDripFedSessionMatchesCoalesced() async throws {
        let input = "EHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<a@b.example>\r\nDATA\r\nline 1\r\n..two\r\n.\r\nQUIT\r\n"
        try await withServer { _, port, delegate in
            let client = try await RawClient(port: port)
            for byte in input.utf8 { try await client.send([byte]) }
            let transcript = try await client.waitForClose()
            XCTAssertEqual(transcript, greeting + ehloReply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                + "250 2.0.0 Ok: queued as 1\r\n" + bye)
            XCTAssertEqual(delegate.deliveries.first.map { String(buffer: $0.message) }, "line 1\r\n.two\r\n")
        }
    }

    func testGreetingRefusedByDelegate() async throws {
        let busy = SMTPReply(code: 421, enhanced: "4.7.0", "mx.test Too many connections")
        try await withServer(delegate: RecordingDelegate(greeting: busy)) { _, port, delegate in
            let client = try await RawClient(port: port)
            try? await client.send("EHLO c\r\n")  // the server may already have closed
            let transcript = try await client.waitForClose()
            XCTAssertEqual(transcript, "421 4.7.0 mx.test Too many connections\r\n")
            let closed = await delegate.wait { $0.closedCount == 1 }
            XCTAssertTrue(closed)
        }
    }

    func testTooManyErrorsCloses() async throws {
        let config = SMTPServerConfiguration(hostname: "mx.test", maxErrors: 2, shutdownGracePeriod: .seconds(2))
        try await withServer(config) { _, port, _ in
            let client = try await RawClient(port: port)
            try await client.send("FOO\r\nBAR\r\nNOOP\r\n")
            let transcript = try await client.waitForClose()
            XCTAssertEqual(transcript, greeting + "500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n"
                + "421 4.7.0 mx.test Error: too many errors\r\n")
        }
    }

    func testCommandAndDataTimeouts() async throws {
        let config = SMTPServerConfiguration(hostname: "mx.test", commandTimeout: .milliseconds(300),
                                             dataTimeout: .milliseconds(300), shutdownGracePeriod: .seconds(2))
        try await withServer(config) { _, port, delegate in
            let idle = try await RawClient(port: port)
            let start = ContinuousClock.now
            let transcript = try await idle.waitForClose(timeout: .seconds(10))
            XCTAssertEqual(transcript, greeting + "421 4.4.2 mx.test Error: timeout exceeded\r\n")
            XCTAssertLessThan(ContinuousClock.now - start, .seconds(5))

            let inData = try await RawClient(port: port)
            try await inData.send("HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\npartial\r\n")
            let dataTranscript = try await inData.waitForClose(timeout: .seconds(10))
            XCTAssertEqual(dataTranscript, greeting + "250 mx.test\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                + "354 End data with <CR><LF>.<CR><LF>\r\n421 4.4.2 mx.test Error: timeout exceeded\r\n")
            XCTAssertTrue(delegate.deliveries.isEmpty)
        }
    }

    func testShutdownClosesIdleSessionsAndStopsAccepting() async throws {
        var logger = Logger(label: "smtp-test")
        logger.logLevel = .warning
        let delegate = RecordingDelegate()
        let server = try await SMTPServer.start(
            host: "127.0.0.1", port: 0,
            configuration: SMTPServerConfiguration(hostname: "mx.test", shutdownGracePeriod: .seconds(5)),
            delegate: delegate, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        let port = server.localAddress!.port!
        let idle = try await RawClient(port: port)
        _ = await idle.waitFor("220 ")
        let busy = try await RawClient(port: port)
        try await busy.send("HELO c\r\nMAIL FROM:<s@x.example>\r\n")
        _ = await busy.waitFor("250 2.1.0")
        let closing = Task { try await server.close() }
        let idleTranscript = try await idle.waitForClose(timeout: .seconds(5))
        XCTAssertEqual(idleTranscript, greeting + "421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n")
        // The open transaction may finish; its session closes when it becomes idle.
        try await busy.send("RCPT TO:<a@b.example>\r\nDATA\r\nhi\r\n.\r\n")
        let busyTranscript = try await busy.waitForClose(timeout: .seconds(5))
        XCTAssertTrue(busyTranscript.hasSuffix("250 2.0.0 Ok: queued as 1\r\n421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"),
                      busyTranscript)
        try await closing.value
        do {
            let late = try await RawClient(port: port)
            await late.close()
            XCTFail("server still accepts after close")
        } catch {}
    }
}

final class SMTPServerGarbageTests: XCTestCase {
    /// Random bytes on many connections: the server answers and stays up.
    func testGarbageDoesNotHurtTheServer() async throws {
        try await withServer { _, port, delegate in
            var generator = SystemRandomNumberGenerator()
            for round in 0..<20 {
                let client = try await RawClient(port: port)
                var bytes = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if round % 2 == 0 { bytes = Array("EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n".utf8) + bytes }
                // The server may already have closed (too many errors): writes may fail.
                try? await client.send(bytes)
                try? await client.send("\r\n.\r\nQUIT\r\n")
                _ = try await client.waitForClose(timeout: .seconds(10))
            }
            let client = try await RawClient(port: port)
            try await client.send("NOOP\r\nQUIT\r\n")
            let transcript = try await client.waitForClose()
            XCTAssertEqual(transcript, "220 mx.test ESMTP\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n")
            let allClosed = await delegate.wait { $0.closedCount == 21 }
            XCTAssertTrue(allClosed)
        }
    }
}
