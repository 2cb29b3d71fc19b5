import SMGSync
public import Logging
internal import Dispatch
public import NIOCore
internal import NIOPosix

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
/// **Transient errors.** With `transientRetry` > 0 a command that Redis certainly did not
/// execute (`RedisError.isRetryableWithoutEffect`: `LOADING`, `BUSY`, `MASTERDOWN`,
/// `TRYAGAIN`, or a failed connect before anything was written) is sent again after 50 ms,
/// 100 ms, … at most 500 ms apart, until `transientRetry` has passed; then the last error
/// is thrown. A pipeline is retried only when *every* reply is such an error. A timeout or a
/// connection lost after writing is never retried. With `transientRetry == .zero` (the
/// default) every error is thrown at once, as before.
///
/// **Health.** `health` tells, without a round trip, when the last reply came and since when
/// commands have been failing (connection, timeout or a transient error reply): `/healthz`
/// can say "Redis unreachable for longer than X" cheaply.
///
/// **Cancellation** is checked before a command is queued and during retry pauses; a queued
/// or running command is not interrupted (it ends within `timeout`).
///
/// **TLS** (`rediss://`, `rediss+sentinel://`): every connection relays through NIOSSL on one
/// event loop group shared by the whole pool — the caller's (`eventLoopGroup`, e.g. the process's
/// own) or else one of one thread that the client makes and shuts down in `close()`. Plain
/// endpoints use no event loop at all.
public final class RedisClient: Sendable {
    public let endpoint: RedisEndpoint
    public let poolSize: Int
    public let timeout: Duration
    /// Upper bound on commands queued (running + waiting) per slot.
    public let maxWaitingPerSlot: Int
    /// How long a command that Redis certainly did not execute is retried (zero: never).
    public let transientRetry: Duration
    private let onTransientError: (@Sendable (RedisError) -> Void)?
    private let logger: Logger
    private let slots: [Slot]
    private let state: Locked<State>
    /// For `redis+sentinel://` endpoints: where the primary is now.
    private let locator: PrimaryLocator?
    /// Carries the TLS connections (nil when the endpoint is not TLS).
    private let eventLoopGroup: (any EventLoopGroup)?
    /// The group this client made for itself; shut down once `close()` has closed every connection.
    private let ownedGroup: MultiThreadedEventLoopGroup?

    private struct State {
        var closed = false
        var inFlight: [Int]
        var health = RedisHealth()
    }

    /// - Parameters:
    ///   - transientRetry: retry commands that certainly did not run for up to this long (see
    ///     the type's documentation); zero = fail fast.
    ///   - onTransientError: called (on any thread, must not block) before each such retry,
    ///     e.g. to tell a user once that Redis is still loading.
    ///   - eventLoopGroup: for TLS endpoints, the group to relay on (not shut down by the client);
    ///     nil = the client makes a one-thread group of its own when the endpoint is TLS.
    public init(endpoint: RedisEndpoint, poolSize: Int = 4, timeout: Duration = .seconds(2),
                maxWaitingPerSlot: Int = 10_000, transientRetry: Duration = .zero,
                onTransientError: (@Sendable (RedisError) -> Void)? = nil, logger: Logger,
                eventLoopGroup: (any EventLoopGroup)? = nil) {
        precondition(poolSize >= 1, "poolSize must be at least 1")
        self.endpoint = endpoint
        self.poolSize = poolSize
        self.timeout = timeout
        self.maxWaitingPerSlot = maxWaitingPerSlot
        self.transientRetry = max(.zero, transientRetry)
        self.onTransientError = onTransientError
        self.logger = logger
        self.slots = (0..<poolSize).map { Slot(index: $0) }
        self.state = Locked(State(inFlight: Array(repeating: 0, count: poolSize)))
        if endpoint.tls != nil && eventLoopGroup == nil {
            let own = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            self.ownedGroup = own
            self.eventLoopGroup = own
        } else {
            self.ownedGroup = nil
            self.eventLoopGroup = endpoint.tls == nil ? nil : eventLoopGroup
        }
        let group = self.eventLoopGroup
        self.locator = endpoint.sentinel.map {
            PrimaryLocator(endpoint: endpoint, sentinel: $0, timeout: timeout, logger: logger, eventLoopGroup: group)
        }
    }

    deinit {
        // Pending commands retain the client, so none is queued now; still close on each
        // slot's queue so a `close()` that is still draining never races with this.
        let closed = state.withLock { $0.closed }
        Self.closeSlots(slots, thenShutDown: closed ? nil : ownedGroup)
    }

    /// Closes each slot's connection on its queue (after a command running there), then shuts
    /// `group` down: no connection is being made on it any more.
    private static func closeSlots(_ slots: [Slot], thenShutDown group: MultiThreadedEventLoopGroup?) {
        let drained = DispatchGroup()
        for slot in slots {
            drained.enter()
            slot.queue.async {
                slot.closeConnection()
                drained.leave()
            }
        }
        if let group {
            drained.notify(queue: .global()) { group.shutdownGracefully { _ in } }
        }
    }

    /// Sends one command. Error replies throw `RedisError(.server)`.
    public func command(_ args: RedisArg...) async throws -> RedisValue {
        try await command(args)
    }

    /// Sends one command. Error replies throw `RedisError(.server)`.
    public func command(_ args: [RedisArg]) async throws -> RedisValue {
        try await retrying { try await self.withConnection { try $0.command(args) } }
    }

    /// Sends the commands in one write on one connection and returns one reply per command.
    /// Error replies are returned as `.error` in place; only connection failures throw.
    /// With `transientRetry`, a pipeline whose every reply is a transient error (`LOADING`…)
    /// is sent again; if that keeps happening, those replies are returned.
    public func pipeline(_ commands: [[RedisArg]]) async throws -> [RedisValue] {
        try await retrying(
            { try await self.withConnection { try $0.pipeline(commands) } },
            transientResult: Self.noneRan)
    }

    /// The first reply's error when every reply of a pipeline is a transient error (`LOADING`…):
    /// Redis ran none of the commands, so the pipeline may be sent again. Nil otherwise.
    private static func noneRan(_ replies: [RedisValue]) -> RedisError? {
        guard !replies.isEmpty else { return nil }
        for reply in replies {
            guard case .error(let m) = reply, RedisError(.server, m).isRetryableWithoutEffect else { return nil }
        }
        guard case .error(let first) = replies[0] else { return nil }
        return RedisError(.server, first)
    }

    /// When the last reply came and since when commands fail. Cheap (one lock), no I/O.
    public var health: RedisHealth { state.withLock { $0.health } }

    /// Runs a Lua script by `EVALSHA`; if the server does not know the script (`NOSCRIPT`,
    /// e.g. after a restart or `SCRIPT FLUSH`) it falls back to `EVAL`, which also loads it,
    /// so later calls hit `EVALSHA` again. Both happen on the same connection.
    public func eval(_ script: RedisScript, keys: [RedisArg], args: [RedisArg]) async throws -> RedisValue {
        let reply = try await evalMany(script, calls: [(keys, args)])[0]
        if case .error(let message) = reply { throw RedisError(.server, message) }
        return reply
    }

    /// Runs one script for each of `calls` in one pipeline on one connection (one write, one
    /// round trip, and for Redis one pass of its event loop: with `appendfsync always` one fsync
    /// for all of them). Each call gets its own reply: a script's error reply comes back as
    /// `.error` in its place; only a connection failure throws (for all). Calls that Redis
    /// answered with `NOSCRIPT` (it did not run them) are sent once more as `EVAL`.
    /// `ignoringCancellation`: the calls belong to other tasks too (`RedisBatcher`), so the
    /// sending task's cancellation must not fail them.
    ///
    /// `replicas`: after the calls, `WAIT count timeout` on the same connection (so it covers
    /// their writes); when fewer replicas than `count` acknowledged within the timeout, every
    /// call that succeeded gets the error reply `NOTREPLICATED …` instead — its write is on the
    /// primary but not (yet) on enough replicas, so the caller must not report it as safe.
    ///
    /// `followUps`: per call (empty, or one list per call), plain commands sent right after that
    /// call's script in the same pipeline; a call with some gets `.array([script reply] + their
    /// replies)` (or the script's error reply alone), a call with none its script's reply. For reads that need no atomicity with
    /// the script: a large value returned through Lua costs Redis several times a plain `GET`.
    public func evalMany(_ script: RedisScript, calls: [(keys: [RedisArg], args: [RedisArg])],
                         followUps: [[[RedisArg]]] = [],
                         ignoringCancellation: Bool = false, replicas: ReplicaAcknowledgement? = nil) async throws -> [RedisValue]
    {
        if calls.isEmpty { return [] }
        precondition(followUps.isEmpty || followUps.count == calls.count, "one follow-up list per call")
        let sha = RedisArg(script.sha1)
        let tails: [[RedisArg]] = calls.map { [RedisArg($0.keys.count)] + $0.keys + $0.args }
        let after: [[[RedisArg]]] = followUps.isEmpty ? Array(repeating: [], count: calls.count) : followUps
        // Where each call's script reply sits in the pipeline (its follow-ups come right after it).
        var pipeline: [[RedisArg]] = []
        var positions: [Int] = []
        for i in calls.indices {
            positions.append(pipeline.count)
            pipeline.append(["EVALSHA", sha] + tails[i])
            pipeline += after[i]
        }
        let commands = pipeline, at = positions
        let logger = self.logger
        return try await retrying(
            {
                try await self.withConnection(checkingCancellation: !ignoringCancellation) { conn in
                    var replies = try conn.pipeline(commands)
                    let unknown = calls.indices.filter {
                        if case .error(let m) = replies[at[$0]] { return m.hasPrefix("NOSCRIPT") }
                        return false
                    }
                    if !unknown.isEmpty {
                        logger.debug("redis script not cached, falling back to EVAL", metadata: ["sha1": "\(script.sha1)"])
                        let again = try conn.pipeline(unknown.flatMap { [["EVAL", RedisArg(script.source)] + tails[$0]] + after[$0] })
                        var k = 0
                        for i in unknown {
                            for j in 0...after[i].count { replies[at[i] + j] = again[k]; k += 1 }
                        }
                    }
                    var results = calls.indices.map { replies[at[$0]] }
                    if let replicas, replicas.count > 0, results.contains(where: { if case .error = $0 { false } else { true } }) {
                        let acknowledged = try conn.command(["WAIT", RedisArg(replicas.count), RedisArg(replicas.timeoutMilliseconds)]).int ?? 0
                        if acknowledged < replicas.count {
                            let refusal = RedisValue.error("NOTREPLICATED \(acknowledged) of \(replicas.count) replicas acknowledged within \(replicas.timeoutMilliseconds) ms")
                            results = results.map { if case .error = $0 { $0 } else { refusal } }
                        }
                    }
                    if followUps.isEmpty { return results }
                    return calls.indices.map { i in
                        if case .error = results[i] { return results[i] }
                        if after[i].isEmpty { return results[i] }
                        return .array([results[i]] + replies[(at[i] + 1)..<(at[i] + 1 + after[i].count)])
                    }
                }
            },
            transientResult: Self.noneRan)
    }

    /// Closes all connections. Later and still-waiting commands throw `RedisError(.closed)`;
    /// a command already running on a connection finishes first (bounded by `timeout`). A group
    /// the client made for TLS is shut down after that (asynchronously; its thread then ends).
    public func close() {
        let wasClosed = state.withLock { s -> Bool in
            defer { s.closed = true }
            return s.closed
        }
        guard !wasClosed else { return }
        Self.closeSlots(slots, thenShutDown: ownedGroup)
    }

    /// Blocks until every connection closed by `close()` is closed (a command still running on
    /// one finishes first, within `timeout`). A caller that passed its own `eventLoopGroup` calls
    /// this before shutting that group down, so no TLS connection is being made on it then.
    public func waitUntilClosed() {
        for slot in slots { slot.queue.sync {} }
    }

    // MARK: - internals

    /// Runs `attempt` until it succeeds, fails with an error that may have had an effect, or
    /// `transientRetry` has passed (then the last error is thrown / the last result returned).
    private func retrying<T: Sendable>(
        _ attempt: () async throws -> T,
        transientResult: (T) -> RedisError? = { _ in nil }
    ) async throws -> T {
        var pause = Duration.milliseconds(50)
        var deadline: ContinuousClock.Instant?
        while true {
            let failure: RedisError
            var result: T?
            do {
                let value = try await attempt()
                guard let transient = transientResult(value) else { return value }
                noteOutcome(transient)
                failure = transient
                result = value
            } catch let error as RedisError where error.isRetryableWithoutEffect && transientRetry > .zero {
                failure = error
            }
            let now = ContinuousClock.now
            if deadline == nil { deadline = now + transientRetry }
            guard transientRetry > .zero, let deadline, now < deadline else {
                if let result { return result }
                throw failure
            }
            onTransientError?(failure)
            logger.debug("redis not ready, retrying", metadata: [
                "endpoint": "\(endpoint)", "error": "\(failure)", "pause": "\(pause)",
            ])
            try await Task.sleep(for: min(pause, deadline - now))
            pause = min(pause * 2, .milliseconds(500))
        }
    }

    /// Notes the outcome of one command for `health`: a reply (other than a transient error
    /// reply) means Redis is reachable; a connection, timeout or transient error means not.
    private func noteOutcome(_ error: (any Error)?) {
        let now = ContinuousClock.now
        if let error = error as? RedisError {
            guard error.isConnectionFatal || error.isRetryableWithoutEffect else {
                if error.code == .server { state.withLock { $0.health.succeeded(at: now) } }
                return
            }
            guard error.code != .closed else { return }
            state.withLock { $0.health.failed(at: now) }
        } else if error == nil {
            state.withLock { $0.health.succeeded(at: now) }
        }
    }

    private func withConnection<T: Sendable>(
        checkingCancellation: Bool = true,
        _ body: @escaping @Sendable (RedisConnection) throws -> T
    ) async throws -> T {
        if checkingCancellation { try Task.checkCancellation() }
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
        let endpoint = self.endpoint, timeout = self.timeout, logger = self.logger, locator = self.locator
        let group = self.eventLoopGroup
        return try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
            slot.queue.async {
                if self.state.withLock({ $0.closed }) {
                    slot.closeConnection()
                    cont.resume(throwing: RedisError(.closed, "client is closed"))
                    return
                }
                let result = Result<T, any Error> {
                    let conn: RedisConnection
                    do {
                        conn = try slot.connection(endpoint: endpoint, locator: locator, timeout: timeout,
                                                   group: group, logger: logger)
                    } catch var error as RedisError {
                        // Nothing of the caller's command was written yet.
                        error.commandNotSent = true
                        throw error
                    }
                    do {
                        let value = try body(conn)
                        if let locator, Self.saysReadOnly(value) {
                            // Written to a node that is no longer the primary: nothing ran there.
                            slot.closeConnection()
                            locator.forget(conn.endpoint, because: "READONLY")
                        }
                        return value
                    } catch let error as RedisError where error.serverErrorPrefix == "READONLY" {
                        slot.closeConnection()
                        locator?.forget(conn.endpoint, because: "READONLY")
                        throw error
                    } catch let error as RedisError where error.isConnectionFatal {
                        logger.warning("redis connection lost", metadata: [
                            "endpoint": "\(endpoint)", "slot": "\(slot.index)", "error": "\(error)",
                        ])
                        slot.closeConnection()
                        locator?.forget(conn.endpoint, because: "\(error)")
                        throw error
                    }
                }
                switch result {
                case .success: self.noteOutcome(nil)
                case .failure(let error): self.noteOutcome(error)
                }
                cont.resume(with: result)
            }
        }
    }

    /// Whether a reply (or any reply of a pipeline) is `-READONLY`: the node is a replica now.
    private static func saysReadOnly<T>(_ value: T) -> Bool {
        func readOnly(_ v: RedisValue) -> Bool {
            if case .error(let m) = v { return m.hasPrefix("READONLY") }
            return false
        }
        if let v = value as? RedisValue { return readOnly(v) }
        if let vs = value as? [RedisValue] { return vs.contains(where: readOnly) }
        return false
    }

    /// One pool slot. `conn` is only touched on `queue`, which is what makes the
    /// `@unchecked Sendable` sound.
    private final class Slot: @unchecked Sendable {
        let index: Int
        let queue: DispatchQueue
        private var conn: RedisConnection?
        /// The locator's generation `conn` was made for (Sentinel endpoints only).
        private var generation = 0

        init(index: Int) {
            self.index = index
            self.queue = DispatchQueue(label: "smg.redis.slot.\(index)")
        }

        func connection(endpoint: RedisEndpoint, locator: PrimaryLocator?, timeout: Duration,
                        group: (any EventLoopGroup)?, logger: Logger) throws -> RedisConnection
        {
            if let conn {
                if conn.isIdleAndAlive && (locator == nil || locator?.generation == generation) { return conn }
                logger.debug("redis idle connection found dead or of an old primary, reconnecting",
                             metadata: ["endpoint": "\(conn.endpoint)", "slot": "\(index)"])
                conn.close()
            }
            conn = nil
            var target = endpoint
            do {
                if let locator { (target, generation) = try locator.primary() }
                let c = try RedisConnection(endpoint: target, timeout: timeout, eventLoopGroup: group)
                if let locator {
                    // Sentinel may lag behind a failover for a moment: write only to a primary.
                    let role = try c.command(["ROLE"])
                    guard role.array?.first?.string == "master" else {
                        c.close()
                        locator.forget(target, because: "ROLE is \(role.array?.first?.string ?? "?")")
                        throw RedisError(.connection, "\(target) is not the primary (a failover is under way)")
                    }
                }
                logger.debug("redis connected", metadata: ["endpoint": "\(target)", "slot": "\(index)"])
                conn = c
                return c
            } catch {
                if let locator, (error as? RedisError)?.isConnectionFatal == true { locator.forget(target, because: "\(error)") }
                logger.warning("redis connect failed", metadata: ["endpoint": "\(target)", "error": "\(error)"])
                throw error
            }
        }

        func closeConnection() {
            conn?.close()
            conn = nil
        }
    }
}

/// How many replicas must have a write before it counts (`WAIT`), and how long to wait for them.
public struct ReplicaAcknowledgement: Sendable, Hashable {
    public var count: Int
    public var timeoutMilliseconds: Int
    public init(count: Int, timeoutMilliseconds: Int) {
        self.count = count
        self.timeoutMilliseconds = timeoutMilliseconds
    }
}

/// What a `RedisClient` knows about the reachability of its server, without asking it.
public struct RedisHealth: Sendable, Hashable {
    /// When the last reply arrived (nil: never).
    public var lastSuccess: ContinuousClock.Instant?
    /// Since when every command failed (connection, timeout, `LOADING`…); nil while the last
    /// command got a reply.
    public var failingSince: ContinuousClock.Instant?

    public init(lastSuccess: ContinuousClock.Instant? = nil, failingSince: ContinuousClock.Instant? = nil) {
        self.lastSuccess = lastSuccess
        self.failingSince = failingSince
    }

    /// True when commands have been failing for longer than `limit` (as of `now`).
    public func failing(longerThan limit: Duration, now: ContinuousClock.Instant = .now) -> Bool {
        guard let failingSince else { return false }
        return now - failingSince > limit
    }

    mutating func succeeded(at now: ContinuousClock.Instant) {
        lastSuccess = now
        failingSince = nil
    }

    mutating func failed(at now: ContinuousClock.Instant) {
        if failingSince == nil { failingSince = now }
    }
}
