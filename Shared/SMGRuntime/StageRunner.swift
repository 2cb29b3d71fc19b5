public import Logging
import SMGSync
public import SMGCore
public import SMGStore
import SMGBus
public import ServiceLifecycle
import Metrics
import Foundation

/// What a stage decided about one message. Checks return verdicts as data: events to record,
/// fields to set on the message record, and where the message goes next.
public struct StageOutcome: Sendable {
    public var events: [Event]
    public var fields: [String: String]
    public var transition: Transition

    public init(events: [Event], fields: [String: String] = [:], transition: Transition) {
        self.events = events
        self.fields = fields
        self.transition = transition
    }
}

/// The work of one stage. `process` may be called more than once for a message (a redrive after
/// a crash); the runner makes sure only one result is ever recorded and handed on.
public protocol StageWorker: Sendable {
    func process(_ message: StoredMessage, context: StageContext) async throws -> StageOutcome
}

/// Per-message context handed to a worker.
public struct StageContext: Sendable {
    public let process: GatewayProcess
    /// Carries `msgid` as metadata: every line about this message names it.
    public let logger: Logger
    public let settings: StageSettings
    public let redriven: Bool

    public func event(_ type: String, id: MessageID, facts: [String: JSONValue] = [:]) -> Event {
        process.event(type, id: id, facts: facts)
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

    public init(name: String, inputTopic: String, outputTopics: [String], config: Config,
                leaseKey: ConfigKey<Duration> = StageKeys.lease) throws {
        self.name = name
        self.inputTopic = inputTopic
        self.outputTopics = outputTopics
        concurrency = try config.get(StageKeys.concurrency)
        lease = try config.get(leaseKey)
        redriveAfter = try config.get(StageKeys.redriveAfter)
        redriveInterval = try config.get(StageKeys.redriveInterval)
        retryDelay = try config.get(StageKeys.retryDelay)
    }
}

/// Runs one pipeline stage: consumes `inputTopic` from every registered producer, claims each
/// message's lease in Redis, lets the worker decide, records the outcome atomically, and only
/// then hands the message on. A redrive loop takes over messages whose lease ran out (their
/// process died, or their frame was lost) and messages whose retry time has come.
///
/// On SIGTERM it stops taking work and lets work in flight finish for `shutdown.drain_timeout`;
/// then it cancels it. Outcomes are recorded uncancelled, and interrupted work gives its lease
/// back at once, so another process can continue without waiting for the lease to run out.
public final class StageRunner: Service, Sendable {
    public let process: GatewayProcess
    public let settings: StageSettings
    let worker: any StageWorker
    /// Prefix of this runner's lease tokens. Every claim gets its own token (prefix + counter),
    /// so that two loops of the same process (receive and redrive) can never both hold a message.
    let ownerPrefix: String
    let claims = Locked<UInt64>(0)
    let stopping = Locked(false)
    let processed: Counter
    let failed: Counter
    let redriven: Counter
    let duration: Metrics.Timer

    public init(process: GatewayProcess, settings: StageSettings, worker: any StageWorker) {
        self.process = process
        self.settings = settings
        self.worker = worker
        ownerPrefix = "\(process.instance)/\(UUID().uuidString.prefix(8))"
        let dims = [("stage", settings.name)]
        processed = Counter(label: "smg_stage_messages_total", dimensions: dims)
        failed = Counter(label: "smg_stage_failures_total", dimensions: dims)
        redriven = Counter(label: "smg_stage_redriven_total", dimensions: dims)
        duration = Metrics.Timer(label: "smg_stage_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
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
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.discover(puller) }
                group.addTask { await self.redriveLoop(outputs) }
                for _ in 0..<self.settings.concurrency {
                    group.addTask { await self.receiveLoop(puller, outputs) }
                }
                await group.waitForAll()
            }
        }
        let drain = process.drainTimeout
        await withGracefulShutdownHandler {
            await work.value
        } onGracefulShutdown: {
            self.stopping.withLock { $0 = true }
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

    func newToken() -> String {
        "\(ownerPrefix)/\(claims.withLock { $0 += 1; return $0 })"
    }

    /// Connects to every producer of the input topic that the registry lists, and follows changes.
    func discover(_ puller: BusPuller) async {
        var connected: Set<String> = []
        while !isStopping {
            do {
                let live = Set(try await process.registry.endpoints(kind: settings.inputTopic))
                for endpoint in live.subtracting(connected) {
                    try await puller.connect(endpoint)
                    process.logger.info("connected to producer", metadata: ["topic": .string(settings.inputTopic),
                                                                             "endpoint": .string(endpoint)])
                }
                for endpoint in connected.subtracting(live) { try? await puller.disconnect(endpoint) }
                connected = live
            } catch {
                process.logger.warning("producer discovery failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    func receiveLoop(_ puller: BusPuller, _ outputs: [String: BusPusher]) async {
        while !isStopping {
            let message: BusMessage?
            do { message = try await puller.receive() } catch { return }
            guard let message else { return }
            guard let id = MessageID(String(decoding: message.payload, as: UTF8.self)) else {
                process.logger.warning("dropping malformed frame", metadata: ["topic": .string(message.topic)])
                continue
            }
            let claim: MessageStore.Claim
            let token = newToken()
            do {
                claim = try await process.store.claimAndLoad(id, topic: settings.inputTopic, owner: token,
                                                             leaseMilliseconds: settings.lease.milliseconds)
            } catch {
                // Redis trouble: the message stays pending and is redriven later.
                process.logger.warning("claim failed", metadata: ["msgid": .string(id.rawValue), "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(200))
                continue
            }
            switch claim {
            case .notYours: continue   // done already, or someone else has it
            case .missing: await handle(id, token: token, preloaded: nil, outputs: outputs, redriven: false)
            case .claimed(let message):
                await handle(id, token: token, preloaded: message, outputs: outputs, redriven: false)
            }
        }
    }

    func redriveLoop(_ outputs: [String: BusPusher]) async {
        while !isStopping {
            try? await Task.sleep(for: settings.redriveInterval)
            if isStopping { return }
            let ids: [MessageID]
            let token = newToken()
            do {
                ids = try await process.store.claimExpired(topic: settings.inputTopic, owner: token,
                                                           leaseMilliseconds: settings.lease.milliseconds,
                                                           limit: settings.concurrency)
            } catch {
                process.logger.warning("redrive scan failed", metadata: ["error": "\(error)"])
                continue
            }
            guard !ids.isEmpty else { continue }
            redriven.increment(by: ids.count)
            await withTaskGroup(of: Void.self) { group in
                for id in ids { group.addTask { await self.handle(id, token: token, preloaded: nil, outputs: outputs, redriven: true) } }
            }
        }
    }

    /// Processes one message whose lease this process holds (`preloaded` if the claim read it).
    ///
    /// While the worker runs, the lease is renewed every third of its length, so only a dead
    /// process loses its messages to redrive. Recording the outcome (commit, release, events) runs
    /// in a task that does not inherit cancellation: a worker interrupted at shutdown still gives
    /// its lease back, and a delivery that completed is still recorded.
    func handle(_ id: MessageID, token owner: String, preloaded: StoredMessage?, outputs: [String: BusPusher],
                redriven: Bool) async {
        var logger = process.logger
        logger[metadataKey: "msgid"] = .string(id.rawValue)
        logger[metadataKey: "stage"] = .string(settings.name)
        let started = ContinuousClock.now
        let store = process.store
        let topic = settings.inputTopic
        let lease = settings.lease.milliseconds
        let heartbeat = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(max(50, lease / 3)))
                if Task.isCancelled { return }
                if (try? await store.renew(id, topic: topic, owner: owner, leaseMilliseconds: lease)) == false {
                    logger.warning("lease lost while working")
                    return
                }
            }
        }
        defer { heartbeat.cancel() }
        do {
            let loaded: StoredMessage?
            if let preloaded { loaded = preloaded } else { loaded = try await process.store.load(id) }
            guard let message = loaded else {
                logger.error("message record missing; dropping its pending entry")
                _ = try await uncancelled {
                    try await store.commit(
                        id, topic: topic, owner: owner,
                        events: [self.process.event(EventType.stageError, id: id,
                                                    facts: ["stage": .string(self.settings.name), "error": "record missing"])],
                        transition: .done)
                }
                return
            }
            let context = StageContext(process: process, logger: logger, settings: settings, redriven: redriven)
            var outcome = try await worker.process(message, context: context)
            if redriven {
                outcome.events.insert(process.event(EventType.redriven, id: id, facts: ["stage": .string(settings.name)]),
                                      at: 0)
            }
            let decided = outcome
            heartbeat.cancel()
            let recorded = try await uncancelled {
                try await store.commit(id, topic: topic, owner: owner, events: decided.events, fields: decided.fields,
                                       transition: decided.transition)
            }
            guard recorded else {
                logger.notice("lease lost before commit; result discarded (another process has the message)")
                return
            }
            processed.increment()
            duration.recordNanoseconds((ContinuousClock.now - started).nanosecondsClamped)
            await process.publish(outcome.events)
            if case .forward(let next, _) = outcome.transition {
                guard let pusher = outputs[next] else {
                    logger.error("no producer for topic \(next); the message will be redriven")
                    return
                }
                let sent = await pusher.send(BusMessage(topic: next, payload: Array(id.rawValue.utf8)),
                                             timeout: .milliseconds(500))
                if !sent {
                    logger.debug("next stage busy or absent; message waits for redrive", metadata: ["topic": .string(next)])
                }
            }
            logger.debug("processed", metadata: ["events": .string(outcome.events.map(\.type).joined(separator: ","))])
        } catch is CancellationError {
            // Shutdown interrupted the work: hand the message back at once for another process.
            logger.notice("interrupted by shutdown; lease handed back")
            _ = try? await uncancelled {
                try await store.release(id, topic: topic, owner: owner, retryAfterMilliseconds: 0)
            }
        } catch {
            failed.increment()
            logger.warning("stage failed; message will be retried", metadata: ["error": "\(error)"])
            let event = process.event(EventType.stageError, id: id,
                                      facts: ["stage": .string(settings.name), "error": .string("\(error)")])
            let retry = settings.retryDelay.milliseconds
            _ = try? await uncancelled {
                try? await self.process.record([event])
                return try await store.release(id, topic: topic, owner: owner, retryAfterMilliseconds: retry)
            }
        }
    }

    /// Runs `body` in a task that does not inherit the caller's cancellation: recording an outcome
    /// must not be skipped because shutdown cancelled the work that produced it.
    func uncancelled<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await Task { try await body() }.value
    }
}

extension Duration {
    var nanosecondsClamped: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
