internal import CZeroMQ
internal import Dispatch
public import Logging

/// A raw libzmq pointer that may cross threads. Whoever holds one obeys the owner's thread rules.
struct ZMQHandle: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer
}

/// Owns one libzmq context (`zmq_ctx_new` … `zmq_ctx_term`).
///
/// **Thread rules.** zmq(7): "A 0MQ context is thread safe and may be shared among as many
/// application threads as necessary, without any additional locking required on the part of
/// the caller." Sockets are not (see `SocketCore`): each bus type below owns one socket on
/// its own serial queue.
///
/// **Lifetime.** Every socket made from this context keeps it alive, so the context is
/// terminated (`zmq_ctx_term`, in `deinit`) only after all of its sockets are closed; and all
/// sockets use `ZMQ_LINGER 0`, so termination never waits for unsent messages.
/// `close()` calls `zmq_ctx_shutdown`: pending and later socket operations end (receivers
/// return nil, senders return false) and the sockets close themselves.
///
/// **CURVE.** With `security`, every socket made from this context uses CurveZMQ: bound
/// sockets (`BusPusher`, `EventPublisher`) are CURVE servers with `security`'s keypair and
/// accept only clients whose public key is in `security.authorizedKeys` (the context's ZAP
/// handler, started here before any socket can bind; see `ZAPHandler`); connecting sockets
/// (`BusPuller`, `TapSubscriber`) are CURVE clients that connect only to endpoints carrying the
/// server's key (`BusEndpoint`). Without it, everything is plaintext and endpoints with a key
/// are refused. Options are set when a socket is made or connects, never per message.
public final class ZMQContext: Sendable {
    let handle: ZMQHandle
    /// The CURVE settings of every socket of this context; nil = plaintext.
    public let security: BusSecurity?

    /// `logger`: where the ZAP handler reports refused clients (CURVE only).
    public init(ioThreads: Int = 1, security: BusSecurity? = nil, logger: Logger? = nil) throws {
        if security != nil, zmq_has("curve") == 0 {
            throw ZMQError(code: EPROTONOSUPPORT, message: "this libzmq has no CURVE support (built without libsodium)",
                           operation: "zmq_has curve")
        }
        guard let ctx = zmq_ctx_new() else { throw ZMQError.last("zmq_ctx_new") }
        if zmq_ctx_set(ctx, ZMQ_IO_THREADS, Int32(max(1, ioThreads))) != 0 {
            let error = ZMQError.last("zmq_ctx_set ZMQ_IO_THREADS")
            zmq_ctx_term(ctx)
            throw error
        }
        if let security {
            do { try ZAPHandler.start(context: ZMQHandle(raw: ctx), security: security, logger: logger) } catch {
                zmq_ctx_term(ctx)
                throw error
            }
        }
        // Nothing may throw below: once every property is set, a throw would run deinit.
        handle = ZMQHandle(raw: ctx)
        self.security = security
    }

    /// Shuts the context down (`zmq_ctx_shutdown`); does not block. Idempotent.
    public func close() {
        _ = zmq_ctx_shutdown(handle.raw)
    }

    deinit {
        // No socket is left (each one retains the context) but the ZAP handler's, which
        // `zmq_ctx_term` ends (ETERM), so this returns promptly; it still joins libzmq's I/O
        // threads, so it runs off the caller's (possibly cooperative) thread.
        let h = handle
        DispatchQueue.global().async { _ = zmq_ctx_term(h.raw) }
    }
}

/// libzmq's version, e.g. (4, 3, 4).
public func zmqVersion() -> (major: Int, minor: Int, patch: Int) {
    var a: Int32 = 0, b: Int32 = 0, c: Int32 = 0
    zmq_version(&a, &b, &c)
    return (Int(a), Int(b), Int(c))
}
