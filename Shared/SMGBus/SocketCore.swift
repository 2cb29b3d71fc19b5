import SMGSync
internal import CZeroMQ
internal import Dispatch
internal import Logging

/// Owns one libzmq socket and the serial `DispatchQueue` that is the only place it is used.
///
/// **Thread rules.** zmq(7), "Thread safety": "Individual 0MQ sockets are not thread safe
/// except in the case where full memory barriers are issued when migrating a socket from one
/// thread to another." Every libzmq call on the socket therefore happens on `queue`, a serial
/// `DispatchQueue`: its blocks never overlap, and dispatch orders them with full barriers
/// (happens-before) even when consecutive blocks run on different worker threads. Async
/// callers hop onto the queue and wait on a continuation, so no zmq call runs on Swift's
/// cooperative thread pool. `socket` and `endpoints` are only touched on `queue`, which makes
/// `@unchecked Sendable` sound.
///
/// **No starvation.** A waiting receive (or a send waiting for room) polls in slices of at
/// most `sliceMilliseconds` and re-enqueues itself between slices, so connect, disconnect
/// and close on the same socket run within one slice.
///
/// **Lifetime.** The socket is closed exactly once: by `close()`, when the context is shut
/// down (`ETERM`), or from `deinit`. The core retains its `ZMQContext`, so the context is
/// terminated only after the socket is closed.
///
/// **CURVE** (the context has `BusSecurity`): a `.server` socket is a CURVE server under the
/// context's ZAP handler; a `.client` socket is a CURVE client that sets the server's key just
/// before each `zmq_connect` and watches its handshakes through a socket monitor (an inproc
/// PAIR, read only by `follow`, on the queue), so a connection the server refused is noticed,
/// reported and retried later instead of being silently gone (libzmq does not reconnect after
/// a refused handshake).
final class SocketCore: @unchecked Sendable {
    static let sliceMilliseconds = 50
    /// How long a connection whose handshake the peer refused waits before `follow` tries again.
    static let retryAfterRefusal = Duration.seconds(30)

    enum Role { case server, client }

    let queue: DispatchQueue
    let context: ZMQContext
    let logger: Logger
    let name: String
    private var socket: UnsafeMutableRawPointer?
    /// The connection monitor of a CURVE client (ZMQ_PAIR), else nil.
    private var monitor: UnsafeMutableRawPointer?
    /// Connected endpoints: address given to `zmq_connect` → the entry it was connected for.
    private var endpoints: [String: String] = [:]
    /// Entries `follow` refused (unusable as long as they are listed): reported once.
    private var refused: Set<String> = []
    /// Entries whose handshake the peer refused → when `follow` may connect them again.
    private var retryAt: [String: ContinuousClock.Instant] = [:]

    private static let monitorCounter = Locked<UInt64>(0)

    init(context: ZMQContext, type: Int32, name: String, role: Role, logger: Logger) throws {
        self.context = context
        self.logger = logger
        self.name = name
        self.queue = DispatchQueue(label: "smg.bus.\(name)")
        let ctx = context.handle
        let security = context.security
        let monitorAddress = "inproc://smg.bus.monitor.\(Self.monitorCounter.withLock { $0 += 1; return $0 })"
        (self.socket, self.monitor) = try queue.sync {
            guard let s = zmq_socket(ctx.raw, type) else { throw ZMQError.last("zmq_socket \(name)") }
            var monitor: UnsafeMutableRawPointer?
            do {
                try Self.setInt(s, ZMQ_LINGER, 0, "ZMQ_LINGER")
                if let security {
                    switch role {
                    case .server: try Self.makeCurveServer(s, security)
                    case .client:
                        try Self.setBytes(s, ZMQ_CURVE_PUBLICKEY, security.keyPair.publicKey, "ZMQ_CURVE_PUBLICKEY")
                        try Self.setBytes(s, ZMQ_CURVE_SECRETKEY, security.keyPair.secretKey, "ZMQ_CURVE_SECRETKEY")
                        monitor = try Self.makeMonitor(ctx.raw, s, monitorAddress)
                    }
                }
            } catch {
                zmq_close(s)
                throw error
            }
            return (s, monitor)
        }
    }

    deinit {
        // No operation is pending (each one retains the core), so nothing races with this.
        if let s = socket {
            let h = ZMQHandle(raw: s)
            let m = monitor.map { ZMQHandle(raw: $0) }
            let ctx = context
            queue.async {
                Self.closeSockets(h.raw, m?.raw)
                withExtendedLifetime(ctx) {}
            }
        }
    }

    /// `ZMQ_ZAP_ENFORCE_DOMAIN` (a draft constant libzmq 4.3 implements but zmq.h hides): with a
    /// ZAP domain set, a CURVE server refuses clients when no ZAP handler answers.
    static let zapEnforceDomain: Int32 = 93

    private static func makeCurveServer(_ s: UnsafeMutableRawPointer, _ security: BusSecurity) throws {
        try setInt(s, ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER")
        try setBytes(s, ZMQ_CURVE_SECRETKEY, security.keyPair.secretKey, "ZMQ_CURVE_SECRETKEY")
        try setBytes(s, ZMQ_ZAP_DOMAIN, Array(ZAPHandler.domain.utf8), "ZMQ_ZAP_DOMAIN")
        var one: Int32 = 1
        // Required: without it a libzmq whose ZAP handler is gone would let any client that knows
        // the server key in (fail open). A libzmq without the option refuses to run CURVE.
        if zmq_setsockopt(s, zapEnforceDomain, &one, MemoryLayout<Int32>.size) != 0 {
            throw ZMQError.last("zmq_setsockopt ZMQ_ZAP_ENFORCE_DOMAIN (needed for CURVE)")
        }
    }

    /// A PAIR socket receiving `s`'s handshake failures (the events after which libzmq gives
    /// the connection up).
    private static func makeMonitor(_ ctx: UnsafeMutableRawPointer, _ s: UnsafeMutableRawPointer,
                                    _ address: String) throws -> UnsafeMutableRawPointer {
        let events = ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
        if zmq_socket_monitor(s, address, Int32(events)) != 0 { throw ZMQError.last("zmq_socket_monitor") }
        guard let m = zmq_socket(ctx, ZMQ_PAIR) else { throw ZMQError.last("zmq_socket monitor") }
        do {
            try setInt(m, ZMQ_LINGER, 0, "ZMQ_LINGER")
            if zmq_connect(m, address) != 0 { throw ZMQError.last("zmq_connect \(address)") }
        } catch {
            zmq_close(m)
            _ = zmq_socket_monitor(s, nil, 0)
            throw error
        }
        return m
    }

    private static func closeSockets(_ s: UnsafeMutableRawPointer, _ monitor: UnsafeMutableRawPointer?) {
        if let monitor {
            _ = zmq_socket_monitor(s, nil, 0)
            zmq_close(monitor)
        }
        zmq_close(s)
    }

    // MARK: - synchronous setup (init only: non-blocking zmq calls)

    /// Runs `body` on the queue, synchronously. Only for non-blocking setup in initialisers.
    func setup<T>(_ body: (UnsafeMutableRawPointer) throws -> T) throws -> T {
        try queue.sync {
            guard let s = socket else { throw ZMQError.closed("setup \(name)") }
            return try body(s)
        }
    }

    static func setInt(_ s: UnsafeMutableRawPointer, _ option: Int32, _ value: Int, _ label: String) throws {
        var v = Int32(clamping: value)
        if zmq_setsockopt(s, option, &v, MemoryLayout<Int32>.size) != 0 {
            throw ZMQError.last("zmq_setsockopt \(label)")
        }
    }

    static func setBytes(_ s: UnsafeMutableRawPointer, _ option: Int32, _ value: [UInt8], _ label: String) throws {
        let rc = value.withUnsafeBytes { zmq_setsockopt(s, option, $0.baseAddress, $0.count) }
        if rc != 0 { throw ZMQError.last("zmq_setsockopt \(label)") }
    }

    /// Binds and returns the resolved endpoint (`ZMQ_LAST_ENDPOINT`, e.g. with the real port
    /// for `tcp://127.0.0.1:*`).
    static func bind(_ s: UnsafeMutableRawPointer, _ endpoint: String) throws -> String {
        if zmq_bind(s, endpoint) != 0 { throw ZMQError.last("zmq_bind \(endpoint)") }
        var buffer = [CChar](repeating: 0, count: 1024)
        var size = buffer.count
        if zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, &buffer, &size) != 0 {
            throw ZMQError.last("zmq_getsockopt ZMQ_LAST_ENDPOINT")
        }
        let bytes = buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - async operations

    /// Runs `body` on the queue with the open socket; throws `ZMQError.closed` if closed.
    func perform<T: Sendable>(
        _ operation: String,
        _ body: @escaping @Sendable (SocketCore, UnsafeMutableRawPointer) throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
            queue.async {
                guard let s = self.socket else {
                    cont.resume(throwing: ZMQError.closed(operation))
                    return
                }
                cont.resume(with: Result { try body(self, s) })
            }
        }
    }

    /// Connects to a registry entry (`BusEndpoint`): with CURVE, `ZMQ_CURVE_SERVERKEY` is set to
    /// the entry's key just before `zmq_connect` of its address. An entry for an address that is
    /// connected for another entry (a new server key) replaces that connection; the same entry
    /// again changes nothing. Throws `BusEndpointError` for an entry this socket must not use.
    func connect(_ entry: String) async throws {
        let endpoint = try BusEndpoint(parsing: entry)
        try await perform("zmq_connect \(entry)") { core, s in try core.connectOnQueue(s, endpoint, entry: entry) }
    }

    /// Disconnects the connection made for `entry` (`ZMQError` ENOENT if there is none).
    func disconnect(_ entry: String) async throws {
        let endpoint = try BusEndpoint(parsing: entry)
        try await perform("zmq_disconnect \(entry)") { core, s in
            guard core.endpoints[endpoint.address] == entry else {
                throw ZMQError.fromCode(ENOENT, "zmq_disconnect \(entry)")
            }
            core.endpoints[endpoint.address] = nil
            if zmq_disconnect(s, endpoint.address) != 0 { throw ZMQError.last("zmq_disconnect \(entry)") }
        }
    }

    /// Whether this socket may connect to `endpoint`: a CURVE client only to an endpoint with
    /// a server key, a plaintext one only to one without.
    static func check(_ endpoint: BusEndpoint, entry: String, security: BusSecurity?) throws(BusEndpointError) {
        if security != nil, endpoint.serverKey == nil {
            throw BusEndpointError(entry: entry, problem:
                "plaintext endpoint refused: this process uses CURVE (bus.curve_key_file) and connects only to endpoints registered with a server key")
        }
        if security == nil, let key = endpoint.serverKey {
            throw BusEndpointError(entry: entry, problem:
                "the endpoint is a CURVE server (key \(Z85.encode(key))) but this process has no CURVE keypair (bus.curve_key_file is empty): it cannot connect")
        }
    }

    private func connectOnQueue(_ s: UnsafeMutableRawPointer, _ endpoint: BusEndpoint, entry: String) throws {
        try Self.check(endpoint, entry: entry, security: context.security)
        if let current = endpoints[endpoint.address] {
            if current == entry { return }
            endpoints[endpoint.address] = nil
            _ = zmq_disconnect(s, endpoint.address)
        }
        if let key = endpoint.serverKey {
            try Self.setBytes(s, ZMQ_CURVE_SERVERKEY, key, "ZMQ_CURVE_SERVERKEY")
        }
        if zmq_connect(s, endpoint.address) != 0 { throw ZMQError.last("zmq_connect \(entry)") }
        endpoints[endpoint.address] = entry
        logger.debug("zmq connected", metadata: ["socket": "\(name)", "endpoint": "\(entry)"])
    }

    /// Makes the connections match `entries` (registry entries; for one address, the last entry
    /// given wins): connects new ones, disconnects those no longer listed, and reports what it
    /// did. Entries this socket must not use are reported once while they stay listed;
    /// connections whose handshake the peer refused (a key not authorized there) are reported
    /// each time and tried again after `retryAfterRefusal`.
    func follow(_ entries: [String]) async -> BusFollowReport {
        await withCheckedContinuation { (cont: CheckedContinuation<BusFollowReport, Never>) in
            queue.async { cont.resume(returning: self.followOnQueue(entries)) }
        }
    }

    private func followOnQueue(_ entries: [String]) -> BusFollowReport {
        var report = BusFollowReport()
        guard let s = socket else { return report }
        let now = ContinuousClock.now
        for failure in takeHandshakeFailures() {
            // libzmq names the peer as connected to: the address given, or (after a reconnect)
            // its resolved form; then the port decides, if only one connection has it.
            let port = failure.address.split(separator: ":").last.map { ":" + $0 } ?? failure.address
            let byPort = endpoints.keys.filter { $0.hasSuffix(port) }
            guard let address = endpoints[failure.address] != nil ? failure.address : byPort.count == 1 ? byPort[0] : nil,
                  let entry = endpoints[address]
            else {
                report.problems.append(BusEndpointError(entry: failure.address, problem: failure.problem))
                continue
            }
            endpoints[address] = nil
            _ = zmq_disconnect(s, address)
            retryAt[entry] = now + Self.retryAfterRefusal
            report.problems.append(BusEndpointError(entry: entry, problem: failure.problem))
        }
        let listed = Set(entries)
        refused.formIntersection(listed)
        retryAt = retryAt.filter { listed.contains($0.key) }
        var wanted: [String: BusEndpoint] = [:]   // address → endpoint (of the last entry given)
        var wantedEntry: [String: String] = [:]
        for entry in entries where !refused.contains(entry) {
            do {
                let endpoint = try BusEndpoint(parsing: entry)
                try Self.check(endpoint, entry: entry, security: context.security)
                wanted[endpoint.address] = endpoint
                wantedEntry[endpoint.address] = entry
            } catch {
                refused.insert(entry)
                report.problems.append(error)
            }
        }
        for (address, entry) in endpoints where wantedEntry[address] != entry {
            endpoints[address] = nil
            _ = zmq_disconnect(s, address)
            report.disconnected.append(entry)
        }
        for (address, endpoint) in wanted.sorted(by: { $0.key < $1.key }) where endpoints[address] == nil {
            let entry = wantedEntry[address]!
            if let at = retryAt[entry] {
                if now < at { continue }
                retryAt[entry] = nil
            }
            do {
                try connectOnQueue(s, endpoint, entry: entry)
                report.connected.append(entry)
            } catch let error as BusEndpointError {
                refused.insert(entry)
                report.problems.append(error)
            } catch {
                // A libzmq error (e.g. a resource running short) may pass: tried again later.
                retryAt[entry] = now + Self.retryAfterRefusal
                report.problems.append(BusEndpointError(entry: entry, problem: "\(error); trying again in \(Self.retryAfterRefusal)"))
            }
        }
        return report
    }

    /// One whole multipart message from `s` (a signal interrupting the wait is retried); nil when
    /// none could be read (`zmq_errno()` says why: EAGAIN with ZMQ_DONTWAIT, ETERM at shutdown).
    static func receiveFrames(_ s: UnsafeMutableRawPointer, flags: Int32) -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        var more = true
        while more {
            var msg = zmq_msg_t()
            zmq_msg_init(&msg)
            defer { zmq_msg_close(&msg) }
            if zmq_msg_recv(&msg, s, flags) < 0 {
                if zmq_errno() == EINTR { continue }
                return nil
            }
            let size = zmq_msg_size(&msg)
            frames.append(size == 0 ? [] : Array(UnsafeRawBufferPointer(start: zmq_msg_data(&msg), count: size)))
            more = zmq_msg_more(&msg) != 0
        }
        return frames
    }

    /// Handshake failures the monitor reported since the last call (CURVE clients only).
    private func takeHandshakeFailures() -> [(address: String, problem: String)] {
        guard let m = monitor else { return [] }
        var out: [(address: String, problem: String)] = []
        while true {
            guard let frames = Self.receiveFrames(m, flags: ZMQ_DONTWAIT) else { return out }
            // Frame 1: event (uint16) + value (uint32), native byte order; frame 2: the endpoint.
            guard frames.count == 2, frames[0].count == 6 else { continue }
            let event = frames[0].withUnsafeBytes { UInt32($0.loadUnaligned(as: UInt16.self)) }
            let value = frames[0].withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 2, as: UInt32.self) }
            let address = String(decoding: frames[1], as: UTF8.self)
            let ours = context.security.map { Z85.encode($0.keyPair.publicKey) } ?? "-"
            let problem = event == UInt32(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
                ? "the server refused this process's CURVE key \(ours) (ZAP status \(value)): it must be in the server's bus.curve_authorized_keys; trying again in \(Self.retryAfterRefusal)"
                : "CURVE handshake failed (protocol error 0x\(String(value, radix: 16))); trying again in \(Self.retryAfterRefusal)"
            out.append((address, problem))
        }
    }

    var connectedEndpoints: Set<String> {
        get async {
            await withCheckedContinuation { (cont: CheckedContinuation<Set<String>, Never>) in
                queue.async { cont.resume(returning: self.socket == nil ? [] : Set(self.endpoints.values)) }
            }
        }
    }

    /// Closes the socket (on the queue). Idempotent.
    func close() async {
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            queue.async {
                self.closeOnQueue()
                cont.resume()
            }
        }
    }

    private func closeOnQueue() {
        guard let s = socket else { return }
        socket = nil
        endpoints.removeAll()
        Self.closeSockets(s, monitor)
        monitor = nil
        logger.debug("zmq socket closed", metadata: ["socket": "\(name)"])
    }

    // MARK: - receive

    /// Waits for the next well-formed 2-frame message. Returns nil once the socket is closed
    /// (or its context shut down). Throws `CancellationError` within one slice of the task
    /// being cancelled; a message is never taken off the socket for a cancelled receive.
    func receive() async throws -> BusMessage? {
        try Task.checkCancellation()
        let pending = PendingReceive()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<BusMessage?, any Error>) in
                guard pending.install(cont) else { return }
                queue.async { self.receiveSlice(pending) }
            }
        } onCancel: {
            pending.cancel()
        }
    }

    private func receiveSlice(_ pending: PendingReceive) {
        guard let s = socket else {
            pending.take()?.resume(returning: nil)
            return
        }
        if pending.isFinished { return } // cancelled: already resumed
        var item = zmq_pollitem_t(socket: s, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
        let rc = zmq_poll(&item, 1, Self.sliceMilliseconds)
        if rc < 0 {
            let code = zmq_errno()
            if code == EINTR { queue.async { self.receiveSlice(pending) }; return }
            if code == ETERM {
                closeOnQueue()
                pending.take()?.resume(returning: nil)
                return
            }
            pending.take()?.resume(throwing: ZMQError.fromCode(code, "zmq_poll \(name)"))
            return
        }
        guard rc > 0, item.revents & Int16(ZMQ_POLLIN) != 0 else {
            queue.async { self.receiveSlice(pending) }
            return
        }
        // Claim the waiter before taking a message off the socket, so a concurrent
        // cancellation can never make us drop a message.
        guard let cont = pending.take() else { return }
        do {
            switch try readMessage(s) {
            case .message(let m):
                cont.resume(returning: m)
            case .nothing, .malformed:
                if pending.restore(cont) { queue.async { self.receiveSlice(pending) } }
            }
        } catch let error as ZMQError where error.code == ETERM {
            closeOnQueue()
            cont.resume(returning: nil)
        } catch {
            cont.resume(throwing: error)
        }
    }

    private enum ReadResult { case nothing, malformed, message(BusMessage) }

    /// Reads one multipart message without blocking (its frames arrive atomically). Frames
    /// beyond the second are read and discarded; each frame is at most `ZMQ_MAXMSGSIZE`.
    private func readMessage(_ s: UnsafeMutableRawPointer) throws -> ReadResult {
        var frames: [[UInt8]] = []
        var frameCount = 0
        var more = true
        while more {
            var msg = zmq_msg_t()
            zmq_msg_init(&msg)
            defer { zmq_msg_close(&msg) }
            if zmq_msg_recv(&msg, s, ZMQ_DONTWAIT) < 0 {
                let code = zmq_errno()
                if code == EAGAIN && frameCount == 0 { return .nothing }
                if code == EINTR && frameCount == 0 { return .nothing }
                throw ZMQError.fromCode(code, "zmq_msg_recv \(name)")
            }
            frameCount += 1
            if frames.count < 2 {
                let size = zmq_msg_size(&msg)
                if size == 0 {
                    frames.append([])
                } else {
                    frames.append(Array(UnsafeRawBufferPointer(start: zmq_msg_data(&msg), count: size)))
                }
            }
            more = zmq_msg_more(&msg) != 0
        }
        guard frameCount == 2, let topic = String(validating: frames[0], as: UTF8.self) else {
            logger.warning("dropping malformed bus message", metadata: [
                "socket": "\(name)", "frames": "\(frameCount)",
            ])
            return .malformed
        }
        return .message(BusMessage(topic: topic, payload: frames[1]))
    }

    // MARK: - send

    /// Queues a 2-frame message, waiting at most until `deadline` for room (a connected peer
    /// below its high-water mark). Returns false on timeout, on a closed socket or on error.
    func send(_ message: BusMessage, deadline: ContinuousClock.Instant) async -> Bool {
        if Task.isCancelled { return false }
        return await withCheckedContinuation { (cont: CheckedContinuation<Bool, Never>) in
            queue.async { self.sendSlice(message, deadline: deadline, cont) }
        }
    }

    private func sendSlice(_ message: BusMessage, deadline: ContinuousClock.Instant,
                           _ cont: CheckedContinuation<Bool, Never>) {
        guard let s = socket else { cont.resume(returning: false); return }
        let topic = Array(message.topic.utf8)
        let rc = Self.sendFrame(s, topic, ZMQ_DONTWAIT | ZMQ_SNDMORE)
        if rc >= 0 {
            // libzmq accepts the remaining frames of a message once its first frame is in
            // (HWM is checked per message); SNDTIMEO bounds this call anyway.
            if Self.sendFrame(s, message.payload, 0) < 0 {
                logger.error("zmq send of second frame failed", metadata: [
                    "socket": "\(name)", "error": "\(ZMQError.last("zmq_send"))",
                ])
                cont.resume(returning: false)
            } else {
                cont.resume(returning: true)
            }
            return
        }
        let code = zmq_errno()
        if code == ETERM {
            closeOnQueue()
            cont.resume(returning: false)
            return
        }
        guard code == EAGAIN || code == EINTR else {
            logger.warning("zmq send failed", metadata: ["socket": "\(name)", "error": "\(ZMQError.fromCode(code, "zmq_send"))"])
            cont.resume(returning: false)
            return
        }
        let remaining = deadline - ContinuousClock.now
        if remaining <= .zero {
            cont.resume(returning: false)
            return
        }
        let (secs, atto) = remaining.components
        let ms = min(Int(secs) * 1000 + Int(atto / 1_000_000_000_000_000) + 1, Self.sliceMilliseconds)
        var item = zmq_pollitem_t(socket: s, fd: 0, events: Int16(ZMQ_POLLOUT), revents: 0)
        _ = zmq_poll(&item, 1, ms)
        queue.async { self.sendSlice(message, deadline: deadline, cont) }
    }

    /// Publishes without waiting: on PUB sockets libzmq drops messages for subscribers at
    /// their high-water mark. Returns false if the socket is closed or the send failed.
    func publish(_ message: BusMessage) async -> Bool {
        await withCheckedContinuation { (cont: CheckedContinuation<Bool, Never>) in
            queue.async {
                guard let s = self.socket else { cont.resume(returning: false); return }
                let topic = Array(message.topic.utf8)
                guard Self.sendFrame(s, topic, ZMQ_DONTWAIT | ZMQ_SNDMORE) >= 0 else {
                    cont.resume(returning: false)
                    return
                }
                cont.resume(returning: Self.sendFrame(s, message.payload, ZMQ_DONTWAIT) >= 0)
            }
        }
    }

    /// Publishes every message in one hop onto the socket's queue and returns at once (taps:
    /// nobody waits for a PUB send, which libzmq never blocks). Messages after a failed send are
    /// still tried; failures are not reported (the event log in Redis is the record).
    func publishDetached(_ messages: [BusMessage]) {
        guard !messages.isEmpty else { return }
        queue.async {
            guard let s = self.socket else { return }
            for message in messages {
                let topic = Array(message.topic.utf8)
                guard Self.sendFrame(s, topic, ZMQ_DONTWAIT | ZMQ_SNDMORE) >= 0 else { continue }
                _ = Self.sendFrame(s, message.payload, ZMQ_DONTWAIT)
            }
        }
    }

    private static func sendFrame(_ s: UnsafeMutableRawPointer, _ bytes: [UInt8], _ flags: Int32) -> Int32 {
        if bytes.isEmpty {
            var dummy: UInt8 = 0
            return zmq_send(s, &dummy, 0, flags)
        }
        return bytes.withUnsafeBytes { zmq_send(s, $0.baseAddress, $0.count, flags) }
    }
}

/// The single waiter of one `receive()`: resumed exactly once, by a receive slice or by
/// cancellation, whichever takes it first.
final class PendingReceive: Sendable {
    typealias Cont = CheckedContinuation<BusMessage?, any Error>
    private struct State {
        var cont: Cont?
        var cancelled = false
    }
    private let state = Locked(State())

    /// Stores the continuation; if already cancelled, resumes it with CancellationError.
    func install(_ c: Cont) -> Bool {
        let cancelled = state.withLock { s -> Bool in
            if s.cancelled { return true }
            s.cont = c
            return false
        }
        if cancelled { c.resume(throwing: CancellationError()) }
        return !cancelled
    }

    func take() -> Cont? {
        state.withLock { s in
            defer { s.cont = nil }
            return s.cont
        }
    }

    /// Puts a taken continuation back; if cancelled meanwhile, resumes it and returns false.
    func restore(_ c: Cont) -> Bool { install(c) }

    func cancel() {
        let c = state.withLock { s -> Cont? in
            s.cancelled = true
            defer { s.cont = nil }
            return s.cont
        }
        c?.resume(throwing: CancellationError())
    }

    var isFinished: Bool { state.withLock { $0.cancelled && $0.cont == nil } }
}
