internal import CZeroMQ
internal import Foundation
internal import Logging
import SMGSync

/// The ZAP handler (ZeroMQ RFC 27) of one context: decides which CURVE clients the context's
/// server sockets accept.
///
/// libzmq 4.3 asks the handler bound at `inproc://zeromq.zap.01` *of the same context* about
/// every CURVE client once the client has proven it holds the secret key of the public key it
/// presents. Without a handler, libzmq would accept every client that knows the server's public
/// key (the "Stonehouse" pattern), so the handler is bound when the context is made — before any
/// server socket exists — and server sockets also set `ZMQ_ZAP_DOMAIN` with
/// `ZMQ_ZAP_ENFORCE_DOMAIN`, which makes libzmq refuse clients outright if the handler were
/// missing (fail closed).
///
/// Answers `200` only for mechanism `CURVE` with a client key in `BusSecurity.authorizedKeys`;
/// everything else gets `400` (the client's connection is dropped and libzmq does not reconnect
/// it). Refusals are logged (at most once a minute per key).
///
/// **Thread rules.** The REP socket is created here and from then on used only by the handler's
/// own thread (`Thread` start is a full memory barrier, as zmq(7) requires for migrating a socket).
/// The thread blocks in `zmq_msg_recv` and ends when the context is shut down or terminated
/// (`ETERM`), closing the socket, so `zmq_ctx_term` never waits for it.
enum ZAPHandler {
    static let endpoint = "inproc://zeromq.zap.01"
    /// The ZAP domain of the bus's server sockets.
    static let domain = "smg.bus"

    static func start(context: ZMQHandle, security: BusSecurity, logger: Logger?) throws {
        guard let s = zmq_socket(context.raw, ZMQ_REP) else { throw ZMQError.last("zmq_socket ZAP handler") }
        do {
            try SocketCore.setInt(s, ZMQ_LINGER, 0, "ZMQ_LINGER")
            if zmq_bind(s, endpoint) != 0 { throw ZMQError.last("zmq_bind \(endpoint)") }
        } catch {
            zmq_close(s)
            throw error
        }
        let socket = ZMQHandle(raw: s)
        let thread = Thread {
            serve(socket, authorized: security.authorizedKeys, logger: logger)
        }
        thread.name = "smg.bus.zap"
        thread.start()
    }

    private static func serve(_ socket: ZMQHandle, authorized: Set<[UInt8]>, logger: Logger?) {
        let s = socket.raw
        var lastLogged: [[UInt8]: ContinuousClock.Instant] = [:]
        defer { zmq_close(s) }
        // Only the context's shutdown (ETERM) ends the handler. Any other failure would leave
        // every new handshake refused (or worse): say so and end the process, so that the
        // supervisor starts it again.
        func failed(_ what: String) -> Never {
            let code = zmq_errno()
            logger?.critical("bus: the ZAP handler failed; exiting", metadata: [
                "during": .string(what), "error": .string(String(cString: zmq_strerror(code))),
            ])
            exit(70)
        }
        while true {
            guard let request = SocketCore.receiveFrames(s, flags: 0) else {
                if zmq_errno() == ETERM { return }
                failed("receive")
            }
            let (status, text, user) = decide(request, authorized: authorized)
            if status != "200" {
                let key = request.count == 7 ? request[6] : []
                let now = ContinuousClock.now
                if lastLogged[key].map({ now - $0 >= .seconds(60) }) ?? true {
                    if lastLogged.count > 10_000 { lastLogged.removeAll() }
                    lastLogged[key] = now
                    logger?.warning("bus: refused a ZeroMQ client (CURVE key not in bus.curve_authorized_keys)", metadata: [
                        "client_key": .string(key.count == 32 ? Z85.encode(key) : "-"),
                        "peer": .string(request.count > 3 ? String(decoding: request[3], as: UTF8.self) : "-"),
                        "mechanism": .string(request.count > 5 ? String(decoding: request[5], as: UTF8.self) : "-"),
                        "reason": .string(text),
                    ])
                }
            }
            let reply: [[UInt8]] = [
                Array("1.0".utf8), request.count > 1 ? request[1] : [], Array(status.utf8), Array(text.utf8),
                Array(user.utf8), [],
            ]
            guard send(s, reply) else {
                if zmq_errno() == ETERM { return }
                failed("send")
            }
        }
    }

    /// RFC 27 request: version, request id, domain, address, identity, mechanism, credentials…
    static func decide(_ request: [[UInt8]], authorized: Set<[UInt8]>) -> (status: String, text: String, user: String) {
        guard request.count >= 6, request[0] == Array("1.0".utf8) else { return ("400", "malformed ZAP request", "") }
        guard request[5] == Array("CURVE".utf8) else { return ("400", "CURVE required", "") }
        guard request.count == 7, request[6].count == 32 else { return ("400", "malformed CURVE credentials", "") }
        guard authorized.contains(request[6]) else { return ("400", "client key not authorized", "") }
        return ("200", "OK", Z85.encode(request[6]))
    }

    private static func send(_ s: UnsafeMutableRawPointer, _ frames: [[UInt8]]) -> Bool {
        for (i, frame) in frames.enumerated() {
            let flags: Int32 = i == frames.count - 1 ? 0 : ZMQ_SNDMORE
            while true {
                let rc: Int32
                if frame.isEmpty {
                    var dummy: UInt8 = 0
                    rc = zmq_send(s, &dummy, 0, flags)
                } else {
                    rc = frame.withUnsafeBytes { zmq_send(s, $0.baseAddress, $0.count, flags) }
                }
                if rc >= 0 { break }
                if zmq_errno() == EINTR { continue }
                return false
            }
        }
        return true
    }
}
