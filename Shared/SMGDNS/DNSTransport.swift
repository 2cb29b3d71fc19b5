internal import NIOCore
internal import NIOPosix
internal import Logging

/// One query/response exchange with one server over UDP or TCP (RFC 1035 §4.2, RFC 7766).
///
/// Each UDP exchange opens a fresh socket bound to port 0, so the kernel picks a random
/// source port (Linux randomises ephemeral ports); the socket is closed afterwards. Every
/// datagram is checked (source address and port, query id, QR bit, opcode, question) and a
/// mismatch is dropped while the wait continues until the per-try timeout. Buffers: a UDP
/// datagram is read into at most 65535 octets; a TCP frame is at most 65535 octets by its
/// 2-octet length prefix. Handlers live on one event loop; results cross to async code via
/// an `EventLoopPromise`.
enum DNSTransportExchange {
    enum Used: Sendable { case udp, tcp }

    /// Why a response is not the answer to our query, or nil when it is.
    static func mismatch(_ msg: DNSMessage, id: UInt16, question: DNSQuestion) -> String? {
        if msg.id != id { return "id \(msg.id) != \(id)" }
        if !msg.flags.isResponse { return "QR not set" }
        if msg.flags.opcode != 0 { return "opcode \(msg.flags.opcode)" }
        guard msg.questions.count == 1 else { return "\(msg.questions.count) questions" }
        let q = msg.questions[0]
        if q.name != question.name || q.type != question.type || q.recordClass != question.recordClass {
            return "question \(q.name)/\(q.type) != \(question.name)/\(question.type)"
        }
        return nil
    }

    static func udp(query: [UInt8], id: UInt16, question: DNSQuestion, server: SocketAddress,
                    timeout: TimeAmount, group: any EventLoopGroup, logger: Logger) async throws -> DNSMessage {
        let el = group.next()
        let promise = el.makePromise(of: DNSMessage.self)
        let bindHost: String
        switch server {
        case .v6(let a): bindHost = a.host == "::1" ? "::1" : "::"
        default: bindHost = (server.ipAddress ?? "").hasPrefix("127.") ? "127.0.0.1" : "0.0.0.0"
        }
        let channel: any Channel
        do {
            channel = try await DatagramBootstrap(group: el)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: DNSMessageParser.maximumMessageSize))
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHandler(
                            UDPResponseHandler(server: server, id: id, question: question, promise: promise, logger: logger))
                    }
                }
                .bind(host: bindHost, port: 0).get()
        } catch {
            promise.fail(error)
            throw DNSError(.network, "UDP bind: \(error)")
        }
        let timer = el.scheduleTask(in: timeout) { promise.fail(DNSError(.timeout, "UDP \(server)")) }
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: server, data: channel.allocator.buffer(bytes: query)))
            .whenFailure { promise.fail(DNSError(.network, "UDP send to \(server): \($0)")) }
        return try await awaitReply(promise, timer: timer, channel: channel)
    }

    static func tcp(query: [UInt8], id: UInt16, question: DNSQuestion, server: SocketAddress,
                    timeout: TimeAmount, group: any EventLoopGroup, logger: Logger) async throws -> DNSMessage {
        let el = group.next()
        let promise = el.makePromise(of: DNSMessage.self)
        let deadline = NIODeadline.now() + timeout
        let timer = el.scheduleTask(deadline: deadline) { promise.fail(DNSError(.timeout, "TCP \(server)")) }
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: el)
                .connectTimeout(timeout)
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder()))
                        try ch.pipeline.syncOperations.addHandler(
                            TCPResponseHandler(id: id, question: question, promise: promise, logger: logger))
                    }
                }
                .connect(to: server).get()
        } catch {
            timer.cancel()
            promise.fail(error)
            throw DNSError(.network, "TCP connect to \(server): \(error)")
        }
        var buf = channel.allocator.buffer(capacity: query.count + 2)
        buf.writeInteger(UInt16(query.count))
        buf.writeBytes(query)
        channel.writeAndFlush(buf).whenFailure { promise.fail(DNSError(.network, "TCP send to \(server): \($0)")) }
        return try await awaitReply(promise, timer: timer, channel: channel)
    }

    /// Waits for the exchange's reply (or its timeout, or the caller's cancellation), then stops
    /// the timer and closes the one-query channel.
    static func awaitReply(_ promise: EventLoopPromise<DNSMessage>, timer: Scheduled<Void>,
                           channel: any Channel) async throws -> DNSMessage {
        defer {
            timer.cancel()
            channel.close(promise: nil)
        }
        return try await withTaskCancellationHandler {
            try await promise.futureResult.get()
        } onCancel: {
            promise.fail(CancellationError())
        }
    }
}

/// Accepts the first datagram that is the answer to our query; drops everything else.
/// Confined to its channel's event loop.
final class UDPResponseHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let server: SocketAddress
    let id: UInt16
    let question: DNSQuestion
    let promise: EventLoopPromise<DNSMessage>
    let logger: Logger

    init(server: SocketAddress, id: UInt16, question: DNSQuestion, promise: EventLoopPromise<DNSMessage>, logger: Logger) {
        self.server = server; self.id = id; self.question = question; self.promise = promise; self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = Self.unwrapInboundIn(data)
        guard envelope.remoteAddress == server else {
            logger.debug("dns: dropped datagram from unexpected source", metadata: ["from": "\(envelope.remoteAddress)", "server": "\(server)"])
            return
        }
        let msg: DNSMessage
        do {
            msg = try DNSMessageParser.parse(Array(envelope.data.readableBytesView), allowTruncatedSections: true)
        } catch {
            logger.debug("dns: dropped unparsable datagram", metadata: ["server": "\(server)", "error": "\(error)"])
            return
        }
        if let why = DNSTransportExchange.mismatch(msg, id: id, question: question) {
            logger.debug("dns: dropped mismatched response", metadata: ["server": "\(server)", "reason": "\(why)"])
            return
        }
        promise.succeed(msg)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP errors and the like: keep waiting; the timeout decides.
        logger.debug("dns: UDP socket error", metadata: ["server": "\(server)", "error": "\(error)"])
    }
}

/// Splits a TCP stream into DNS messages (2-octet length prefix, RFC 1035 §4.2.2).
struct DNSTCPFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let len = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
              buffer.readableBytes >= 2 + Int(len) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        let frame = buffer.readSlice(length: Int(len))!
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }
    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}

/// Accepts the first framed message that answers our query. Confined to its channel's event loop.
final class TCPResponseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let id: UInt16
    let question: DNSQuestion
    let promise: EventLoopPromise<DNSMessage>
    let logger: Logger

    init(id: UInt16, question: DNSQuestion, promise: EventLoopPromise<DNSMessage>, logger: Logger) {
        self.id = id; self.question = question; self.promise = promise; self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        let msg: DNSMessage
        do {
            msg = try DNSMessageParser.parse(Array(frame.readableBytesView))
        } catch {
            logger.debug("dns: dropped unparsable TCP message", metadata: ["error": "\(error)"])
            return
        }
        if let why = DNSTransportExchange.mismatch(msg, id: id, question: question) {
            logger.debug("dns: dropped mismatched TCP response", metadata: ["reason": "\(why)"])
            return
        }
        promise.succeed(msg)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(DNSError(.network, "TCP connection closed before an answer"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(DNSError(.network, "TCP: \(error)"))
        context.close(promise: nil)
    }
}
