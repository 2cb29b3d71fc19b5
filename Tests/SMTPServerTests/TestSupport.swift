import XCTest
import NIOCore
import NIOPosix
import NIOConcurrencyHelpers
import Logging
@testable import SMTPServer

/// Records every delegate call; policies are configurable for fault injection.
final class RecordingDelegate: SMTPServerDelegate {
    struct Delivery: Sendable { var envelope: SMTPEnvelope; var message: ByteBuffer; var session: SMTPSessionInfo }
    let greeting: SMTPReply?
    let rcptDelay: TimeAmount
    private let box = NIOLockedValueBox<(calls: [String], deliveries: [Delivery], closed: Int)>(([], [], 0))

    init(greeting: SMTPReply? = nil, rcptDelay: TimeAmount = .zero) {
        self.greeting = greeting
        self.rcptDelay = rcptDelay
    }

    var calls: [String] { box.withLockedValue { $0.calls } }
    var deliveries: [Delivery] { box.withLockedValue { $0.deliveries } }
    var closedCount: Int { box.withLockedValue { $0.closed } }

    func connectionOpened(_ session: SMTPSessionInfo) async -> SMTPReply? {
        box.withLockedValue { $0.calls.append("open") }
        return greeting
    }

    func mailFrom(_ session: SMTPSessionInfo, reversePath: String, parameters: [String: String]) async -> SMTPReply? {
        box.withLockedValue { $0.calls.append("mail <\(reversePath)> helo=\(session.heloName ?? "-")") }
        if reversePath.hasPrefix("refuse") { return SMTPReply(code: 550, enhanced: "5.7.1", "Sender Domain must resolve") }
        return nil
    }

    func rcptTo(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, forwardPath: String, parameters: [String: String]) async -> SMTPReply? {
        if rcptDelay > .zero { try? await Task.sleep(nanoseconds: UInt64(rcptDelay.nanoseconds)) }
        box.withLockedValue { $0.calls.append("rcpt <\(forwardPath)>") }
        if forwardPath.hasPrefix("refuse") {
            return SMTPReply(code: 550, enhanced: "5.1.1", "<\(forwardPath)>: Recipient address rejected")
        }
        return nil
    }

    func dataReceived(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, message: ByteBuffer) async -> SMTPReply {
        let n = box.withLockedValue { state -> Int in
            state.calls.append("data \(message.readableBytes)")
            state.deliveries.append(Delivery(envelope: envelope, message: message, session: session))
            return state.deliveries.count
        }
        return SMTPReply(code: 250, enhanced: "2.0.0", "Ok: queued as \(n)")
    }

    func connectionClosed(_ session: SMTPSessionInfo) async {
        box.withLockedValue { $0.closed += 1; $0.calls.append("closed") }
    }

    /// Waits (bounded) until `condition` holds.
    func wait(timeout: Duration = .seconds(5), until condition: (RecordingDelegate) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition(self) { return true }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        return condition(self)
    }
}

/// A raw TCP client on loopback that records every byte received.
final class RawClient: Sendable {
    let channel: any Channel
    private let received: NIOLockedValueBox<[UInt8]>

    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let received: NIOLockedValueBox<[UInt8]>
        init(_ received: NIOLockedValueBox<[UInt8]>) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            received.withLockedValue { $0 += buffer.readableBytesView }
        }
    }

    init(port: Int) async throws {
        let received = NIOLockedValueBox<[UInt8]>([])
        self.received = received
        channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(received))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
    }

    var text: String { String(decoding: received.withLockedValue { $0 }, as: UTF8.self) }

    func send(_ string: String) async throws { try await send(Array(string.utf8)) }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    /// Waits until the server closed the connection (bounded); returns everything received.
    func waitForClose(timeout: TimeAmount = .seconds(10)) async throws -> String {
        let channel = self.channel
        let forced = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        try? await channel.closeFuture.get()
        forced.cancel()
        return text
    }

    /// Waits until the received text contains `needle` (bounded).
    func waitFor(_ needle: String, timeout: Duration = .seconds(10)) async -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if text.contains(needle) { return text }
            try? await Task.sleep(nanoseconds: 5_000_000)
        }
        return text
    }

    var isActive: Bool { channel.isActive }

    func close() async { try? await channel.close() }
}

/// Runs `body` with a started server on 127.0.0.1 (kernel-chosen port); always closes it.
func withServer(
    _ configuration: SMTPServerConfiguration = SMTPServerConfiguration(hostname: "mx.test", maxMessageSize: 1 << 20, shutdownGracePeriod: .seconds(2)),
    delegate: RecordingDelegate = RecordingDelegate(),
    _ body: (SMTPServer, Int, RecordingDelegate) async throws -> Void
) async throws {
    var logger = Logger(label: "smtp-test")
    logger.logLevel = .warning
    let server = try await SMTPServer.start(host: "127.0.0.1", port: 0, configuration: configuration,
                                            delegate: delegate, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
    do {
        try await body(server, server.localAddress!.port!, delegate)
    } catch {
        try? await server.close()
        throw error
    }
    try await server.close()
}

let ehloReply = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1048576\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 DSN\r\n"
