import XCTest
import Foundation
import NIOCore
import NIOPosix
import NIOConcurrencyHelpers
import Logging
@testable import SMTPClient
import SMTPServer

private func testLogger() -> Logger {
    var logger = Logger(label: "smtp-client-test")
    logger.logLevel = .warning
    return logger
}

private let clientConfig = SMTPClientConfiguration(heloName: "egress.test", connectTimeout: .seconds(5),
                                                   greetingTimeout: .seconds(10), commandTimeout: .seconds(10),
                                                   dataTimeout: .seconds(10))

/// Server-side delegate for the loopback tests.
final class SinkDelegate: SMTPServerDelegate {
    let greeting: SMTPReply?
    let dataReply: SMTPReply
    let box = NIOLockedValueBox<[(SMTPEnvelope, ByteBuffer, [String: String])]>([])
    init(greeting: SMTPReply? = nil, dataReply: SMTPReply = SMTPReply(code: 250, enhanced: "2.0.0", "Ok: queued")) {
        self.greeting = greeting
        self.dataReply = dataReply
    }
    func connectionOpened(_ session: SMTPSessionInfo) async -> SMTPReply? { greeting }
    func mailFrom(_ session: SMTPSessionInfo, reversePath: String, parameters: [String: String]) async -> SMTPReply? {
        reversePath.hasPrefix("refuse") ? SMTPReply(code: 451, enhanced: "4.7.1", "Ratelimit reached") : nil
    }
    func rcptTo(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, forwardPath: String, parameters: [String: String]) async -> SMTPReply? {
        forwardPath.hasPrefix("refuse") ? SMTPReply(code: 550, enhanced: "5.1.1", "no such user") : nil
    }
    func dataReceived(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, message: ByteBuffer) async -> SMTPReply {
        box.withLockedValue { $0.append((envelope, message, [:])) }
        return dataReply
    }
    func connectionClosed(_ session: SMTPSessionInfo) async {}
}

private func withSMTPServer(_ delegate: SinkDelegate, maxMessageSize: Int = 1 << 20,
                            _ body: (Int) async throws -> Void) async throws {
    let server = try await SMTPServer.start(
        host: "127.0.0.1", port: 0,
        configuration: SMTPServerConfiguration(hostname: "mx.test", maxMessageSize: maxMessageSize, shutdownGracePeriod: .seconds(2)),
        delegate: delegate, group: MultiThreadedEventLoopGroup.singleton, logger: testLogger())
    do { try await body(server.localAddress!.port!) } catch {
        try? await server.close()
        throw error
    }
    try await server.close()
}

final class SMTPClientLoopbackTests: XCTestCase {
    func testEncodeData() {
        let table: [(String, String)] = [
            ("a\r\nb\r\n", "a\r\nb\r\n.\r\n"),
            ("a\nb", "a\r\nb\r\n.\r\n"),
            (".x\r\n..y\r\n.\r\n", "..x\r\n...y\r\n..\r\n.\r\n"),
            ("a\rb\r", "a\r\nb\r\n.\r\n"),
            ("", ".\r\n"),
            ("\n.\n", "\r\n..\r\n.\r\n"),
        ]
        for (input, expected) in table {
            XCTAssertEqual(String(buffer: SMTPClient.encodeData(ByteBuffer(string: input))), expected, input.debugDescription)
        }
    }

    /// The run-copying encoder against the rule written out byte by byte, on random input made
    /// mostly of the bytes that matter (CR, LF, dots) so every combination of them comes up.
    func testEncodeDataMatchesTheByteByByteRule() {
        func reference(_ input: [UInt8]) -> [UInt8] {
            var out: [UInt8] = [], atLineStart = true, pendingCR = false
            for byte in input {
                if pendingCR {
                    pendingCR = false
                    out += [13, 10]
                    atLineStart = true
                    if byte == 10 { continue }
                }
                if byte == 13 { pendingCR = true; continue }
                if byte == 10 { out += [13, 10]; atLineStart = true; continue }
                if atLineStart, byte == 46 { out.append(46) }
                out.append(byte)
                atLineStart = false
            }
            if pendingCR { out += [13, 10]; atLineStart = true }
            if !atLineStart { out += [13, 10] }
            return out + Array(".\r\n".utf8)
        }
        let alphabet: [UInt8] = [13, 10, 46, 46, 65, 0x80, 32]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            let input = (0..<Int.random(in: 0...40, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            let ours = SMTPClient.encodeData(ByteBuffer(bytes: input))
            XCTAssertEqual(Array(ours.readableBytesView), reference(input), "\(input)")
        }
    }

    func testDeliveryToOwnServerIsByteIdentical() async throws {
        let delegate = SinkDelegate()
        let body = "From: a@x.example\r\nSubject: dots\r\n\r\n.one dot\r\n..two dots\r\n.\r\n..\r\n\u{00E4}8bit\r\n\r\nend\r\n"
        try await withSMTPServer(delegate) { port in
            let result = await SMTPClient.deliver(
                to: "127.0.0.1", port: port, reversePath: "sender@x.example",
                recipients: ["a@b.example", "refuse@b.example", "c@b.example"],
                message: ByteBuffer(string: body), configuration: clientConfig,
                group: MultiThreadedEventLoopGroup.singleton, logger: testLogger())
            XCTAssertNil(result.sessionFailure)
            XCTAssertEqual(result.recipients.map(\.recipient), ["a@b.example", "refuse@b.example", "c@b.example"])
            XCTAssertEqual(result.recipients.map(\.reply.code), [250, 550, 250])
            XCTAssertEqual(result.recipients[0].reply, SMTPReply(code: 250, enhanced: "2.0.0", "Ok: queued"))
            XCTAssertEqual(result.recipients[1].reply, SMTPReply(code: 550, enhanced: "5.1.1", "no such user"))
            XCTAssertTrue(result.recipients[1].isPermanentFailure)
            XCTAssertEqual(result.delivered, ["a@b.example", "c@b.example"])
            XCTAssertTrue(result.extensions.contains("PIPELINING"))
            let received = delegate.box.withLockedValue { $0 }
            XCTAssertEqual(received.count, 1)
            XCTAssertEqual(received.first.map { Array($0.1.readableBytesView) }, Array(body.utf8))
            XCTAssertEqual(received.first?.0.recipients, ["a@b.example", "c@b.example"])
            XCTAssertEqual(received.first?.0.mailParameters, ["SIZE": "\(body.utf8.count)", "BODY": "8BITMIME"])
        }
    }

    func testMailRefusalAppliesToAllAndTooBigIsPermanent() async throws {
        let delegate = SinkDelegate()
        try await withSMTPServer(delegate, maxMessageSize: 1000) { port in
            let refused = await SMTPClient.deliver(
                to: "127.0.0.1", port: port, reversePath: "refuse@x.example", recipients: ["a@b.example", "b@b.example"],
                message: ByteBuffer(string: "hi\r\n"), configuration: clientConfig,
                group: MultiThreadedEventLoopGroup.singleton, logger: testLogger())
            // A refused MAIL ends the transaction, not the session (RSET follows; the connection stays usable).
            XCTAssertNil(refused.sessionFailure)
            XCTAssertTrue(refused.recipients.allSatisfy {
                $0.reply == SMTPReply(code: 451, enhanced: "4.7.1", "Ratelimit reached")
            })

            let big = await SMTPClient.deliver(
                to: "127.0.0.1", port: port, reversePath: "s@x.example", recipients: ["a@b.example"],
                message: ByteBuffer(string: String(repeating: "x", count: 2000)), configuration: clientConfig,
                group: MultiThreadedEventLoopGroup.singleton, logger: testLogger())
            XCTAssertEqual(big.recipients.first?.reply.code, 552, "SIZE is checked at MAIL")
            XCTAssertTrue(big.recipients.first?.isPermanentFailure ?? false)
        }
    }

    func test421GreetingIsTransientForAll() async throws {
        let delegate = SinkDelegate(greeting: SMTPReply(code: 421, enhanced: "4.3.2", "mx.test busy"))
        try await withSMTPServer(delegate) { port in
            let result = await SMTPClient.deliver(
                to: "127.0.0.1", port: port, reversePath: "s@x.example", recipients: ["a@b.example", "b@b.example"],
                message: ByteBuffer(string: "hi\r\n"), configuration: clientConfig,
                group: MultiThreadedEventLoopGroup.singleton, logger: testLogger())
            XCTAssertEqual(result.sessionFailure?.code, 421)
            XCTAssertEqual(result.recipients.count, 2)
            XCTAssertTrue(result.recipients.allSatisfy { $0.isTransientFailure && $0.reply.code == 421 })
        }
    }

    func test5xxGreetingIsPermanentForAll() async throws {
        let delegate = SinkDelegate(greeting: SMTPReply(code: 554, enhanced: "5.7.1", "go away"))
        try await withSMTPServer(delegate) { port in
            let result = await SMTPClient.deliver(
                to: "127.0.0.1", port: port, reversePath: "s@x.example", recipients: ["a@b.example"],
                message: ByteBuffer(string: "hi\r\n"), configuration: clientConfig,
                group: MultiThreadedEventLoopGroup.singleton, logger: testLogger())
            XCTAssertEqual(result.recipients.first?.reply, SMTPReply(code: 554, enhanced: "5.7.1", "go away"))
            XCTAssertTrue(result.recipients.first?.isPermanentFailure ?? false)
        }
    }

    func testConnectionRefusedIsTransient() async throws {
        // A port that was just free: bind, note, close.
        let probe = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = probe.localAddress!.port!
        try await probe.close()
        let result = await SMTPClient.deliver(
            to: "127.0.0.1", port: port, reversePath: "s@x.example", recipients: ["a@b.example", "b@b.example"],
            message: ByteBuffer(string: "hi\r\n"), configuration: clientConfig,
            group: MultiThreadedEventLoopGroup.singleton, logger: testLogger())
        XCTAssertEqual(result.sessionFailure?.code, 421)
        XCTAssertEqual(result.sessionFailure?.enhanced, "4.4.1")
        XCTAssertTrue(result.recipients.allSatisfy { $0.isTransientFailure && $0.reply.enhanced == "4.4.1" })
    }

    func testSilentServerTimesOutTransient() async throws {
        // A listener that accepts but never greets.
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        var config = clientConfig
        config.greetingTimeout = .milliseconds(300)
        let start = ContinuousClock.now
        let result = await SMTPClient.deliver(
            to: "127.0.0.1", port: silent.localAddress!.port!, reversePath: "s@x.example", recipients: ["a@b.example"],
            message: ByteBuffer(string: "hi\r\n"), configuration: config,
            group: MultiThreadedEventLoopGroup.singleton, logger: testLogger())
        try await silent.close()
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(5))
        XCTAssertEqual(result.recipients.first?.reply, SMTPReply(code: 451, enhanced: "4.4.2", "Timeout waiting for reply to greeting"))
        XCTAssertTrue(result.recipients.first?.isTransientFailure ?? false)
    }

    func testSourceAddressBinding() async throws {
        let delegate = SinkDelegate()
        try await withSMTPServer(delegate) { port in
            var config = clientConfig
            config.sourceAddress = "127.0.0.1"
            let result = await SMTPClient.deliver(
                to: "127.0.0.1", port: port, reversePath: "", recipients: ["a@b.example"],
                message: ByteBuffer(string: "bounce\r\n"), configuration: config,
                group: MultiThreadedEventLoopGroup.singleton, logger: testLogger())
            XCTAssertEqual(result.delivered, ["a@b.example"])
            XCTAssertEqual(delegate.box.withLockedValue { $0.first?.0.reversePath }, "")
        }
    }
}

/// SMTPClient against a real Python aiosmtpd server.
final class SMTPClientAiosmtpdTests: XCTestCase {
    private var process: Process?
    private var stdinPipe: Pipe?
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("aiosmtpd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let process, process.isRunning {
            try? stdinPipe?.fileHandleForWriting.close()
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    private func startSink() throws -> (port: Int, output: URL) {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("aiosmtpd_sink.py")
        let output = directory.appendingPathComponent("received.jsonl")
        let portFile = directory.appendingPathComponent("port")
        let process = Process()
        // The python3 on PATH (the one that has aiosmtpd); SMTP_TEST_PYTHON overrides.
        let python = ProcessInfo.processInfo.environment["SMTP_TEST_PYTHON"] ?? "python3"
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, script.path, output.path, portFile.path]
        let pipe = Pipe()
        process.standardInput = pipe
        process.standardOutput = FileHandle.nullDevice
        let errorLog = directory.appendingPathComponent("stderr.log")
        _ = FileManager.default.createFile(atPath: errorLog.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: errorLog)
        try process.run()
        self.process = process
        self.stdinPipe = pipe
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if let text = try? String(contentsOf: portFile, encoding: .utf8), let port = Int(text) { return (port, output) }
            guard process.isRunning else { break }
            usleep(50_000)
        }
        throw NSError(domain: "aiosmtpd", code: 1, userInfo: [NSLocalizedDescriptionKey: "aiosmtpd did not start: "
            + ((try? String(contentsOf: errorLog, encoding: .utf8)) ?? "")])
    }

    func testDeliveryToAiosmtpd() async throws {
        let (port, output) = try startSink()
        let body = "Subject: to python\r\n\r\n.dot line\r\nplain\nbare lf line\r\n"
        let result = await SMTPClient.deliver(
            to: "127.0.0.1", port: port, reversePath: "s@x.example",
            recipients: ["a@b.example", "refuse@b.example", "c@b.example"],
            message: ByteBuffer(string: body), configuration: clientConfig,
            group: MultiThreadedEventLoopGroup.singleton, logger: testLogger())
        XCTAssertNil(result.sessionFailure)
        XCTAssertEqual(result.recipients.map(\.reply.code), [250, 550, 250])
        XCTAssertEqual(result.recipients[1].reply.enhanced, "5.1.1")
        XCTAssertEqual(result.recipients[0].reply, SMTPReply(code: 250, enhanced: "2.0.0", "Message accepted"))
        let lines = try String(contentsOf: output, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 1)
        let record = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
        XCTAssertEqual(record["mail_from"] as? String, "s@x.example")
        XCTAssertEqual(record["rcpt_tos"] as? [String], ["a@b.example", "c@b.example"])
        XCTAssertEqual((record["mail_options"] as? [String])?.first, "SIZE=\(body.utf8.count)")
        let content = Data(base64Encoded: record["content"] as! String)!
        // Unstuffed by aiosmtpd; the bare LF was normalised to CRLF by the client.
        XCTAssertEqual(String(decoding: content, as: UTF8.self), "Subject: to python\r\n\r\n.dot line\r\nplain\r\nbare lf line\r\n")
    }
}
