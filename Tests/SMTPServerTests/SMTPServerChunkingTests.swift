import XCTest
import NIOCore
import NIOPosix
import Logging
@testable import SMTPServer

/// CHUNKING / BDAT (RFC 3030) over real loopback, pipelined as clients send it.
final class SMTPServerChunkingTests: XCTestCase {
    let greeting = "220 mx.test ESMTP\r\n"
    let bye = "221 2.0.0 Bye\r\n"

    func bdat(_ chunk: String, last: Bool = false) -> String {
        "BDAT \(chunk.utf8.count)\(last ? " LAST" : "")\r\n" + chunk
    }

    func testPipelinedChunksMakeOneMessageAndTheirOctetsAreNeverCommands() async throws {
        try await withServer { _, port, delegate in
            let client = try await RawClient(port: port)
            let first = "Subject: t\r\nQUIT\r\n", second = "\r\n.\r\nRSET\r\nbody\r\n"
            try await client.send("EHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<a@b.example>\r\n"
                + bdat(first) + bdat(second) + "BDAT 0 LAST\r\nQUIT\r\n")
            let transcript = try await client.waitForClose()
            XCTAssertEqual(transcript, greeting + ehloReply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                + "250 2.0.0 \(first.utf8.count) octets received\r\n250 2.0.0 \(second.utf8.count) octets received\r\n"
                + "250 2.0.0 Ok: queued as 1\r\n" + bye)
            XCTAssertEqual(delegate.deliveries.count, 1)
            XCTAssertEqual(delegate.deliveries.first.map { String(buffer: $0.message) }, first + second)
        }
    }

    func testRefusedChunksAreReadAndDroppedAndTheSessionGoesOn() async throws {
        try await withServer { _, port, delegate in
            let client = try await RawClient(port: port)
            // BDAT before RCPT: 503, and its chunk ("RCPT TO:<evil@b.example>") is discarded, not run.
            try await client.send("EHLO c\r\nMAIL FROM:<s@x.example>\r\n" + bdat("RCPT TO:<evil@b.example>\r\n", last: true)
                + "RCPT TO:<a@b.example>\r\n" + bdat("x\r\n") + "DATA\r\nRSET\r\n"
                + "MAIL FROM:<s@x.example>\r\nRCPT TO:<a@b.example>\r\n" + bdat("bare\nlf\r\n", last: true)
                + "MAIL FROM:<s@x.example>\r\nRCPT TO:<a@b.example>\r\n" + bdat("no line end", last: true) + "QUIT\r\n")
            let transcript = try await client.waitForClose()
            XCTAssertEqual(transcript, greeting + ehloReply + "250 2.1.0 Ok\r\n"
                + "503 5.5.1 Error: need RCPT command\r\n250 2.1.5 Ok\r\n250 2.0.0 3 octets received\r\n"
                + "503 5.5.1 Error: bad sequence of commands\r\n250 2.0.0 Ok\r\n"
                + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n554 5.5.2 Error: bare <CR> or <LF> in message data\r\n"
                + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued as 1\r\n" + bye)
            XCTAssertEqual(delegate.deliveries.count, 1)
            XCTAssertEqual(delegate.deliveries.first?.envelope.recipients, ["a@b.example"])
            XCTAssertEqual(delegate.deliveries.first.map { String(buffer: $0.message) }, "no line end\r\n")
        }
    }

    func testTooBigIsRefusedAtLastAndAMalformedBDATCloses() async throws {
        try await withServer { server, port, delegate in
            let client = try await RawClient(port: port)
            try await client.send("EHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<a@b.example>\r\n")
            let piece = String(repeating: "0123456789abcde\r\n", count: 1 << 14)  // 278,528 octets
            for _ in 0..<4 { try await client.send(bdat(piece)) }
            try await client.send("BDAT 1 LAST\r\nx" + "NOOP\r\nBDAT 12x\r\nNOOP\r\n")
            let transcript = try await client.waitForClose(timeout: .seconds(30))
            let received = String(repeating: "250 2.0.0 278528 octets received\r\n", count: 4)
            XCTAssertEqual(transcript, greeting + ehloReply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n" + received
                + "552 5.3.4 Error: message file too big\r\n250 2.0.0 Ok\r\n"
                + "501 5.5.4 Syntax: BDAT <size> [LAST]; closing, the chunk cannot be skipped\r\n")
            XCTAssertTrue(delegate.deliveries.isEmpty)
            XCTAssertLessThan(server.stats.peakBufferedBytes, (1 << 20) + 512 * 1024, "never more than the limit and a read")
        }
    }
}
