import SMGSync
public import Logging
internal import Dispatch

/// An async Redis client: a fixed pool of `poolSize` `RedisConnection`s.
///
/// **Ownership and threads.** Each pool slot owns at most one `RedisConnection` (one hiredis
/// context) and one serial `DispatchQueue`; the connection is only ever touched on that
/// queue (hiredis: "a redisContext is not thread-safe"). Blocking hiredis calls therefore
/// never run on Swift's cooperative thread pool; async callers wait on a continuation.
/// The client itself is `Sendable` and may be shared by any number of tasks.
///
/// **Connections** are made lazily on first use of a slot and re-made on the next use after
/// a connection, timeout or protocol error (the broken context is freed at once). Before an
/// idle connection is reused it is checked without writing (readable or EOF on an idle RESP
/// connection means the server went away), so a server restart costs no failed command
/// beyond those that were in flight or hit the dead server. A command
/// that fails because of a broken connection throws; it is *not* retried, because the
/// server may or may not have executed it — the caller decides.
///
/// **Timeouts.** `timeout` bounds connect and every single command, so a dead or stopped
/// Redis yields `RedisError(.connection)` or `.timeout` after at most about `timeout`
/// (plus the time the command waited for its slot behind earlier commands).
///
/// **Queueing.** Each slot runs one command at a time; a command goes to the slot with the
/// fewest commands queued. At most `maxWaitingPerSlot` commands may be queued per slot;
/// beyond that a command fails at once with `RedisError(.overloaded)` instead of growing
/// memory without bound.
///
/// **Cancellation** is checked before a command is queued; a queued or running command is
/// not interrupted (it ends within `timeout`).
public final class RedisClient: Sendable {
    public let endpoint: RedisEndpoint
    public let poolSize: Int
    public let timeout: Duration
    /// Upper bound on commands queued (running + waiting) per slot.
    public let maxWaitingPerSlot: Int
    private let logger: Logger
    private let slots: [Slot]
    private let state: Locked<State>

    private struct State {
        var closed = false
        var inFlight: [Int]
    }

    public init(endpoint: RedisEndpoint, poolSize: Int = 4, timeout: Duration = .seconds(2),
                maxWaitingPerSlot: Int = 10_000, logger: Logger) {
        precondition(poolSize >= 1, "poolSize must be at least 1")
        self.endpoint = endpoint
        self.poolSize = poolSize
        self.timeout = timeout
        self.maxWaitingPerSlot = maxWaitingPerSlot
        self.logger = logger
        self.slots = (0..<poolSize).map { Slot(index: $0) }
        self.state = Locked(State(inFlight: Array(repeating: 0, count: poolSize)))
    }

    deinit {
        // Pending commands retain the client, so none is queued now; still close on each
        // slot's queue so a `close()` that is still draining never races with this.
        for slot in slots { slot.queue.async { slot.closeConnection() } }
    }

    /// Sends one command. Error replies throw `RedisError(.server)`.
    public func command(_ args: RedisArg...) async throws -> RedisValue {
        try await command(args)
    }

    /// Sends one command. Error replies throw `RedisError(.server)`.
    public func command(_ args: [RedisArg]) async throws -> RedisValue {
        try await withConnection { try $0.command(args) }
    }

    /// Sends the commands in one write on one connection and returns one reply per command.
    /// Error replies are returned as `.error` in place; only connection failures throw.
    public func pipeline(_ commands: [[RedisArg]]) async throws -> [RedisValue] {
        try await withConnection { try $0.pipeline(commands) }
    }

    /// Runs a Lua script by `EVALSHA`; if the server does not know the script (`NOSCRIPT`,
    /// e.g. after a restart or `SCRIPT FLUSH`) it falls back to `EVAL`, which also loads it,
    /// so later calls hit `EVALSHA` again. Both happen on the same connection.
    public func eval(_ script: RedisScript, keys: [RedisArg], args: [RedisArg]) async throws -> RedisValue {
        let tail: [RedisArg] = [RedisArg(keys.count)] + keys + args
        let logger = self.logger
        return try await withConnection { conn in
            do {
                return try conn.command(["EVALSHA", RedisArg(script.sha1)] + tail)
            } catch let error as RedisError where error.serverErrorPrefix == "NOSCRIPT" {
                logger.debug("redis script not cached, falling back to EVAL", metadata: ["sha1": "\(script.sha1)"])
                return try conn.command(["EVAL", RedisArg(script.source)] + tail)
            }
        }
    }

    /// Closes all connections. Later and still-waiting commands throw `RedisError(.closed)`;
    /// a command already running on a connection finishes first (bounded by `timeout`).
    public func close() {
        let wasClosed = state.withLock { s -> Bool in
            defer { s.closed = true }
            return s.closed
        }
        guard !wasClosed else { return }
        for slot in slots { slot.queue.async { slot.closeConnection() } }
    }

    // MARK: - internals

    private func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (RedisConnection) throws -> T
    ) async throws -> T {
        try Task.checkCancellation()
        let index: Int = try state.withLock { s in
            if s.closed { throw RedisError(.closed, "client is closed") }
            var best = 0
            for i in 1..<s.inFlight.count where s.inFlight[i] < s.inFlight[best] { best = i }
            if s.inFlight[best] >= maxWaitingPerSlot {
                throw RedisError(.overloaded, "more than \(maxWaitingPerSlot) commands waiting per connection")
            }
            s.inFlight[best] += 1
            return best
        }
        defer { state.withLock { $0.inFlight[index] -= 1 } }
        let slot = slots[index]
        let endpoint = self.endpoint, timeout = self.timeout, logger = self.logger
        return try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
            slot.queue.async {
                if self.state.withLock({ $0.closed }) {
                    slot.closeConnection()
                    cont.resume(throwing: RedisError(.closed, "client is closed"))
                    return
                }
                cont.resume(with: Result {
                    let conn = try slot.connection(endpoint: endpoint, timeout: timeout, logger: logger)
                    do {
                        return try body(conn)
                    } catch let error as RedisError where error.isConnectionFatal {
                        logger.warning("redis connection lost", metadata: [
                            "endpoint": "\(endpoint)", "slot": "\(slot.index)", "error": "\(error)",
                        ])
                        slot.closeConnection()
                        throw error
                    }
                })
            }
        }
    }

    /// One pool slot. `conn` is only touched on `queue`, which is what makes the
    /// `@unchecked Sendable` sound.
    private final class Slot: @unchecked Sendable {
        let index: Int
        let queue: DispatchQueue
        private var conn: RedisConnection?

        init(index: Int) {
            self.index = index
            self.queue = DispatchQueue(label: "smg.redis.slot.\(index)")
        }

        func connection(endpoint: RedisEndpoint, timeout: Duration, logger: Logger) throws -> RedisConnection {
            if let conn {
                if conn.isIdleAndAlive { return conn }
                logger.debug("redis idle connection found dead, reconnecting",
                             metadata: ["endpoint": "\(endpoint)", "slot": "\(index)"])
                conn.close()
            }
            conn = nil
            do {
                let c = try RedisConnection(endpoint: endpoint, timeout: timeout)
                logger.debug("redis connected", metadata: ["endpoint": "\(endpoint)", "slot": "\(index)"])
                conn = c
                return c
            } catch {
                logger.warning("redis connect failed", metadata: ["endpoint": "\(endpoint)", "error": "\(error)"])
                throw error
            }
        }

        func closeConnection() {
            conn?.close()
            conn = nil
        }
    }
}
