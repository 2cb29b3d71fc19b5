import Foundation
import Logging
import Metrics
import NIOCore
import SMGAccounts
import SMGCore
import SMGNDR
import SMGRuntime
import SMGSpam
import SMGStore
import SMGSync

/// smg-classifier — the spam stage (R10, R11). Consumes `mail.scanned`, gives every message a
/// category (`clean`, `bulk`, `suspect`, `spam`), a score and reasons, records them on the message
/// and in a `classified` event, and hands it on to `mail.classified`; the signer routes it by the
/// lane recorded here. It also watches each login's and customer's behaviour (the
/// compromised-account brake): a tripped brake is recorded, announced, and the account's mail in
/// the pipeline is held. It fails closed: without a model or a verdict the message waits.
struct Classifier: StageWorker {
    let engine: SpamEngine
    let models: SpamModelCache
    let rspamd: RspamdClient?
    let rspamdRequired: Bool
    let addHeader: Bool
    let brakes: BrakeStore?
    let defaultLimits: BrakeLimits
    let customers: CustomerCache
    let notify: String?
    let ndrDomain: String
    let site: String
    let instance: String
    /// `smg_brakes_tripped_total` (`BrakeMetrics`).
    let tripped: Counter

    func process(_ message: StoredMessage, context: StageContext) async throws -> StageOutcome {
        let envelope = message.envelope
        // NDRs and notices: not the customer's sending (neither scored nor counted by the brake).
        let gatewayWritten = envelope.isGatewayWritten
        let verdict: SpamVerdict
        if gatewayWritten {
            verdict = SpamVerdict(category: .clean, score: 0, lane: .good, probability: 0.5,
                                  rules: [RuleHit(name: "GATEWAY_NOTICE", points: 0, description: "written by the gateway itself (a delivery report or notice)")],
                                  evidence: [], engine: "none")
        } else {
            verdict = try await classify(message)
        }
        let reasons = verdict.reasons
        var events = [context.event(EventType.classified, id: message.id, facts: [
            "category": .string(verdict.category.rawValue), "score": .double(Self.round(verdict.score)),
            "lane": .string(verdict.lane.rawValue), "engine": .string(verdict.engine),
            "reasons": .array(reasons.map { .string($0) }),
        ])]
        var fields = ["lane": verdict.lane.rawValue, "category": verdict.category.rawValue,
                      "score": SpamVerdict.formatScore(verdict.score), "reasons": reasons.joined(separator: "\n")]
        if addHeader {
            let rules = verdict.rules.filter { $0.points != 0 }.map(\.name).joined(separator: ",")
            fields[StoredMessage.addedHeadersField] = "X-SMG-Spam: \(verdict.category.rawValue); score=\(SpamVerdict.formatScore(verdict.score)); lane=\(verdict.lane.rawValue)"
                + (rules.isEmpty ? "" : "; rules=\(rules)") + "\r\n"
        }
        var newMessages: [NewMessage] = []
        var hold = false
        if let brakes, !gatewayWritten {
            var subjects: [(String, BrakeLimits)] = []
            var limits = defaultLimits
            if let id = envelope.customer, let customer = try await customers.get(id), let own = customer.brake { limits = own }
            if let login = envelope.submission.authenticatedAs { subjects.append((BrakeStore.loginSubject(login), limits)) }
            if let id = envelope.customer { subjects.append((BrakeStore.customerSubject(id), limits)) }
            if !subjects.isEmpty {
                let domains = Set(envelope.recipients.map(\.domain).filter { !$0.isEmpty })
                let seen = try await brakes.observe(subjects: subjects.map { ($0.0, $0.1) }, recipientDomains: domains,
                                                    badVerdict: verdict.category == .spam || verdict.category == .suspect)
                for (subject, observation) in zip(subjects.map(\.0), seen) {
                    switch observation {
                    case .fine: break
                    case .braked: hold = true
                    case .tripped(let reason, let action):
                        hold = true
                        tripped.increment()
                        events.append(context.event(EventType.accountBraked, id: message.id, facts: [
                            "subject": .string(subject), "reason": .string(reason), "action": .string(action.rawValue),
                            "customer": envelope.customer.map { .string($0) } ?? .null,
                        ]))
                        context.logger.warning("account braked", metadata: ["subject": "\(subject)", "reason": "\(reason)"])
                        if let notify {
                            newMessages.append(OperatorNotice.make(
                                about: message.id, kind: "brake/\(subject)", to: notify,
                                subject: "Account braked: \(subject)",
                                text: Self.noticeText(subject: subject, reason: reason, action: action, message: message),
                                domain: ndrDomain, site: site, instance: instance))
                        }
                    }
                }
            }
        }
        if hold { fields["held_reason"] = "account braked" }
        return StageOutcome(events: events, fields: fields, newMessages: newMessages,
                            transition: hold ? .hold(releaseTo: Topic.classified)
                                : .forward(topic: Topic.classified,
                                           redriveAfterMilliseconds: context.settings.redriveAfter.milliseconds))
    }

    func classify(_ message: StoredMessage) async throws -> SpamVerdict {
        if let rspamd {
            let e = message.envelope
            do {
                let result = try await rspamd.check(message.body, envelope: RspamdClient.Envelope(
                    sender: e.sender, recipients: e.recipients.map(\.address), clientAddress: e.submission.clientAddress,
                    helo: e.submission.heloName, login: e.submission.authenticatedAs, queueID: message.id.rawValue))
                let bulk = !SpamRules.bulkMarkers(headers: FeatureExtractor.headerFields(of: message.body)).isEmpty
                return RspamdClient.verdict(result, policy: engine.policy, bulk: bulk)
            } catch where !rspamdRequired {
                // Configured as optional: our own engine decides.
            }
        }
        let model = try await models.current()
        return engine.classify(message.body, model: model)
    }

    static func round(_ v: Double) -> Double { (v * 100).rounded() / 100 }

    static func noticeText(subject: String, reason: String, action: BrakeAction, message: StoredMessage) -> String {
        """
        The gateway braked \(subject).

        Why: \(reason).
        Since: \(Timestamp.format(Date())), triggered by message \(message.id.rawValue) (customer \(message.envelope.customer ?? "-")).

        What happens now: \(action == .refuse ? "new mail from this account is refused with 451 4.7.1" : "new mail from this account is accepted and held"); its mail still in the pipeline is held (smgctl queue --state held).

        If the account is fine (a planned campaign), lift the brake:
            smgctl account release \(subject.hasPrefix("login:") ? String(subject.dropFirst(6)) : subject)
        and release the held messages with smgctl queue release <id>. If it was taken over, reset its password
        (smgctl account passwd) before releasing, and delete the held messages instead.
        """
    }
}

/// Customers' brake limits, read from Redis at most every 30 s per customer.
final class CustomerCache: Sendable {
    let store: AccountStore
    let entries = Locked<[String: (customer: Customer?, until: ContinuousClock.Instant)]>([:])

    init(store: AccountStore) { self.store = store }

    func get(_ id: String) async throws -> Customer? {
        let now = ContinuousClock.now
        if let hit = entries.withLock({ $0[id] }), hit.until > now { return hit.customer }
        let customer = try await store.customer(id)
        entries.withLock { $0[id] = (customer, now.advanced(by: .seconds(30))) }
        return customer
    }
}

await ServiceMain.run(program: "smg-classifier", keys: StageKeys.all + ClassifierKeys.all) { process in
    let config = process.config
    let settings = try StageSettings(name: "classifier", inputTopic: Topic.scanned, outputTopics: [Topic.classified],
                                     config: config)
    let engine = SpamEngine(policy: try ClassifierKeys.policy(config))
    let modelFile = try config.get(ClassifierKeys.modelFile)
    if !modelFile.isEmpty {
        do { _ = try SpamModelFile.read(path: modelFile) } catch {
            throw ConfigError(key: ClassifierKeys.modelFile.name, source: modelFile, problem: "\(error)")
        }
    }
    let models = SpamModelCache(store: SpamModelStore(redis: process.store.redis, keys: process.store.keys),
                                refresh: try config.get(ClassifierKeys.modelRefresh),
                                seedFile: modelFile.isEmpty ? nil : modelFile, owner: process.instance, logger: process.logger)
    var rspamd: RspamdClient? = nil
    if try config.get(ClassifierKeys.engine) == "rspamd" {
        rspamd = RspamdClient(url: try config.get(ClassifierKeys.rspamdURL),
                              timeout: .milliseconds(Int64(try config.get(ClassifierKeys.rspamdTimeout).milliseconds)))
    }
    let notify = try config.get(ClassifierKeys.brakeNotify)
    let brakeMetrics = BrakeMetrics(store: BrakeStore(redis: process.store.redis, keys: process.store.keys),
                                    logger: process.logger)
    let worker = Classifier(
        engine: engine, models: models, rspamd: rspamd, rspamdRequired: try config.get(ClassifierKeys.rspamdRequired),
        addHeader: try config.get(ClassifierKeys.addHeader),
        brakes: try config.get(ClassifierKeys.brakeEnabled) ? BrakeStore(redis: process.store.redis, keys: process.store.keys) : nil,
        defaultLimits: try ClassifierKeys.brakeLimits(config),
        customers: CustomerCache(store: AccountStore(redis: process.store.redis, keys: process.store.keys)),
        notify: notify.isEmpty ? nil : notify, ndrDomain: try config.get(NDRKeys.domain),
        site: process.site, instance: process.instance, tripped: brakeMetrics.tripped)
    try await process.run([try StageRunner(process: process, settings: settings, worker: worker), brakeMetrics])
}
