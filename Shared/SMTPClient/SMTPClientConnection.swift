import NIOCore
import NIOPosix
import NIOConcurrencyHelpers
import NIOSSL
import NIOTLS
import SMTPProtocol

/// One client connection: writes commands and reads replies, each bounded by a timeout.
///
/// Owns the channel. `Sendable`; all handler state lives on the channel's event loop
/// (`NIOLoopBound`). Calls must not overlap (one outstanding command at a time).
struct SMTPClientConnection: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<SMTPClientHandler>

    static func connect(host: String, port: Int, configuration: SMTPClientConfiguration,
                        group: any EventLoopGroup) async throws -> SMTPClientConnection {
        let maxLine = configuration.maxReplyLineLength
        // The handler is kept from the initializer on: a server that greets with 5xx and closes at
        // once has removed it from the pipeline by the time `connect` returns, and its buffered
        // greeting must still be read.
        let created = NIOLockedValueBox<NIOLoopBound<SMTPClientHandler>?>(nil)
        var bootstrap = ClientBootstrap(group: group)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = SMTPClientHandler(maximumLineLength: maxLine, eventLoop: channel.eventLoop)
                    created.withLockedValue { $0 = NIOLoopBound(handler, eventLoop: channel.eventLoop) }
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        if let source = configuration.sourceAddress {
            bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: source, port: 0))
        }
        let channel = try await bootstrap.connect(host: host, port: port).get()
        guard let handler = created.withLockedValue({ $0 }) else {
            throw SMTPClientError(code: SMTPClientError.connectFailed, detail: "no handler")
        }
        return SMTPClientConnection(channel: channel, handler: handler)
    }

    func readReply(timeout: TimeAmount) async throws -> SMTPReply {
        try await send(nil, timeout: timeout)
    }

    /// Writes without waiting for a reply (pipelined commands, the message body).
    func write(_ bytes: ByteBuffer) async throws {
        try await channel.writeAndFlush(bytes).get()
    }

    /// Puts TLS in front of the SMTP handler (after the server's 220 to STARTTLS) and waits for
    /// the handshake. `observer` sees the server's first TLS bytes (the cipher suite).
    func startTLS(context: NIOSSLContext, serverHostname: String?, verify: @escaping NIOSSLCustomVerificationCallback,
                  observer: TLSServerHelloObserver, timeout: TimeAmount) async throws -> (TLSVersion?, NIOSSLCertificate?) {
        let handler = self.handler
        let channel = self.channel
        // The callback runs on this channel's event loop only (NIOSSL calls it there).
        nonisolated(unsafe) let verify = verify
        try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            let done = handler.value.expectHandshake(timeout: timeout)
            do {
                let tls = try NIOSSLClientHandler(context: context, serverHostname: serverHostname,
                                                  customVerificationCallback: verify)
                try channel.pipeline.syncOperations.addHandler(tls, position: .first)
                try channel.pipeline.syncOperations.addHandler(observer, position: .first)
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
            return done
        }.get()
        let version = try? await channel.nioSSL_tlsVersion().get()
        let certificate = try? await channel.nioSSL_peerCertificate().get()
        return (version ?? nil, certificate ?? nil)
    }

    func command(_ line: String, timeout: TimeAmount) async throws -> SMTPReply {
        var buffer = channel.allocator.buffer(capacity: line.utf8.count + 2)
        buffer.writeString(line)
        buffer.writeString("\r\n")
        return try await send(buffer, timeout: timeout)
    }

    func send(_ bytes: ByteBuffer?, timeout: TimeAmount) async throws -> SMTPReply {
        let handler = self.handler
        return try await channel.eventLoop.flatSubmit {
            handler.value.exchange(bytes, timeout: timeout)
        }.get()
    }

    func close() async {
        try? await channel.close()
    }
}

/// Reads reply lines (each ≤ maximumLineLength) into `SMTPReply`s and hands each to the
/// waiting exchange. Event-loop bound.
final class SMTPClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let maximumLineLength: Int
    private var lineBuffer: [UInt8] = []
    private var parser = SMTPReplyParser()
    private var replies: [SMTPReply] = []
    private var waiter: EventLoopPromise<SMTPReply>?
    private var failure: SMTPClientError?
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?

    private let eventLoop: any EventLoop
    private var handshakeWaiter: EventLoopPromise<Void>?

    init(maximumLineLength: Int, eventLoop: any EventLoop) {
        self.maximumLineLength = maximumLineLength
        self.eventLoop = eventLoop
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// Writes `bytes` (if any) and returns the next reply.
    func exchange(_ bytes: ByteBuffer?, timeout: TimeAmount) -> EventLoopFuture<SMTPReply> {
        if bytes == nil, !replies.isEmpty {
            return eventLoop.makeSucceededFuture(replies.removeFirst())
        }
        guard let context, failure == nil else {
            return eventLoop.makeFailedFuture(
                failure ?? SMTPClientError(code: SMTPClientError.connectionClosed, detail: "handler removed"))
        }
        guard waiter == nil else {
            return eventLoop.makeFailedFuture(SMTPClientError(code: SMTPClientError.protocolViolation, detail: "overlapping exchanges"))
        }
        if let bytes { context.writeAndFlush(wrapOutboundOut(bytes), promise: nil) }
        if !replies.isEmpty {
            return eventLoop.makeSucceededFuture(replies.removeFirst())
        }
        let promise = context.eventLoop.makePromise(of: SMTPReply.self)
        waiter = promise
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            self.fail(SMTPClientError(code: SMTPClientError.timeout, detail: "no reply within \(timeout)"))
            context.close(promise: nil)
        }
        return promise.futureResult
    }

    /// Resolves when the TLS handler reports a completed handshake; fails with the connection's error.
    func expectHandshake(timeout: TimeAmount) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        if let failure { promise.fail(failure); return promise.futureResult }
        // Anything the server sent in plaintext after its 220 is not trusted (RFC 3207 §5;
        // the STARTTLS injection attack): drop it.
        replies.removeAll()
        lineBuffer.removeAll()
        handshakeWaiter = promise
        timer = eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            self.fail(SMTPClientError(code: SMTPClientError.timeout, detail: "TLS handshake took longer than \(timeout)"))
            self.context?.close(promise: nil)
        }
        return promise.futureResult
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event, let waiter = handshakeWaiter {
            handshakeWaiter = nil
            timer?.cancel()
            timer = nil
            waiter.succeed(())
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        for byte in buffer.readableBytesView {
            guard failure == nil else { return }
            if byte == UInt8(ascii: "\n") {
                if lineBuffer.last == UInt8(ascii: "\r") { lineBuffer.removeLast() }
                let line = String(decoding: lineBuffer, as: UTF8.self)
                lineBuffer.removeAll(keepingCapacity: true)
                do {
                    if let reply = try parser.feed(line: line) { deliver(reply) }
                } catch {
                    fail(SMTPClientError(code: SMTPClientError.protocolViolation, detail: "\(error)"))
                    context.close(promise: nil)
                }
            } else {
                lineBuffer.append(byte)
                if lineBuffer.count > maximumLineLength {
                    fail(SMTPClientError(code: SMTPClientError.protocolViolation, detail: "reply line too long"))
                    context.close(promise: nil)
                }
            }
        }
    }

    private func deliver(_ reply: SMTPReply) {
        if let waiter {
            self.waiter = nil
            timer?.cancel()
            timer = nil
            waiter.succeed(reply)
        } else if replies.count < 2048 {
            replies.append(reply)
        } else {
            fail(SMTPClientError(code: SMTPClientError.protocolViolation, detail: "unsolicited replies"))
            context?.close(promise: nil)
        }
    }

    private func fail(_ error: SMTPClientError) {
        if failure == nil { failure = error }
        timer?.cancel()
        timer = nil
        if let handshakeWaiter {
            self.handshakeWaiter = nil
            handshakeWaiter.fail(error)
        }
        if let waiter {
            self.waiter = nil
            waiter.fail(error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(SMTPClientError(code: SMTPClientError.connectionClosed, detail: "connection closed by peer"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(SMTPClientError(code: SMTPClientError.connectionClosed, detail: "\(error)"))
        context.close(promise: nil)
    }
}
