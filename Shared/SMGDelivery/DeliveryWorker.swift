public import SMGCore
public import SMGRuntime
public import SMGStore
import SMTPClient
public import SMGNDR
public import SMGAccounts
public import SMGDNS
public import SMGTLSPolicy
import SMTPProtocol
import NIOCore
import Logging
import Foundation

/// The delivery engine of both egress lanes (R13, R17, R18).
///
/// Per message: only recipients that are not final and whose own retry time has come are tried.
/// They are grouped by domain; each group goes to its static route (`egress.routes`, which wins)
/// or to the domain's MX hosts (`DNSResolver.mailDestination`: preference order, random among
/// equals, implicit MX, null MX, loops, non-public addresses). Addresses are tried in order until
/// one session delivered the group's transaction, at most `egress.mx_address_limit` addresses and
/// `egress.mx_session_limit` sessions. Each session uses a source address of the lane's pool (in
/// rotation, drained ones skipped — never the other lane's) and the domain's TLS policy
/// (`TLSPolicyEngine`: DANE > MTA-STS > forced rule > opportunistic STARTTLS, where a failed
/// handshake is retried once in plaintext), and is kept for the next message to the same
/// destination with the same requirement. A policy that cannot be met defers, or — for a forced
/// rule — bounces or holds the mail; it never goes out in plaintext. Outcomes follow `DeliveryPlanner`.
public struct DeliveryWorker: StageWorker {
    public let lane: Lane
    public let routes: RouteTable
    public let planner: DeliveryPlanner
    public let ndr: NDRSender?
    let resolver: DNSResolver?
    let pool: SourcePool
    let cache: ConnectionCache
    let trust: TLSTrust
    /// `egress.tls = may`: STARTTLS wherever offered (else only where a policy demands it).
    let opportunisticTLS: Bool
    let tlsPolicy: TLSPolicyEngine?
    let tlsReports: TLSReportCounter?
    let holdRecheck: Duration
    let policy: MailDestinationPolicy
    let timeouts: SMTPClientStateMachine.Timeouts
    let connectTimeout: TimeAmount
    let port: Int
    let sessionLimit: Int
    let maxReceived: Int
    let concurrency: Int
    let rates: [String: Int]
    /// Where bounced recipients are counted for the compromised-account brake's bounce rate.
    let brakes: BrakeStore?
    /// `smg_delivery_recipients_total{lane, outcome}`.
    let metrics: DeliveryMetrics

    public init(lane: Lane, config: Config, ndr: NDRSender? = nil, resolver: DNSResolver? = nil,
                poolStore: SourcePoolStore? = nil, brakes: BrakeStore? = nil, tlsPolicy: TLSPolicyEngine? = nil,
                tlsReports: TLSReportCounter? = nil) throws {
        self.lane = lane
        metrics = DeliveryMetrics(lane: lane)
        self.tlsPolicy = tlsPolicy
        self.tlsReports = tlsReports
        holdRecheck = try config.get(DeliveryKeys.tlsHoldRecheck)
        self.brakes = brakes
        self.ndr = ndr
        self.resolver = resolver
        do {
            routes = try RouteTable(config.get(DeliveryKeys.routes), defaultPort: try config.get(DeliveryKeys.defaultPort))
        } catch let error as RouteTable.ParseError {
            throw ConfigError(key: DeliveryKeys.routes.name, source: "config", problem: error.description)
        }
        let delay = try config.get(DeliveryKeys.delayWarning)
        planner = DeliveryPlanner(retrySchedule: try config.get(DeliveryKeys.retrySchedule),
                                  maxLifetime: try config.get(DeliveryKeys.maxLifetime),
                                  delayWarning: delay.milliseconds > 0 ? delay : nil)
        // The pool: egress.pool, or the single egress.source_address / egress.helo_name.
        var entries: [SourceAddress] = []
        for (address, helo) in config.get(DeliveryKeys.pool).sorted(by: { $0.key < $1.key }) {
            guard DNSIPAddress(parsing: address) != nil else {
                throw ConfigError(key: DeliveryKeys.pool.name, source: "config", problem: "\"\(address)\" is not an IP address")
            }
            guard !helo.isEmpty, !helo.contains(" ") else {
                throw ConfigError(key: DeliveryKeys.pool.name, source: "config", problem: "\"\(address)\": bad HELO name \"\(helo)\"")
            }
            entries.append(SourceAddress(address: address, heloName: helo))
        }
        if entries.isEmpty {
            let source = try config.get(DeliveryKeys.sourceAddress)
            if !source.isEmpty, DNSIPAddress(parsing: source) == nil {
                throw ConfigError(key: DeliveryKeys.sourceAddress.name, source: "config", problem: "\"\(source)\" is not an IP address")
            }
            entries.append(SourceAddress(address: source.isEmpty ? nil : source, heloName: try config.get(DeliveryKeys.heloName)))
        }
        pool = SourcePool(entries: entries, store: poolStore)
        cache = ConnectionCache(reuseLimit: try config.get(DeliveryKeys.reuseLimit),
                                idleTimeout: try config.get(DeliveryKeys.idleTimeout))
        // Loaded even with egress.tls = none: a policy that demands TLS still gets it.
        opportunisticTLS = try config.get(DeliveryKeys.tls) != "none"
        do { trust = try TLSTrust(extraAnchorsFile: try config.get(DeliveryKeys.tlsCAFile)) } catch {
            throw ConfigError(key: DeliveryKeys.tlsCAFile.name, source: "config", problem: "\(error)")
        }
        func list(_ key: ConfigKey<String>) throws -> [String] {
            try config.get(key).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        policy = MailDestinationPolicy(
            maxAddresses: try config.get(DeliveryKeys.mxAddressLimit),
            preference: AddressPreference(rawValue: try config.get(DeliveryKeys.addressPreference)) ?? .ipv4,
            families: AddressFamilies(rawValue: try config.get(DeliveryKeys.addressFamilies)) ?? .both,
            allowNonPublic: try config.get(DeliveryKeys.allowNonPublic),
            localAddresses: Set(try list(DeliveryKeys.localAddresses) + entries.compactMap(\.address)),
            localNames: Set((try list(DeliveryKeys.localNames) + entries.map(\.heloName)).map { $0.lowercased() }))
        var t = SMTPClientStateMachine.Timeouts()
        let command = TimeAmount.milliseconds(Int64(try config.get(DeliveryKeys.commandTimeout).milliseconds))
        t.greeting = command
        t.command = command
        t.mail = command
        t.rcpt = command
        t.dataInitiation = min(command, .minutes(2))
        t.dataTermination = .milliseconds(Int64(try config.get(DeliveryKeys.dataTimeout).milliseconds))
        t.tlsHandshake = min(command, .minutes(1))
        timeouts = t
        connectTimeout = .milliseconds(Int64(try config.get(DeliveryKeys.connectTimeout).milliseconds))
        port = try config.get(DeliveryKeys.defaultPort)
        sessionLimit = try config.get(DeliveryKeys.mxSessionLimit)
        maxReceived = try config.get(DeliveryKeys.maxReceived)
        concurrency = try config.get(DeliveryKeys.destinationConcurrency)
        var rates: [String: Int] = [:]
        for (domain, text) in config.get(DeliveryKeys.destinationRate) {
            guard let n = Int(text), n > 0 else {
                throw ConfigError(key: DeliveryKeys.destinationRate.name, source: "config",
                                  problem: "\"\(domain)\": \"\(text)\" is not a positive number of messages per minute")
            }
            rates[domain.lowercased()] = n
        }
        self.rates = rates
        let cache = self.cache
        Task.detached {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                await cache.sweep()
            }
        }
    }

    /// One recipient group's shared fate while it is being delivered.
    struct Group {
        var domain: String
        var indices: [Int]
    }

    public func process(_ message: StoredMessage, context: StageContext) async throws -> StageOutcome {
        let id = message.id
        let now = Date()
        let receivedAt = message.envelope.submission.receivedAt
        var recipients = message.recipients
        let open = recipients.indices.filter {
            !recipients[$0].state.isFinal && (recipients[$0].nextAttempt.map { $0 <= now } ?? true)
        }
        var events: [Event] = []
        var attempted = Set<Int>()
        var deliveredAny = false
        // RFC 3461: recipients who asked for NOTIFY=SUCCESS and were handed to a next hop that does
        // not offer DSN get a "relayed" notice from us; a DSN-capable hop took the request over.
        var relayed: [DSNRecipient] = []

        func record(_ outcome: AttemptOutcome, _ index: Int, facts extra: [String: JSONValue] = [:]) {
            attempted.insert(index)
            let verdict = planner.apply(outcome, to: &recipients[index], now: now, receivedAt: receivedAt)
            var facts: [String: JSONValue] = [
                "recipient": .string(recipients[index].address), "reply": .string(recipients[index].lastReply ?? ""),
                "attempts": .int(recipients[index].attempts), "lane": .string(lane.rawValue),
            ]
            if let remote = recipients[index].remoteMTA { facts["remote_mta"] = .string(remote) }
            for (k, v) in extra { facts[k] = v }
            switch verdict {
            case .delivered:
                deliveredAny = true
                events.append(context.event(EventType.delivered, id: id, facts: facts))
                let original = message.envelope.recipients.first { $0.address == recipients[index].address }
                if original?.wantsNotice(.success) == true, facts["next_hop_dsn"] != .bool(true) {
                    relayed.append(DSNRecipient(address: recipients[index].address, action: "relayed",
                                                status: NDRSender.enhancedStatus(of: recipients[index].lastReply, default: "2.0.0"),
                                                diagnostic: recipients[index].lastReply, remoteMTA: recipients[index].remoteMTA))
                }
            case .deferred(let next):
                facts["next_attempt"] = .string(Timestamp.format(next))
                if case .postponed = outcome { facts["postponed"] = true }
                events.append(context.event(EventType.deferred, id: id, facts: facts))
            case .bounced(let expired):
                if expired { facts["reason"] = "expired: still failing after egress.max_lifetime" }
                events.append(context.event(EventType.bounced, id: id, facts: facts))
            }
        }

        // A message that went round too often is a loop, whoever it is for (RFC 5321 §6.3).
        let received = Self.receivedCount(message.outgoingBody)
        if received > maxReceived {
            let reply = SMTPReply(code: 554, enhanced: "5.4.6", "too many Received headers (\(received)): mail loop")
            for index in open { record(.reply(reply, remoteMTA: nil), index) }
            return await finish(message, recipients, open: open, attempted: attempted, events: events, delivered: false,
                          relayed: [], leaseLost: false, holdReason: nil, now: now, context: context)
        }

        var groups: [String: [Int]] = [:]
        for index in open { groups[recipients[index].domain, default: []].append(index) }
        var leaseLost = false
        var holdReason: String? = nil
        for (domain, indices) in groups.sorted(by: { $0.key < $1.key }) {
            if !leaseLost, context.lease.isLost, !(await context.lease.confirm()) { leaseLost = true }
            if leaseLost { break }
            let outcome = await deliver(group: Group(domain: domain, indices: indices), message: message,
                                        recipients: recipients, context: context, events: &events)
            if outcome.abandoned { leaseLost = true }
            if let reason = outcome.holdReason { holdReason = holdReason ?? reason }
            for (index, result) in outcome.results { record(result.0, index, facts: result.1) }
        }
        return await finish(message, recipients, open: open, attempted: attempted, events: events, delivered: deliveredAny,
                      relayed: relayed, leaseLost: leaseLost, holdReason: holdReason, now: now, context: context)
    }

    /// Counts the recipients' outcomes once the runner has recorded them.
    public func committed(_ outcome: StageOutcome) {
        metrics.record(outcome.events)
    }

    func finish(_ message: StoredMessage, _ recipients: [Recipient], open: [Int], attempted: Set<Int>, events: [Event],
                delivered: Bool, relayed: [DSNRecipient], leaseLost: Bool, holdReason: String?, now: Date,
                context: StageContext) async -> StageOutcome {
        var recipients = recipients
        var events = events
        var fields: [String: String] = [:]
        if leaseLost {
            for index in open where attempted.contains(index) {
                fields["rcpt:\(recipients[index].address)"] = recipients[index].jsonString()
            }
            // Another egress owns the message now; the runner records what was delivered.
            return StageOutcome(events: events, fields: fields, transition: .retry(afterMilliseconds: 0),
                                externalEffects: delivered)
        }
        let plan = planner.plan(recipients, now: now, receivedAt: message.envelope.submission.receivedAt)
        var newMessages: [NewMessage] = []
        var touched = attempted
        if let ndr, !relayed.isEmpty,
           let (notice, sent) = ndr.make(for: message, recipients: relayed,
                                         reason: "you asked to be told of its delivery (NOTIFY=SUCCESS).",
                                         kind: "success", notice: .success, key: Self.noticeKey(relayed)) {
            newMessages.append(notice)
            events.append(sent)
        }
        if let ndr, !plan.delayed.isEmpty {
            // Marked as notified even when NOTIFY suppressed the notice: it is decided once.
            if let (notice, sent) = ndr.make(for: message, recipients: plan.delayed,
                                             reason: "delivery is delayed; the gateway is still trying and will tell you if it gives up.",
                                             kind: "delay", notice: .delay, key: Self.noticeKey(plan.delayed)) {
                newMessages.append(notice)
                events.append(sent)
            }
            for index in recipients.indices where plan.delayed.contains(where: { $0.address == recipients[index].address }) {
                recipients[index].delayNotified = true
                touched.insert(index)
            }
        }
        for index in recipients.indices where touched.contains(index) {
            fields["rcpt:\(recipients[index].address)"] = recipients[index].jsonString()
        }
        if case .done = plan.transition, let ndr, !plan.bounced.isEmpty {
            var reason = plan.bounced.count == 1 ? "the receiving mail server refused it or it could not be delivered in time."
                : "the receiving mail servers refused it or it could not be delivered in time."
            if lane == .bad { reason += Self.spamExplanation(message.fields) }
            if let (bounce, sent) = ndr.make(for: message, recipients: plan.bounced, reason: reason, kind: "bounce") {
                newMessages.append(bounce)
                events.append(sent)
            }
        }
        if let brakes, !plan.bounced.isEmpty, !message.envelope.isGatewayWritten {
            // Statistics, not state: best effort (a redrive may count a bounce twice; a Redis
            // hiccup may miss one), never a reason to hold up the outcome.
            let submission = message.envelope.submission
            let subjects = [submission.authenticatedAs.map(BrakeStore.loginSubject),
                            message.envelope.customer.map(BrakeStore.customerSubject)].compactMap { $0 }
            try? await brakes.recordBounces(subjects: subjects, count: plan.bounced.count)
        }
        var transition = plan.transition
        if let holdReason, case .retry = transition {
            // A forced rule's "hold": out of the queue until an operator releases it or the
            // recheck (egress.tls_hold_recheck) lets egress try again; never sent in plaintext.
            transition = .hold(releaseTo: lane.topic)
            fields["held_reason"] = "TLS required: \(holdReason)"
            fields["tls_recheck_at"] = Timestamp.format(now.addingTimeInterval(Double(holdRecheck.milliseconds) / 1000))
        }
        return StageOutcome(events: events, fields: fields, newMessages: newMessages, transition: transition,
                            externalEffects: delivered)
    }

    /// What a bad-lane bounce tells the customer about why the message took that lane: the
    /// classifier's category, score and reasons (R11), so they can see why it was taken for spam.
    static func spamExplanation(_ fields: [String: String]) -> String {
        var text = " It was sent through the gateway's lane for suspected spam"
        guard let category = fields["category"] else { return text + "." }
        text += ": the gateway's spam filter classified it as \(category)"
        if let score = fields["score"] { text += " (score \(score))" }
        let reasons = (fields["reasons"] ?? "").split(separator: "\n").map(String.init)
        text += reasons.isEmpty ? "." : ", because: " + reasons.joined(separator: "; ") + "."
        return text
    }

    /// Tells apart notices of one kind for one message (different recipients at different times),
    /// the same for a redrive of the same attempt: the recipients (`NDRSender.ndrID` hashes it).
    static func noticeKey(_ recipients: [DSNRecipient]) -> String {
        recipients.map(\.address).sorted().joined(separator: ",")
    }

    struct GroupOutcome {
        var results: [Int: (AttemptOutcome, [String: JSONValue])] = [:]
        var abandoned = false
        /// A forced rule with action hold could not be met: why (the message is held).
        var holdReason: String?
    }

    /// Delivers one domain's recipients: routing, then addresses in order until one session took them.
    func deliver(group: Group, message: StoredMessage, recipients: [Recipient], context: StageContext,
                 events: inout [Event]) async -> GroupOutcome {
        var outcome = GroupOutcome()
        func decideAll(_ result: AttemptOutcome, _ indices: [Int]) {
            for index in indices { outcome.results[index] = (result, [:]) }
        }
        // Where to: a static route, or the domain's mail exchangers.
        var targets: [SMTPTarget] = []
        var policyTargets: [TLSPolicyEngine.Target] = []
        let viaMX: Bool
        let destinationKey: String
        if let hop = routes.lookup(domain: group.domain) {
            destinationKey = hop.description
            viaMX = false
            if DNSIPAddress(parsing: hop.host) != nil {
                targets = [SMTPTarget(hostname: nil, address: hop.host, port: hop.port)]
            } else if let resolver {
                let a = (try? await resolver.addresses(of: hop.host)) ?? .servfail
                guard case .answer(let list, _, _) = a, !list.isEmpty else {
                    decideAll(.reply(SMTPReply(code: 451, enhanced: "4.4.3", "cannot resolve route \(hop.host)"), remoteMTA: nil),
                              group.indices)
                    return outcome
                }
                targets = list.prefix(policy.maxAddresses).map { SMTPTarget(hostname: hop.host, address: "\($0)", port: hop.port) }
            } else {
                targets = [SMTPTarget(hostname: hop.host, address: hop.host, port: hop.port)]
            }
        } else {
            destinationKey = group.domain
            viaMX = true
            guard let resolver else {
                decideAll(.reply(SMTPReply.noRoute(to: group.domain), remoteMTA: nil), group.indices)
                return outcome
            }
            switch await resolver.mailDestination(for: group.domain, policy: policy) {
            case .nullMX:
                decideAll(.reply(SMTPReply(code: 556, enhanced: "5.1.10",
                                           "\(group.domain) does not accept mail (null MX, RFC 7505)"), remoteMTA: nil),
                          group.indices)
                return outcome
            case .permanentFailure(let status, let reason):
                decideAll(.reply(SMTPReply(code: 550, enhanced: status, reason), remoteMTA: nil), group.indices)
                return outcome
            case .temporaryFailure(let status, let reason):
                decideAll(.reply(SMTPReply(code: 451, enhanced: status, reason), remoteMTA: nil), group.indices)
                return outcome
            case .targets(let list):
                targets = list.map { SMTPTarget(hostname: $0.host, address: "\($0.address)", port: port) }
                policyTargets = list.map { TLSPolicyEngine.Target(host: $0.implicitMX && $0.host == "\($0.address)" ? nil : $0.host,
                                                                  authenticated: $0.authenticated) }
            }
        }
        if !viaMX {
            policyTargets = targets.map { TLSPolicyEngine.Target(host: $0.hostname, authenticated: false) }
        }
        // The TLS policy, decided once for the group before any connection.
        let decision = await tlsPolicy?.decide(domain: group.domain, senderDomain: Address.domain(of: message.envelope.sender),
                                               targets: policyTargets, viaMX: viaMX)

        // Limits: a busy or rate-limited destination waits without costing an attempt.
        if let perMinute = rates[group.domain], !(await cache.takeRateToken(group.domain, perMinute: perMinute)) {
            decideAll(.postponed(SMTPReply(code: 451, enhanced: "4.4.5", "rate limit of \(perMinute)/min for \(group.domain)"),
                                 after: .seconds(Int64(max(1, 60 / perMinute)))), group.indices)
            return outcome
        }
        var slot = await cache.acquire(destinationKey, limit: concurrency)
        if !slot {
            for _ in 0..<10 where !slot {
                try? await Task.sleep(for: .milliseconds(100))
                slot = await cache.acquire(destinationKey, limit: concurrency)
            }
        }
        guard slot else {
            decideAll(.postponed(SMTPReply(code: 451, enhanced: "4.4.5",
                                           "\(concurrency) sessions to \(destinationKey) are busy"), after: .seconds(5)),
                      group.indices)
            return outcome
        }
        outcome = await deliver(group: group, to: targets, policy: decision, destination: destinationKey, message: message,
                                recipients: recipients, context: context, events: &events)
        await cache.release(destinationKey)
        return outcome
    }

    /// Tries `targets` in order for the group (holding one of the destination's session slots),
    /// each with the TLS requirement `policy` sets for its host.
    func deliver(group: Group, to targets: [SMTPTarget], policy: TLSPolicyDecision?, destination destinationKey: String,
                 message: StoredMessage, recipients: [Recipient], context: StageContext,
                 events: inout [Event]) async -> GroupOutcome {
        var outcome = GroupOutcome()
        var open = group.indices
        var lastFailure = SMTPReply(code: 451, enhanced: "4.4.1", "no address of \(destinationKey) could be reached")
        var lastRemote: String? = nil
        /// The last way the TLS policy was not met (decides the action for the recipients left).
        var policyFailure: TLSPolicyFailure? = nil
        /// A host failed for another reason (unreachable, 4xx, a DNS lookup that may work later):
        /// then the forced rule's reject or hold does not apply yet — the mail is deferred.
        var otherFailure = false
        var sessions = 0
        let body = ByteBuffer(bytes: message.outgoingBody)
        // RFC 8460: sessions that carry a TLS report are never counted in one (loop guard), and
        // reports are delivered despite TLS failures (§5.3): opportunistic, whatever the policy.
        let isReport = message.envelope.isGatewayWritten && HeaderHygiene.count("tls-report-domain", in: message.outgoingBody) > 0
        let counted = !isReport
        var policyFacts: [String: JSONValue] = [:]
        if let policy { policyFacts["tls_policy"] = policy.facts }
        let mode: SMTPClientStateMachine.TLSMode = opportunisticTLS ? .opportunistic : .never
        for (position, target) in targets.enumerated() where !open.isEmpty && sessions < sessionLimit {
            if context.lease.isLost, !(await context.lease.confirm()) {
                outcome.abandoned = true
                return outcome
            }
            let host = isReport ? nil : policy?.hosts[position]
            let requirement = host?.requirement ?? .none
            if let blocked = host?.blocked {
                // Not even a connection: a failed TLSA lookup, an MX outside the MTA-STS policy.
                policyFailure = blocked
                if host?.tlsaStatus.hasPrefix("failed") == true { otherFailure = true }
                lastFailure = SMTPReply(code: 451, enhanced: "4.7.5", "TLS policy: \(blocked.detail)")
                lastRemote = nil
                if counted, let policy { await tlsReports?.count(policy, failure: blocked, target: target, source: nil) }
                continue
            }
            let (pick, exhausted) = await pool.next(ipv6: target.address.contains(":"), logger: context.logger)
            guard let source = pick else {
                if exhausted {
                    lastFailure = SMTPReply(code: 451, enhanced: "4.4.5",
                                            "every source address of the \(lane.rawValue) pool is drained; waiting for one")
                    events.append(context.event(EventType.poolExhausted, id: message.id, facts: [
                        "lane": .string(lane.rawValue), "pool": .array(pool.entries.map { .string($0.description) }),
                    ]))
                    context.logger.critical("every source address of the pool is drained: mail waits",
                                            metadata: ["lane": "\(lane.rawValue)"])
                    // Nobody's fault at the destination: wait without counting attempts (until max_lifetime).
                    let wait = min(Duration.seconds(10), planner.retrySchedule[0])
                    for index in open { outcome.results[index] = (.postponed(lastFailure, after: wait), policyFacts) }
                    return outcome
                }
                continue   // no source of this family: try the next address
            }
            let key = ConnectionCache.Key(target: target, source: source.address,
                                          tls: requirement.required ? requirement.key : opportunisticTLS ? "may" : "none")
            var session: SMTPSession
            var reused = false
            if let cached = await cache.take(key) {
                session = cached
                reused = true
            } else {
                var opened = await SMTPSession.open(
                    target: target, sourceAddress: source.address, heloName: source.heloName, tlsMode: mode, trust: trust,
                    requirement: requirement, timeouts: timeouts, connectTimeout: connectTimeout,
                    group: context.eventLoopGroup, logger: context.logger)
                if case .failure(let f) = opened, f.tlsHandshakeFailed, !requirement.required {
                    // Postfix's "may": a broken handshake is retried once without TLS.
                    context.logger.info("TLS handshake failed; retrying in plaintext", metadata: ["target": "\(target)"])
                    opened = await SMTPSession.open(
                        target: target, sourceAddress: source.address, heloName: source.heloName, tlsMode: .never,
                        trust: nil, timeouts: timeouts, connectTimeout: connectTimeout, group: context.eventLoopGroup,
                        logger: context.logger)
                }
                switch opened {
                case .failure(let f):
                    if !f.connectFailed { sessions += 1 }
                    lastFailure = f.reply
                    lastRemote = f.connectFailed ? nil : target.hostname ?? target.address
                    if let failure = f.tlsPolicyFailure {
                        policyFailure = failure
                        if counted, let policy { await tlsReports?.count(policy, failure: failure, target: target, source: source.address) }
                    } else {
                        otherFailure = true
                    }
                    events.append(attemptEvent(message.id, target: target, source: source, tls: nil,
                                               recipients: open.map { recipients[$0].address }, session: f.reply.description,
                                               extra: policyFacts, context: context))
                    continue
                case .success(let s):
                    session = s
                    sessions += 1
                }
            }
            // MTA-STS testing: delivered either way, judged for the reports.
            let testing = host.flatMap { h in policy?.testingFailure(host: h, tls: session.tls) }
            if !reused, counted, let policy {
                await tlsReports?.count(policy, failure: testing, target: target, source: source.address)
            }
            let addresses = open.map { recipients[$0].address }
            let lease = context.lease
            let sent = await session.send(reversePath: message.envelope.sender, recipients: addresses, message: body,
                                          dsn: Self.dsnOptions(message.envelope, addresses),
                                          beforeData: { await lease.confirmBeforeSideEffect() })
            events.append(attemptEvent(message.id, target: target, source: source, tls: session.tls,
                                       recipients: addresses, session: sent.sessionFailure?.description ?? "ok",
                                       reused: reused, extra: policyFacts, context: context))
            if sent.abandoned {
                context.logger.warning("lease lost before DATA; not sent", metadata: ["target": "\(target)"])
                outcome.abandoned = true
                await cache.put(session, key: key)
                return outcome
            }
            let remote = target.hostname ?? target.address
            var retryElsewhere: [Int] = []
            for (index, reply) in zip(open, sent.replies) {
                // A session that broke before the message was sent leaves its undecided recipients to the
                // next address; once the body went out, they wait for the retry (it may have arrived).
                if sent.sessionFailure != nil, !sent.bodySent, reply == sent.sessionFailure, reply.isTransient {
                    retryElsewhere.append(index)
                    continue
                }
                var facts = tlsFacts(session.tls, target: target, source: source)
                facts.merge(policyFacts) { _, new in new }
                if let testing { facts["tls_failure"] = .string(testing.type) }
                facts["next_hop_dsn"] = .bool(session.offersDSN)
                outcome.results[index] = (.reply(reply, remoteMTA: remote), facts)
            }
            if sent.sessionFailure == nil { await cache.put(session, key: key) }
            if let failure = sent.sessionFailure {
                lastFailure = failure
                lastRemote = remote
                otherFailure = true
            }
            open = retryElsewhere
        }
        var facts = policyFacts
        if let policyFailure, let policy {
            // The policy's TLS could not be made: defer — or, when every host tried failed the
            // policy itself (none was merely unreachable), what the forced rule says.
            facts["tls_failure"] = .string(policyFailure.type)
            switch otherFailure ? .defer : policy.action {
            case .defer: break
            case .reject:
                lastFailure = SMTPReply(code: 550, enhanced: "5.7.10",
                                        "TLS required by \(policy.rule.map { "rule \($0.id)" } ?? "policy") and not possible: \(policyFailure.detail)")
            case .hold:
                outcome.holdReason = "\(policy.rule.map { "rule \($0.id)" } ?? "policy"): \(policyFailure.detail)"
            }
        }
        for index in open { outcome.results[index] = (.reply(lastFailure, remoteMTA: lastRemote), facts) }
        return outcome
    }

    /// The DSN parameters to pass on for `addresses` (RFC 3461 §5.2.1), nil when the sender gave none.
    static func dsnOptions(_ envelope: Envelope, _ addresses: [String]) -> SMTPClientStateMachine.DSNOptions? {
        let recipients = addresses.map { address in
            let r = envelope.recipients.first { $0.address == address }
            return SMTPClientStateMachine.DSNOptions.Recipient(notify: r?.notify, originalRecipient: r?.originalRecipient)
        }
        guard envelope.dsnReturn != nil || envelope.envelopeID != nil
                || recipients.contains(where: { $0.notify != nil || $0.originalRecipient != nil })
        else { return nil }
        return .init(ret: envelope.dsnReturn, envelopeID: envelope.envelopeID, recipients: recipients)
    }

    func tlsFacts(_ tls: TLSReport?, target: SMTPTarget, source: SourceAddress) -> [String: JSONValue] {
        [
            "next_hop": .string(target.description), "mx": .string(target.hostname ?? target.address),
            "address": .string(target.address), "source_address": .string(source.description),
            "helo": .string(source.heloName), "tls": Self.tlsJSON(tls),
        ]
    }

    func attemptEvent(_ id: MessageID, target: SMTPTarget, source: SourceAddress, tls: TLSReport?, recipients: [String],
                      session: String, reused: Bool = false, extra: [String: JSONValue] = [:], context: StageContext) -> Event {
        var facts = tlsFacts(tls, target: target, source: source)
        facts.merge(extra) { _, new in new }
        facts["lane"] = .string(lane.rawValue)
        facts["recipients"] = .array(recipients.map { .string($0) })
        facts["session"] = .string(session)
        facts["reused_connection"] = .bool(reused)
        return context.event(EventType.deliveryAttempt, id: id, facts: facts)
    }

    static func tlsJSON(_ tls: TLSReport?) -> JSONValue {
        guard let tls else { return "none" }
        var o: [String: JSONValue] = [
            "version": .string(tls.version), "cipher": .string(tls.cipher), "verified": .bool(tls.verified),
        ]
        if let f = tls.peerCertificateSHA256 { o["peer_certificate_sha256"] = .string(f) }
        if let e = tls.verifyError { o["verify_error"] = .string(e) }
        return .object(o)
    }

    /// `Received:` fields in the header section.
    static func receivedCount(_ message: [UInt8]) -> Int {
        HeaderHygiene.count("received", in: message)
    }
}
