internal import NIOCore
internal import NIOPosix
internal import NIOSSL
internal import NIOTLS
import SMGSync
internal import Dispatch
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// The TLS leg of one `RedisConnection` (hiredis 0.14.1 has no TLS).
///
/// **How.** `open` connects to the server with SwiftNIO, completes the TLS handshake (NIOSSL,
/// certificate and hostname verified), then makes a `socketpair(AF_UNIX, SOCK_STREAM)`: one end
/// goes to hiredis (`redisConnectFd`), which keeps working exactly as over TCP (blocking, its
/// timeouts as `SO_RCVTIMEO`/`SO_SNDTIMEO`); the other end is adopted by a NIO channel on the
/// same event loop as the TLS channel, and `RelayHandler`s copy bytes both ways, with
/// backpressure (a side stops reading while the other cannot write).
///
/// **Lifetime.** hiredis owns its end (`redisFree` closes it). When hiredis closes it, the relay
/// sees EOF and closes the TLS connection (close_notify, then TCP close); when the server or the
/// network ends the TLS connection, the relay closes its end and hiredis sees EOF — so an idle
/// pooled connection whose server went away is noticed by `isIdleAndAlive` as with TCP. Nothing
/// is left behind once both are closed: 1 fd for hiredis, 2 (unix end + TCP socket) in NIO.
///
/// **Errors.** Connect and handshake together are bounded by the connection's timeout
/// (`.timeout`); refused, unreachable, a failed verification or handshake → `.connection`.
/// A TLS failure after the handshake (e.g. the server's alert "certificate required" in TLS 1.3)
/// is kept in `failureDescription`, and `RedisConnection` adds it to the error hiredis reports.
final class RedisTLSBridge: Sendable {
    /// host:port, for messages.
    let peer: String
    private let failure = Locked<String?>(nil)

    private init(peer: String) { self.peer = peer }

    /// What went wrong on the TLS side, if anything did (first failure only).
    var failureDescription: String? { failure.withLock { $0 } }

    func noteFailure(_ error: any Error) {
        // A server that dies or closes without close_notify is not a TLS problem: hiredis reports EOF.
        if let e = error as? NIOSSLError, case .uncleanShutdown = e { return }
        let text = Self.describe(error)
        failure.withLock { if $0 == nil { $0 = text } }
    }

    /// The handshake did not finish within the connection's timeout.
    struct HandshakeTimeout: Error {}
    /// The server closed the connection during the handshake.
    struct ClosedDuringHandshake: Error {}

    /// Connects to `host:port`, completes the TLS handshake within `timeout`, and returns the bridge
    /// and the file descriptor for hiredis (a blocking unix stream socket; the caller owns it).
    /// Blocks the calling thread, which must not be an event loop thread of `group`.
    static func open(host: String, port: Int, tls: RedisTLS, group: any EventLoopGroup,
                     timeout: Duration) throws(RedisError) -> (RedisTLSBridge, CInt) {
        let sslContext = try tls.context()
        let peer = (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
        let bridge = RedisTLSBridge(peer: peer)
        let limit = TimeAmount.nanoseconds(max(1, Int64(timeout / .nanoseconds(1))))
        let eventLoop = group.next()
        let handshake = eventLoop.makePromise(of: Void.self)
        let ready = eventLoop.makePromise(of: CInt.self)
        let deadline = eventLoop.scheduleTask(in: limit) { handshake.fail(HandshakeTimeout()) }
        let name = tls.verificationName(connectingTo: host)
        ClientBootstrap(group: eventLoop)
            .connectTimeout(limit)
            .channelInitializer { channel in
                do {
                    let ssl = try NIOSSLClientHandler(context: sslContext, serverHostname: name)
                    try channel.pipeline.syncOperations.addHandlers(ssl, RelayHandler(handshake: handshake, bridge: bridge))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
            .connect(host: host, port: port)
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    handshake.fail(error)
                    ready.fail(error)
                case .success(let channel):
                    handshake.futureResult.whenComplete { outcome in
                        switch outcome {
                        case .failure(let error):
                            channel.close(promise: nil)
                            ready.fail(error)
                        case .success:
                            attachLocalEnd(to: channel, ready: ready)
                        }
                    }
                }
            }

        // Hand the outcome to this (blocking) thread. If the event loop never answers (it was shut
        // down under us), give up a little after the deadline; a late success is then undone.
        struct Handoff {
            var result: Result<CInt, any Error>?
            var abandoned = false
        }
        let handoff = Locked(Handoff())
        let done = DispatchSemaphore(value: 0)
        ready.futureResult.whenComplete { result in
            deadline.cancel()
            let abandoned = handoff.withLock { h -> Bool in
                if !h.abandoned { h.result = result }
                return h.abandoned
            }
            if abandoned, case .success(let fd) = result { _ = close(fd) }
            done.signal()
        }
        let waitLimit = DispatchTime.now() + .nanoseconds(Int(limit.nanoseconds)) + .seconds(1)
        _ = done.wait(timeout: waitLimit)
        let result = handoff.withLock { h -> Result<CInt, any Error>? in
            if h.result == nil { h.abandoned = true }
            return h.result
        }
        switch result {
        case .success(let fd)?:
            return (bridge, fd)
        case .failure(let error)?:
            throw classify(error, peer: peer, checkedName: name ?? host, timeout: timeout)
        case nil:
            throw RedisError(.timeout, "connect to \(peer): no answer from the TLS event loop within \(timeout)")
        }
    }

    /// On the event loop, after the handshake: the socketpair, one end adopted by NIO and paired
    /// with the TLS channel's relay.
    private static func attachLocalEnd(to network: any Channel, ready: EventLoopPromise<CInt>) {
        var fds: [CInt] = [-1, -1]
        #if canImport(Glibc)
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        #else
        let type = SOCK_STREAM
        #endif
        guard socketpair(AF_UNIX, type, 0, &fds) == 0 else {
            let error = IOError(errnoCode: errno, reason: "socketpair")
            network.close(promise: nil)
            ready.fail(error)
            return
        }
        let forHiredis = fds[0], forNIO = fds[1]
        ClientBootstrap(group: network.eventLoop)
            .channelInitializer { local in
                do {
                    let partner = try network.pipeline.syncOperations.handler(type: RelayHandler.self)
                    try local.pipeline.syncOperations.addHandler(RelayHandler(partner: partner))
                    return local.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return local.eventLoop.makeFailedFuture(error)
                }
            }
            .withConnectedSocket(forNIO)
            .whenComplete { result in
                switch result {
                case .success:
                    ready.succeed(forHiredis)
                case .failure(let error):
                    _ = close(forHiredis)
                    network.close(promise: nil)
                    ready.fail(error)
                }
            }
    }

    /// Connect/handshake failures as `RedisError`s the pool's retry and failover logic knows.
    /// `checkedName`: what the certificate had to name (the server name, or the address).
    static func classify(_ error: any Error, peer: String, checkedName: String, timeout: Duration) -> RedisError {
        let prefix = "connect to rediss://\(peer)"
        switch error {
        case is HandshakeTimeout:
            // TCP connected (else the connect itself timed out): the server stalls, or does not speak TLS.
            return RedisError(.timeout, "\(prefix): TLS handshake not done within \(timeout) (a frozen server, or a port without TLS?)")
        case ChannelError.connectTimeout:
            return RedisError(.timeout, "\(prefix): connect timed out after \(timeout)")
        case is ClosedDuringHandshake:
            return RedisError(.connection, "\(prefix): TLS handshake failed: the server closed the connection")
        case let e as NIOSSLExtraError where e == .failedToValidateHostname:
            return RedisError(.connection, "\(prefix): TLS verification failed: the server's certificate is not valid for \(checkedName) (redis.tls_server_name sets the name to check)")
        case let e as NIOSSLError:
            let text = describe(e)
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                return RedisError(.connection, "\(prefix): TLS verification failed: the server's certificate is not trusted (redis.tls_ca_file): \(text)")
            }
            return RedisError(.connection, "\(prefix): TLS handshake failed: \(text)")
        default:
            return RedisError(.connection, "\(prefix): \(error)")
        }
    }

    /// A readable line for a NIOSSL error: the BoringSSL reasons (e.g. `CERTIFICATE_VERIFY_FAILED`,
    /// `TLSV1_ALERT_CERTIFICATE_REQUIRED`) when there are any, else the whole error.
    static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        let marker = "OPENSSL_internal:"
        var reasons: [Substring] = []
        var rest = Substring(text)
        while let found = rest.range(of: marker) {
            let tail = rest[found.upperBound...]
            let reason = tail.prefix { $0 != " " && $0 != "]" && $0 != ")" }
            if !reason.isEmpty && !reasons.contains(reason) { reasons.append(reason) }
            rest = tail.dropFirst(reason.count)
        }
        return reasons.isEmpty ? text : reasons.joined(separator: ", ")
    }
}

/// Copies bytes between the two channels of a bridge: the TLS channel (after `NIOSSLHandler`,
/// so it sees plaintext) and the unix socket whose other end hiredis holds. Both channels are on
/// one event loop, so a relay calls its partner directly. A relay holds its channel's reads while
/// the partner's channel is not writable (backpressure), and closes the partner when its own
/// channel goes inactive. On the TLS side it also reports the handshake's outcome.
private final class RelayHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private var partner: RelayHandler?
    /// Local side only: the TLS side's relay, paired when this channel becomes active.
    private var partnerToPair: RelayHandler?
    /// TLS side: bytes read before the local side was there (Redis sends nothing unasked, so normally none).
    private var held: [ByteBuffer] = []
    private var readHeld = false
    private let handshake: EventLoopPromise<Void>?
    private let bridge: RedisTLSBridge?

    /// The TLS side.
    init(handshake: EventLoopPromise<Void>, bridge: RedisTLSBridge) {
        self.handshake = handshake
        self.bridge = bridge
    }

    /// The local (hiredis) side.
    init(partner: RelayHandler) {
        self.handshake = nil
        self.bridge = nil
        self.partnerToPair = partner
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
        partnerToPair = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if let network = partnerToPair {
            partnerToPair = nil
            guard network.context?.channel.isActive == true else {
                // The TLS connection ended before the pairing: hiredis must see EOF.
                context.close(promise: nil)
                context.fireChannelActive()
                return
            }
            partner = network
            network.partner = self
            let early = network.held
            network.held = []
            for bytes in early { context.write(wrapOutboundOut(bytes), promise: nil) }
            if !early.isEmpty { context.flush() }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if let partner { partner.send(bytes) } else { held.append(bytes) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.context?.flush()
        context.fireChannelReadComplete()
    }

    private func send(_ bytes: ByteBuffer) {
        guard let context else { return }
        context.write(wrapOutboundOut(bytes), promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    private func resumeReading() {
        guard readHeld, let context else { return }
        readHeld = false
        context.read()
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partner.context?.channel.isWritable == false {
            readHeld = true
        } else {
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls { handshake?.succeed(()) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        handshake?.fail(error)
        bridge?.noteFailure(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshake?.fail(RedisTLSBridge.ClosedDuringHandshake())
        let other = partner
        partner = nil
        other?.partner = nil
        other?.context?.close(promise: nil)
        context.fireChannelInactive()
    }
}
