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
final class SocketCore: @unchecked Sendable {
    static let sliceMilliseconds = 50

    let queue: DispatchQueue
    let context: ZMQContext
    let logger: Logger
    let name: String
    private var socket: UnsafeMutableRawPointer?
    private var endpoints: Set<String> = []

    init(context: ZMQContext, type: Int32, name: String, logger: Logger) throws {
        self.context = context
        self.logger = logger
        self.name = name
        self.queue = DispatchQueue(label: "smg.bus.\(name)")
        let ctx = context.handle
        self.socket = try queue.sync {
            guard let s = zmq_socket(ctx.raw, type) else { throw ZMQError.last("zmq_socket \(name)") }
            do {
                try Self.setInt(s, ZMQ_LINGER, 0, "ZMQ_LINGER")
            } catch {
                zmq_close(s)
                throw error
            }
            return s
        }
    }

    deinit {
        // No operation is pending (each one retains the core), so nothing races with this.
        if let s = socket {
            let h = ZMQHandle(raw: s)
            let ctx = context
            queue.async {
                zmq_close(h.raw)
                withExtendedLifetime(ctx) {}
            }
        }
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

    func connect(_ endpoint: String) async throws {
        try await perform("zmq_connect \(endpoint)") { core, s in
            if zmq_connect(s, endpoint) != 0 { throw ZMQError.last("zmq_connect \(endpoint)") }
            core.endpoints.insert(endpoint)
            core.logger.debug("zmq connected", metadata: ["socket": "\(core.name)", "endpoint": "\(endpoint)"])
        }
    }

    func disconnect(_ endpoint: String) async throws {
        try await perform("zmq_disconnect \(endpoint)") { core, s in
            if zmq_disconnect(s, endpoint) != 0 { throw ZMQError.last("zmq_disconnect \(endpoint)") }
            core.endpoints.remove(endpoint)
        }
    }

    var connectedEndpoints: Set<String> {
        get async {
            await withCheckedContinuation { (cont: CheckedContinuation<Set<String>, Never>) in
                queue.async { cont.resume(returning: self.socket == nil ? [] : self.endpoints) }
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
        zmq_close(s)
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
