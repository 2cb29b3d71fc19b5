public import Logging
import SMGSync
public import SMGCore
public import SMGStore
import SMGBus
import SMGRedis
public import SMGNDR
import SMTPProtocol
public import NIOCore
public import ServiceLifecycle
import Metrics
public import Foundation

/// What a stage decided about one message. Checks return verdicts as data: events to record,
/// fields to set on the message record, messages the stage wrote (NDRs, notices), and where the
/// message goes next. The runner commits all of it in one script; a worker never writes Redis.
public struct StageOutcome: Sendable {
    public var events: [Event]
    public var fields: [String: String]
    public var newMessages: [NewMessage]
    public var transition: Transition
    /// True when the worker did something outside the gateway that must not be repeated (a
    /// remote server said 250). Such an outcome is recorded even when the lease was lost meanwhile
    /// (`MessageStore.recordOrphan`), and its commit is retried for longer when Redis is away.
    public var externalEffects: Bool

    public init(events: [Event], fields: [String: String] = [:], newMessages: [NewMessage] = [],
                transition: Transition, externalEffects: Bool = false) {
        self.events = events
        self.fields = fields
        self.newMessages = newMessages
        self.transition = transition
        self.externalEffects = externalEffects
    }
}

/// The work of one stage. `process` may be called more than once for a message (a redrive after
/// a crash); the runner makes sure only one result is ever recorded and handed on.
public protocol StageWorker: Sendable {
    func process(_ message: StoredMessage, context: StageContext) async throws -> StageOutcome
    /// Called once `outcome` is recorded in Redis (by the commit, or — after a lost lease — as
    /// an orphan's events): for counting what really happened, not what was merely decided.
    /// Must not block; the default does nothing.
    func committed(_ outcome: StageOutcome)
}

extension StageWorker {
    public func committed(_ outcome: StageOutcome) {}
}

/// The lease a worker holds on one message while it works.
///
/// The runner's `LeaseKeeper` renews it once a third of its length has passed since it was last
/// confirmed (checked every sixth), so well before it runs out. Before any side effect outside the gateway
/// (SMTP DATA), a worker calls `confirm()`: one round trip that renews the lease and so proves it
/// is still the holder. A worker that was stalled (paused, starved, cut off from Redis) beyond
/// its lease finds `confirm()` false and must stop before that side effect.
public final class Lease: Sendable {
    public let id: MessageID
    public let topic: String
    public let owner: String
    public let milliseconds: Int
    let store: MessageStore
    private let state: Locked<(confirmed: ContinuousClock.Instant, lost: Bool)>

    /// `claimedAt`: when the claim that took the lease was sent (the lease runs from about then).
    init(id: MessageID, topic: String, owner: String, milliseconds: Int, store: MessageStore,
         claimedAt: ContinuousClock.Instant) {
        self.id = id
        self.topic = topic
        self.owner = owner
        self.milliseconds = milliseconds
        self.store = store
        state = Locked((claimedAt, false))
    }

    /// True when another process has (or may have) taken the message over: Redis said so, or the
    /// lease has not been confirmed for longer than it lasts.
    public var isLost: Bool {
        state.withLock { $0.lost || ContinuousClock.now - $0.confirmed >= .milliseconds(milliseconds) }
    }

    /// Renews the lease in Redis. True: this worker holds the message for another full lease.
    /// False: lost, or Redis could not be asked (then nobody can record a result either).
    public func confirm() async -> Bool {
        if state.withLock({ $0.lost }) { return false }
        let asked = ContinuousClock.now
        do {
            let held = try await store.renew(id, topic: topic, owner: owner, leaseMilliseconds: milliseconds)
            state.withLock { s in if held { s.confirmed = asked } else { s.lost = true } }
            return held
        } catch {
            return false
        }
    }

    /// The check before a side effect outside the gateway (SMTP DATA): true when this worker
    /// certainly still holds the lease. A lease confirmed less than a third of its length ago
    /// (by the claim or the heartbeat, on the monotonic clock, which keeps running while the
    /// process is stopped) cannot have been taken over; otherwise Redis is asked (`confirm`).
    /// So a normal delivery costs no extra round trip, and a stalled one always asks.
    public func confirmBeforeSideEffect() async -> Bool {
        let fresh = state.withLock { !$0.lost && ContinuousClock.now - $0.confirmed < .milliseconds(milliseconds / 3) }
        return fresh ? true : await confirm()
    }

    /// Whether the keeper should renew it now: not lost, and last confirmed a third of its
    /// length ago or longer.
    func due(at now: ContinuousClock.Instant) -> Bool {
        state.withLock { !$0.lost && now - $0.confirmed >= .milliseconds(milliseconds / 3) }
    }

    var wasLost: Bool { state.withLock { $0.lost } }
}

/// Keeps the leases of the messages a runner works on: one loop for all of them instead of a
/// timer task per message. Every sixth of the lease it renews those last confirmed a third of
/// the lease ago or longer (so a lease is renewed well before half of it has run), all at once.
/// Most messages finish within a third of their lease and are never renewed; what a message
/// costs here is two lock operations.
final class LeaseKeeper: Sendable {
    private struct Held { let lease: Lease; let logger: Logger }
    private let held = Locked<[ObjectIdentifier: Held]>([:])
    let tick: Duration

    init(leaseMilliseconds: Int) {
        tick = .milliseconds(max(25, leaseMilliseconds / 6))
    }

    func keep(_ lease: Lease, logger: Logger) { held.withLock { $0[ObjectIdentifier(lease)] = Held(lease: lease, logger: logger) } }
    func drop(_ lease: Lease) { held.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(lease)) } }

    /// Renews due leases until cancelled, or until `stopping` and no lease is held any more. A
    /// lease found lost is logged once and no longer kept.
    func run(stopping: @Sendable () -> Bool) async {
        while !Task.isCancelled, !(stopping() && held.withLock({ $0.isEmpty })) {
            try? await Task.sleep(for: tick)
            if Task.isCancelled { return }
            let now = ContinuousClock.now
            let due = held.withLock { $0.values.filter { $0.lease.due(at: now) } }
            guard !due.isEmpty else { continue }
            await withDiscardingTaskGroup { group in
                for item in due {
                    group.addTask {
                        if !(await item.lease.confirm()), item.lease.wasLost {
                            item.logger.warning("lease lost while working")
                            self.drop(item.lease)
                        }
                    }
                }
            }
        }
    }
}

/// What a worker gets for one message: its logger, the stage's settings, its lease, a clock and
/// the means to make events and do network I/O — not the whole process.
public struct StageContext: Sendable {
    /// Carries `msgid` as metadata: every line about this message names it.
    public let logger: Logger
    public let settings: StageSettings
    public let redriven: Bool
    public let lease: Lease
    /// For network I/O (egress' SMTP sessions).
    public let eventLoopGroup: any EventLoopGroup
    public let site: String
    public let instance: String
    let clock: @Sendable () -> Date

    public init(logger: Logger, settings: StageSettings, redriven: Bool, lease: Lease,
                eventLoopGroup: any EventLoopGroup, site: String, instance: String,
                clock: @escaping @Sendable () -> Date = { Date() }) {
        self.logger = logger
        self.settings = settings
        self.redriven = redriven
        self.lease = lease
        self.eventLoopGroup = eventLoopGroup
        self.site = site
        self.instance = instance
        self.clock = clock
    }

    public var now: Date { clock() }

    public func event(_ type: String, id: MessageID, facts: [String: JSONValue] = [:]) -> Event {
        Event(type: type, id: id, site: site, process: instance, facts: facts)
    }
}

public struct StageSettings: Sendable {
    public var name: String
    public var inputTopic: String
    public var outputTopics: [String]
    public var concurrency: Int
    public var lease: Duration
    public var redriveAfter: Duration
    public var redriveInterval: Duration
    public var retryDelay: Duration
    /// Age (from acceptance) past which a message that still fails in this stage is bounced.
    public var maxLifetime: Duration
    /// Whether a `retry` the worker returns is also given up after `maxLifetime`. Egress keeps
    /// its own per-recipient expiry and turns this off.
    public var expireRetries: Bool
    /// `/healthz` turns red when Redis has not answered this stage for this long.
    public var redisGrace: Duration
    /// Whether a claim counts only once the replicas of `store.accept_replicas` have it (egress:
    /// a primary cut off from its replicas must not let a delivery start that the promoted
    /// replica does not know is under way — it would deliver the message again).
    public var claimsWaitForReplicas = false

    public init(name: String, inputTopic: String, outputTopics: [String], config: Config,
                leaseKey: ConfigKey<Duration> = StageKeys.lease,
                lifetimeKey: ConfigKey<Duration> = StageKeys.maxLifetime, expireRetries: Bool = true) throws {
        self.name = name
        self.inputTopic = inputTopic
        self.outputTopics = outputTopics
        concurrency = try config.get(StageKeys.concurrency)
        lease = try config.get(leaseKey)
        redriveAfter = try config.get(StageKeys.redriveAfter)
        redriveInterval = try config.get(StageKeys.redriveInterval)
        retryDelay = try config.get(StageKeys.retryDelay)
        maxLifetime = try config.get(lifetimeKey)
        self.expireRetries = expireRetries
        redisGrace = try config.get(StageKeys.redisGrace)
    }
}

/// Runs one pipeline stage: consumes `inputTopic` from every registered producer, claims each
/// message's lease in Redis, lets the worker decide, records the outcome atomically, and only
/// then hands the message on. Redrive is a continuous stream: whenever a work slot is free and
/// messages are past their deadline (their process died, their frame was lost, their retry time
/// has come), it claims as many as there are free slots, so a due backlog drains at the
/// stage's full concurrency.
///
/// Recovery: every Redis or ZeroMQ error is retried by the loop that met it (with a short
/// backoff, logged once per failure and once on recovery); a loop that cannot go on ends the
/// process with an error so that the supervisor restarts it. `/healthz` is red while a loop is
/// dead or Redis has not answered for `stage.redis_grace`.
///
/// On SIGTERM it stops taking work and lets work in flight finish for `shutdown.drain_timeout`;
/// then it cancels it. Outcomes are recorded uncancelled, and interrupted work gives its lease
/// back at once, so another process can continue without waiting for the lease to run out.
public final class StageRunner: Service, Sendable {
    public let process: GatewayProcess
    public let settings: StageSettings
    let worker: any StageWorker
    let ndr: NDRSender
    /// Prefix of this runner's lease tokens. Every claim gets its own token (prefix + counter),
    /// so that two loops of the same process (receive and redrive) can never both hold a message.
    let ownerPrefix: String
    let claims = Locked<UInt64>(0)
    let stopping = Locked(false)
    let slots: WorkSlots
    /// Renews the leases of the messages in work.
    let leaseKeeper: LeaseKeeper
    let redisState = Locked<RedisWatch>(RedisWatch())
    let loopsAlive = Locked<Set<String>>([])
    /// Output topic → when a full-length hand-over to it last failed (nil: it works).
    let handOverFailing = Locked<[String: ContinuousClock.Instant]>([:])
    let processed: Counter
    let failed: Counter
    let redriven: Counter
    let quarantined: Counter
    let expired: Counter
    let leaseLost: Counter
    let duration: Metrics.Timer
    let pendingGauge: Gauge
    let overdueGauge: Gauge
    let heldGauge: Gauge
    let quarantineGauge: Gauge

    /// The loops a healthy stage runs.
    static let loopNames: Set<String> = ["receive", "redrive", "discover"]

    public init(process: GatewayProcess, settings: StageSettings, worker: any StageWorker) throws {
        self.process = process
        self.settings = settings
        self.worker = worker
        ndr = try NDRSender(config: process.config, site: process.site, instance: process.instance)
        ownerPrefix = "\(process.instance)/\(UUID().uuidString.prefix(8))"
        slots = WorkSlots(settings.concurrency)
        leaseKeeper = LeaseKeeper(leaseMilliseconds: settings.lease.milliseconds)
        let dims = [("stage", settings.name)]
        processed = Counter(label: "smg_stage_messages_total", dimensions: dims)
        failed = Counter(label: "smg_stage_failures_total", dimensions: dims)
        redriven = Counter(label: "smg_stage_redriven_total", dimensions: dims)
        quarantined = Counter(label: "smg_stage_quarantined_total", dimensions: dims)
        expired = Counter(label: "smg_stage_expired_total", dimensions: dims)
        leaseLost = Counter(label: "smg_stage_lease_lost_total", dimensions: dims)
        duration = Metrics.Timer(label: "smg_stage_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
        let topic = [("topic", settings.inputTopic)]
        pendingGauge = Gauge(label: "smg_pending_messages", dimensions: topic)
        overdueGauge = Gauge(label: "smg_pending_overdue_seconds", dimensions: topic)
        heldGauge = Gauge(label: "smg_held_messages")
        quarantineGauge = Gauge(label: "smg_quarantined_messages")
        process.addHealthCheck(settings.name) { [weak self] in
            guard let self else { return (true, "stopped") }
            return self.health()
        }
    }

    /// Green while every loop runs and Redis answered within `stage.redis_grace`.
    func health() -> (healthy: Bool, detail: String) {
        let alive = loopsAlive.withLock { $0 }
        let missing = Self.loopNames.subtracting(alive)
        if !missing.isEmpty && !isStopping {
            return (false, "stage \(settings.name): loop not running: \(missing.sorted().joined(separator: ","))")
        }
        if let since = redisState.withLock({ $0.failingSince }), ContinuousClock.now - since > settings.redisGrace {
            return (false, "stage \(settings.name): Redis unreachable for \(ContinuousClock.now - since)")
        }
        return (true, "stage \(settings.name) ok")
    }

    public func run() async throws {
        let puller = try BusPuller(context: process.zmq, logger: process.logger)
        var producers: [String: BusPusher] = [:]
        for topic in settings.outputTopics { producers[topic] = try process.makeProducer(topic: topic) }
        let outputs = producers
        let log = process.logger
        log.info("stage running", metadata: ["stage": .string(settings.name), "input": .string(settings.inputTopic),
                                             "outputs": .string(outputs.map { "\($0.key)=\($0.value.endpoint)" }.joined(separator: " "))])

        let work = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await self.loop("discover") { await self.discover(puller) } }
                group.addTask { try await self.loop("redrive") { await self.redriveLoop(outputs) } }
                group.addTask { try await self.loop("receive") { try await self.receiveLoop(puller, outputs) } }
                group.addTask { await self.gaugeLoop() }
                group.addTask { await self.leaseKeeper.run(stopping: { self.isStopping }) }
                try await group.waitForAll()
            }
        }
        let drain = process.drainTimeout
        try await withGracefulShutdownHandler {
            try await work.value
        } onGracefulShutdown: {
            self.stopping.withLock { $0 = true }
            self.slots.close()
            Task { await puller.close() }
            Task {
                // Work in flight gets `drain` to finish; then it is cancelled and handed back.
                try? await Task.sleep(for: drain)
                work.cancel()
            }
        }
        for pusher in outputs.values { await pusher.close() }
        log.info("stage stopped", metadata: ["stage": .string(settings.name)])
    }

    var isStopping: Bool { stopping.withLock { $0 } }

    /// Runs one of the stage's loops, tracked for `/healthz`. A loop that ends while the stage is
    /// not stopping is a fault: it ends the process (the supervisor restarts it).
    func loop(_ name: String, _ body: @Sendable () async throws -> Void) async throws {
        loopsAlive.withLock { _ = $0.insert(name) }
        defer { loopsAlive.withLock { _ = $0.remove(name) } }
        do {
            try await body()
        } catch is CancellationError where isStopping {
            return
        } catch {
            process.logger.critical("stage loop failed; exiting so the supervisor restarts the process",
                                    metadata: ["loop": .string(name), "error": "\(error)"])
            throw StageLoopFailure(loop: name, error: "\(error)")
        }
        if !isStopping && !Task.isCancelled {
            process.logger.critical("stage loop ended unexpectedly; exiting", metadata: ["loop": .string(name)])
            throw StageLoopFailure(loop: name, error: "ended")
        }
    }

    func newToken() -> String {
        "\(ownerPrefix)/\(claims.withLock { $0 += 1; return $0 })"
    }

    // MARK: - Redis trouble: logged once when it starts and once when it ends

    func redisFailed(_ what: String, _ error: any Error) {
        let first = redisState.withLock { s -> Bool in
            defer { if s.failingSince == nil { s.failingSince = ContinuousClock.now } }
            let now = ContinuousClock.now
            if s.failingSince == nil || now - s.lastLogged > .seconds(10) {
                s.lastLogged = now
                return true
            }
            return false
        }
        if first { process.logger.warning("redis unavailable; retrying", metadata: ["during": .string(what), "error": "\(error)"]) }
    }

    func redisWorked() {
        let since = redisState.withLock { s -> ContinuousClock.Instant? in
            defer { s.failingSince = nil }
            return s.failingSince
        }
        if let since { process.logger.notice("redis available again", metadata: ["after": "\(ContinuousClock.now - since)"]) }
    }

    // MARK: - loops

    /// Connects to every producer of the input topic that the registry lists, and follows changes
    /// (a producer that restarted on a new port is found within a second). An endpoint this
    /// process must not use (plaintext while CURVE is on, a CURVE one while it is off) or whose
    /// server refused this process's key is logged as an error; the stage keeps watching.
    func discover(_ puller: BusPuller) async {
        let topic = settings.inputTopic
        while !isStopping {
            do {
                let live = try await process.registry.endpoints(kind: topic)
                redisWorked()
                let report = await puller.follow(live)
                for endpoint in report.connected {
                    process.logger.info("connected to producer", metadata: ["topic": .string(topic), "endpoint": .string(endpoint)])
                }
                for problem in report.problems {
                    process.logger.error("cannot use producer endpoint", metadata: [
                        "topic": .string(topic), "endpoint": .string(problem.entry), "error": .string(problem.problem),
                    ])
                }
            } catch {
                redisFailed("producer discovery", error)
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// Takes the next frame, then a work slot, and works on it in its own task. (A slot is not
    /// held while waiting for a frame, so redrive always gets the free slots; at most one frame
    /// waits in hand for a slot, the rest stay in ZeroMQ's bounded queues.)
    func receiveLoop(_ puller: BusPuller, _ outputs: [String: BusPusher]) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            while !isStopping {
                let message: BusMessage?
                do {
                    message = try await puller.receive()
                } catch {
                    if isStopping { return }
                    throw error
                }
                guard let message else { return }   // closed: shutting down
                guard let id = MessageID(String(decoding: message.payload, as: UTF8.self)) else {
                    process.logger.warning("dropping malformed frame", metadata: ["topic": .string(message.topic)])
                    continue
                }
                // Shutting down: the frame is dropped, the message stays pending for another process.
                guard await slots.acquire() else { return }
                group.addTask {
                    defer { self.slots.release() }
                    await self.claimAndHandle(id, outputs)
                }
            }
        }
    }

    func claimAndHandle(_ id: MessageID, _ outputs: [String: BusPusher]) async {
        let token = newToken()
        let claimedAt = ContinuousClock.now
        let claim: MessageStore.Claim
        do {
            claim = try await process.store.claimAndLoad(id, topic: settings.inputTopic, owner: token,
                                                         leaseMilliseconds: settings.lease.milliseconds,
                                                         replicated: settings.claimsWaitForReplicas)
            redisWorked()
        } catch let error as StoreError where error.code == .corruptRecord {
            await quarantine(id, token: token, reason: error.message)
            return
        } catch {
            // Redis trouble: the message stays pending and is redriven when Redis is back.
            redisFailed("claim", error)
            try? await Task.sleep(for: .milliseconds(200))
            return
        }
        switch claim {
        case .notYours: return   // done already, or someone else has it
        case .missing:
            await handle(id, token: token, claimedAt: claimedAt, preloaded: nil, outputs: outputs, redriven: false)
        case .claimed(let message):
            await handle(id, token: token, claimedAt: claimedAt, preloaded: message, outputs: outputs, redriven: false)
        }
    }

    /// Claims due messages as long as there are free slots; pauses `stage.redrive_interval` only
    /// when nothing more is due.
    func redriveLoop(_ outputs: [String: BusPusher]) async {
        var backoff = Duration.milliseconds(100)
        await withDiscardingTaskGroup { group in
            while !isStopping {
                var free = slots.tryAcquire(upTo: settings.concurrency)
                if free == 0 {
                    guard await slots.acquire() else { return }
                    free = 1 + slots.tryAcquire(upTo: settings.concurrency - 1)
                }
                let token = newToken()
                let claimedAt = ContinuousClock.now
                let ids: [MessageID]
                do {
                    ids = try await process.store.claimExpired(topic: settings.inputTopic, owner: token,
                                                               leaseMilliseconds: settings.lease.milliseconds, limit: free,
                                                               replicated: settings.claimsWaitForReplicas)
                    redisWorked()
                    backoff = .milliseconds(100)
                } catch {
                    slots.release(free)
                    redisFailed("redrive", error)
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(1))
                    continue
                }
                slots.release(free - ids.count)
                if !ids.isEmpty { redriven.increment(by: ids.count) }
                for id in ids {
                    group.addTask {
                        defer { self.slots.release() }
                        await self.handle(id, token: token, claimedAt: claimedAt, preloaded: nil, outputs: outputs,
                                          redriven: true)
                    }
                }
                if ids.count < free { try? await Task.sleep(for: settings.redriveInterval) }
            }
        }
    }

    /// Samples the stage's backlog for metrics every few seconds (and so also notices Redis
    /// coming back when the stage is idle).
    func gaugeLoop() async {
        while !isStopping {
            do {
                let (count, overdue) = try await process.store.backlog(settings.inputTopic)
                pendingGauge.record(count)
                overdueGauge.record(Double(overdue) / 1000)
                let (held, quarantine) = try await process.store.heldAndQuarantined()
                heldGauge.record(held)
                quarantineGauge.record(quarantine)
                redisWorked()
            } catch {
                redisFailed("backlog metrics", error)
            }
            try? await Task.sleep(for: .seconds(2))
        }
    }

    // MARK: - one message

    func quarantine(_ id: MessageID, token: String, reason: String) async {
        process.logger.error("unreadable message record; quarantined", metadata: ["msgid": .string(id.rawValue),
                                                                                  "reason": .string(reason)])
        let event = process.event(EventType.quarantined, id: id, facts: [
            "stage": .string(settings.name), "topic": .string(settings.inputTopic), "reason": .string(reason),
        ])
        do {
            if try await uncancelled({ try await self.process.store.quarantine(id, topic: self.settings.inputTopic,
                                                                                owner: token, event: event) }) {
                quarantined.increment()
                await process.publish([event])
            }
        } catch {
            redisFailed("quarantine", error)
        }
    }

    /// Processes one message whose lease this process holds (`preloaded` if the claim read it).
    ///
    /// While the worker runs, the lease is renewed (`LeaseKeeper`) before half of it has run, so only a dead or
    /// stalled process loses its messages to redrive. Recording the outcome (commit, release,
    /// events) runs in a task that does not inherit cancellation: a worker interrupted at shutdown
    /// still gives its lease back, and a delivery that completed is still recorded.
    func handle(_ id: MessageID, token owner: String, claimedAt: ContinuousClock.Instant, preloaded: StoredMessage?,
                outputs: [String: BusPusher], redriven: Bool) async {
        var logger = process.logger
        logger[metadataKey: "msgid"] = .string(id.rawValue)
        logger[metadataKey: "stage"] = .string(settings.name)
        let started = ContinuousClock.now
        let store = process.store
        let topic = settings.inputTopic
        let lease = Lease(id: id, topic: topic, owner: owner, milliseconds: settings.lease.milliseconds, store: store,
                          claimedAt: claimedAt)
        leaseKeeper.keep(lease, logger: logger)
        defer { leaseKeeper.drop(lease) }
        let loaded: StoredMessage?
        do {
            if let preloaded { loaded = preloaded } else { loaded = try await store.load(id) }
        } catch let error as StoreError where error.code == .corruptRecord {
            await quarantine(id, token: owner, reason: error.message)
            return
        } catch {
            redisFailed("load", error)
            return   // the lease runs out and the message is redriven
        }
        guard let message = loaded else {
            logger.error("message record missing; dropping its pending entry")
            let missing = process.event(EventType.stageError, id: id,
                                        facts: ["stage": .string(settings.name), "error": "record missing"])
            _ = await commitDurably(id, owner: owner, StageOutcome(events: [missing], transition: .done), logger: logger)
            return
        }
        let context = StageContext(logger: logger, settings: settings, redriven: redriven, lease: lease,
                                   eventLoopGroup: process.group, site: process.site, instance: process.instance)
        var outcome: StageOutcome
        do {
            outcome = try await worker.process(message, context: context)
            if case .retry = outcome.transition, settings.expireRetries, let old = tooOld(message) {
                outcome = expireOutcome(message, after: old, reason: Self.lastReason(outcome), context: context)
            }
        } catch is CancellationError {
            // Shutdown interrupted the work: hand the message back at once for another process.
            logger.notice("interrupted by shutdown; lease handed back")
            _ = try? await uncancelled {
                try await store.release(id, topic: topic, owner: owner, retryAfterMilliseconds: 0)
            }
            return
        } catch {
            failed.increment()
            if let old = tooOld(message) {
                logger.error("stage keeps failing past the message's maximum age; bouncing it", metadata: ["error": "\(error)"])
                outcome = expireOutcome(message, after: old, reason: "\(error)", context: context)
            } else {
                logger.warning("stage failed; message will be retried", metadata: ["error": "\(error)"])
                outcome = StageOutcome(
                    events: [context.event(EventType.stageError, id: id,
                                           facts: ["stage": .string(settings.name), "error": .string("\(error)")])],
                    transition: .retry(afterMilliseconds: settings.retryDelay.milliseconds))
            }
        }
        if redriven {
            outcome.events.insert(context.event(EventType.redriven, id: id, facts: ["stage": .string(settings.name)]),
                                  at: 0)
        }
        leaseKeeper.drop(lease)
        let eventJSON = outcome.events.map { $0.jsonBytes() }
        guard await commitDurably(id, owner: owner, outcome, eventJSON: eventJSON, logger: logger) else { return }
        processed.increment()
        duration.recordNanoseconds((ContinuousClock.now - started).nanosecondsClamped)
        await process.publish(outcome.events, json: eventJSON)
        if !outcome.newMessages.isEmpty { await process.publish(outcome.newMessages.map(\.accepted)) }
        if case .forward(let next, _) = outcome.transition {
            guard let pusher = outputs[next] else {
                logger.error("no producer for topic \(next); the message will be redriven")
                return
            }
            // While the next stage is absent or full, hand-over attempts are short: the message is
            // already in the next pending set (redriven from there), and a work slot must not
            // wait half a second per message for a stage that is down.
            let struggling = handOverFailing.withLock { $0[next].map { ContinuousClock.now - $0 < .seconds(1) } ?? false }
            let sent = await pusher.send(BusMessage(topic: next, payload: Array(id.rawValue.utf8)),
                                         timeout: struggling ? .milliseconds(5) : .milliseconds(500))
            // Only a full-length attempt that failed starts another second of short ones.
            handOverFailing.withLock { if sent { $0[next] = nil } else if !struggling { $0[next] = ContinuousClock.now } }
            if !sent {
                logger.debug("next stage busy or absent; message waits for redrive", metadata: ["topic": .string(next)])
            }
        }
        logger.debug("processed", metadata: ["events": .string(outcome.events.map(\.type).joined(separator: ","))])
    }

    /// Commits `outcome`, retrying while Redis is unavailable (the commit is idempotent for the
    /// lease token). True when recorded by this commit. When the lease was lost, an outcome with
    /// external effects is still recorded as far as it can be (`recordOrphan`) and false returned.
    /// Gives up after `stage.lease` × 10 (at least a minute; 10 minutes for external effects) or,
    /// once the process is stopping, after the drain timeout — the message is then redriven.
    func commitDurably(_ id: MessageID, owner: String, _ outcome: StageOutcome, eventJSON: [[UInt8]]? = nil,
                       logger: Logger) async -> Bool {
        let store = process.store
        let topic = settings.inputTopic
        let patience: Duration = outcome.externalEffects ? .seconds(600) : max(.seconds(60), settings.lease * 10)
        let began = ContinuousClock.now
        var backoff = Duration.milliseconds(50)
        var stoppingSince: ContinuousClock.Instant?
        while true {
            do {
                let recorded = try await uncancelled {
                    try await store.commit(id, topic: topic, owner: owner, events: outcome.events, fields: outcome.fields,
                                           newMessages: outcome.newMessages, transition: outcome.transition,
                                           eventJSON: eventJSON, replicated: outcome.externalEffects)
                }
                redisWorked()
                if recorded {
                    worker.committed(outcome)
                    return true
                }
                leaseLost.increment()
                if outcome.externalEffects {
                    let orphan = try? await uncancelled {
                        try await store.recordOrphan(id, events: outcome.events, fields: outcome.fields)
                    }
                    if orphan != nil { worker.committed(outcome) }
                    let written = orphan ?? 0
                    logger.warning("lease lost before commit; outcome of the delivery recorded without a transition",
                                   metadata: ["recipients_recorded": "\(written)"])
                } else {
                    logger.notice("lease lost before commit; result discarded (another process has the message)")
                }
                return false
            } catch {
                redisFailed("commit", error)
                let now = ContinuousClock.now
                if isStopping, stoppingSince == nil { stoppingSince = now }
                if now - began > patience || (stoppingSince.map { now - $0 > process.drainTimeout } ?? false) {
                    if (error as? RedisError)?.serverErrorPrefix == "NOTREPLICATED" {
                        // The commit ran on the primary; only the replicas' confirmation is missing.
                        logger.error("stage outcome recorded on the Redis primary, but no replica confirmed it; if that primary fails before it replicates, the message will be redriven",
                                     metadata: ["error": "\(error)", "external_effects": "\(outcome.externalEffects)"])
                    } else {
                        logger.error("could not record the stage's outcome; the message will be redriven",
                                     metadata: ["error": "\(error)", "external_effects": "\(outcome.externalEffects)"])
                    }
                    return false
                }
                // Not cancellable: a cancelled sleep would turn this into a busy loop at shutdown.
                let pause = backoff
                _ = try? await uncancelled { try await Task.sleep(for: pause) }
                backoff = min(backoff * 2, .seconds(1))
            }
        }
    }

    /// How long ago the message was accepted, if that is longer than the stage's maximum age.
    func tooOld(_ message: StoredMessage) -> Duration? {
        let age = Date().timeIntervalSince(message.envelope.submission.receivedAt)
        let limit = Double(settings.maxLifetime.milliseconds) / 1000
        return age >= limit ? .milliseconds(Int64(age * 1000)) : nil
    }

    static func lastReason(_ outcome: StageOutcome) -> String {
        for event in outcome.events.reversed() {
            if case .string(let text)? = event.facts["error"] { return text }
        }
        return "the stage could not process it"
    }

    /// The outcome for a message that has failed in this stage for longer than its maximum age:
    /// every recipient not yet final is bounced (`5.4.7`, RFC 3463: delivery time expired) with
    /// the reason, one NDR says what failed, and the message is done.
    func expireOutcome(_ message: StoredMessage, after age: Duration, reason: String, context: StageContext)
        -> StageOutcome
    {
        expired.increment()
        let id = message.id
        let hours = Int(age.components.seconds / 3600)
        let reply = SMTPReply.expired(stage: settings.name, hours: hours, reason: reason).description
        var events = [context.event(EventType.expired, id: id, facts: [
            "stage": .string(settings.name), "reason": .string(reason), "age_s": .int(Int(age.components.seconds)),
        ])]
        let bounce = context.bounceOpenRecipients(
            of: message, reply: reply, status: "5.4.7", reason: "expired", ndr: ndr, kind: "expired",
            ndrReason: "it could not be processed (\(settings.name)) within the gateway's time limit: \(reason).")
        events += bounce.events
        let fields = bounce.fields, newMessages = bounce.newMessages
        return StageOutcome(events: events, fields: fields, newMessages: newMessages, transition: .done)
    }

    /// Runs `body` in a task that does not inherit the caller's cancellation: recording an outcome
    /// must not be skipped because shutdown cancelled the work that produced it.
    func uncancelled<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await Task { try await body() }.value
    }
}

extension StageContext {
    /// Bounces every recipient of `message` that is not final yet with `reply` (`bounced` events
    /// with `reason`), and writes one NDR of `kind` listing them, with `ndrReason` as the
    /// explanation (none for a null sender): the parts of an outcome that ends a message.
    public func bounceOpenRecipients(of message: StoredMessage, reply: String, status: String, reason: String,
                                     ndr: NDRSender, kind: String, ndrReason: String)
        -> (fields: [String: String], events: [Event], newMessages: [NewMessage])
    {
        var fields: [String: String] = [:]
        var events: [Event] = []
        var failed: [DSNRecipient] = []
        for var recipient in message.recipients where !recipient.state.isFinal {
            recipient.state = .bounced
            recipient.lastReply = reply
            recipient.nextAttempt = nil
            fields["rcpt:\(recipient.address)"] = recipient.jsonString()
            events.append(event(EventType.bounced, id: message.id, facts: [
                "recipient": .string(recipient.address), "reply": .string(reply), "reason": .string(reason),
            ]))
            failed.append(DSNRecipient(address: recipient.address, status: status, diagnostic: reply))
        }
        var newMessages: [NewMessage] = []
        if let (report, sent) = ndr.make(for: message, recipients: failed, reason: ndrReason, kind: kind, now: now) {
            newMessages.append(report)
            events.append(sent)
        }
        return (fields, events, newMessages)
    }
}

/// A stage loop that could not go on; ends the process so its supervisor restarts it.
public struct StageLoopFailure: Error, CustomStringConvertible {
    public var loop: String
    public var error: String
    public var description: String { "stage loop \(loop) failed: \(error)" }
}

struct RedisWatch {
    var failingSince: ContinuousClock.Instant?
    var lastLogged = ContinuousClock.now - .seconds(3600)
}

/// A counting semaphore for the stage's work slots. `acquire` returns false once closed (shutdown).
final class WorkSlots: Sendable {
    private struct State {
        var free: Int
        var closed = false
        var waiters: [CheckedContinuation<Bool, Never>] = []
    }
    private let state: Locked<State>

    init(_ count: Int) { state = Locked(State(free: count)) }

    func acquire() async -> Bool {
        await withCheckedContinuation { (cont: CheckedContinuation<Bool, Never>) in
            let now: Bool? = state.withLock { s in
                if s.closed { return false }
                if s.free > 0 { s.free -= 1; return true }
                s.waiters.append(cont)
                return nil
            }
            if let now { cont.resume(returning: now) }
        }
    }

    /// Takes up to `n` slots without waiting; returns how many it took.
    func tryAcquire(upTo n: Int) -> Int {
        state.withLock { s in
            if s.closed || n <= 0 { return 0 }
            let k = min(n, s.free)
            s.free -= k
            return k
        }
    }

    func release(_ n: Int = 1) {
        guard n > 0 else { return }
        let wake: [CheckedContinuation<Bool, Never>] = state.withLock { s in
            s.free += n
            var out: [CheckedContinuation<Bool, Never>] = []
            while s.free > 0, !s.waiters.isEmpty {
                s.free -= 1
                out.append(s.waiters.removeFirst())
            }
            return out
        }
        for c in wake { c.resume(returning: true) }
    }

    func close() {
        let wake: [CheckedContinuation<Bool, Never>] = state.withLock { s in
            s.closed = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for c in wake { c.resume(returning: false) }
    }
}

extension Duration {
    var nanosecondsClamped: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
