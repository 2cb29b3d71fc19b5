import SMGCore
import SMGSync
import SMGRuntime
import SMGStore
import SMGBus
import SMGRedis
import SMGAccounts
import SMGDNS
import SMGDKIM
import SMTPServer
import SMTPProtocol
import NIOCore
import Logging
import Metrics
import ServiceLifecycle
import Foundation
import Crypto

/// The SMTP side of ingress: every accepted message is stored in Redis (record, body,
/// `accepted` event, pending entry for the scanners) in one atomic script BEFORE the 250 is
/// sent; only then is its id published on `mail.accepted`. A lost frame costs latency (redrive),
/// never mail; a failed store costs the client a 451 and a retry, never a silent drop.
final class IngressDelegate: SMTPServerDelegate {
    let process: GatewayProcess
    let producer: BusPusher
    let hostname: String
    let allow: NetworkList
    let maxPending: Int
    let maxMemoryFraction: Double
    let recorder: EventRecorder
    let redriveAfter: Int
    let maxConnections: Int
    let maxConnectionsPerIP: Int
    let requireAuth: Bool
    let checkSenderDomain: Bool
    let stripNames: Set<String>
    let maxReceived: Int
    let bareNewline: String
    let receivedShowsClient: Bool
    let authenticator: Authenticator
    let rateLimiter: RateLimiter
    let brakes: BrakeCheck
    let dns: DNSChecks
    /// The latest backpressure sample (see `watchBackpressure`); read by every MAIL, no Redis call.
    let pressure = Locked(Backpressure())
    let connections = Locked<(total: Int, perIP: [String: Int])>((0, [:]))
    let census: ConnectionCensus
    let accepted = Counter(label: "smg_ingress_accepted_total")
    let storeFailures = Counter(label: "smg_ingress_store_failures_total")
    let duplicates = Counter(label: "smg_ingress_duplicate_submissions_total")
    /// `ingress.dedupe_window` in seconds (0 = off).
    let dedupeSeconds: Int

    init(process: GatewayProcess, producer: BusPusher, authenticator: Authenticator, rateLimiter: RateLimiter,
         resolver: DNSResolver, recorder: EventRecorder) throws {
        self.process = process
        self.recorder = recorder
        self.producer = producer
        self.authenticator = authenticator
        self.rateLimiter = rateLimiter
        brakes = BrakeCheck(store: BrakeStore(redis: process.store.redis, keys: process.store.keys))
        let config = process.config
        dns = DNSChecks(resolver: resolver, allowNonPublic: try config.get(IngressKeys.allowNonPublicSenderDomains))
        hostname = try config.get(IngressKeys.hostname)
        allow = try config.get(IngressKeys.allowNetworks)
        maxPending = try config.get(IngressKeys.maxPending)
        dedupeSeconds = Int(try config.get(IngressKeys.dedupeWindow).components.seconds)
        maxMemoryFraction = try config.get(IngressKeys.maxRedisMemoryFraction)
        redriveAfter = try config.get(StageKeys.redriveAfter).milliseconds
        maxConnections = try config.get(IngressKeys.maxConnections)
        maxConnectionsPerIP = try config.get(IngressKeys.maxConnectionsPerIP)
        requireAuth = try config.get(IngressKeys.requireAuth)
        checkSenderDomain = try config.get(IngressKeys.checkSenderDomain)
        receivedShowsClient = try config.get(IngressKeys.receivedShowsClient)
        var names = Set(try config.get(IngressKeys.stripHeaders).split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty })
        if try config.get(IngressKeys.stripReceived) { names.insert("received") }
        stripNames = names
        maxReceived = try config.get(IngressKeys.maxReceived)
        bareNewline = try config.get(IngressKeys.bareNewline)
        census = ConnectionCensus(scope: ConnectionCensus.Scope(rawValue: try config.get(IngressKeys.connectionLimitScope))!,
                                  redis: process.redis, keys: process.store.keys, site: process.site,
                                  instance: process.instance, logger: process.logger)
    }

    // MARK: connection (R2 listener allowlist, R3 limits)

    func connectionOpened(_ session: SMTPSessionInfo) async -> SMTPReply? {
        let ip = session.remoteAddress?.ipAddress ?? ""
        let (total, fromIP) = connections.withLock { state -> (Int, Int) in
            state.total += 1
            state.perIP[ip, default: 0] += 1
            return (state.total, state.perIP[ip]!)
        }
        guard allow.contains(ip) else {
            let refusal = Refusal(reply: SMTPReply(.accessDenied), reason: "client network not allowed on this listener")
            refuse(session, refusal)
            return refusal.reply
        }
        // R3 over every ingress process in `ingress.connection_limit_scope` (ConnectionCensus).
        let others = census.othersCount(ip: ip)
        if total + others.total > maxConnections {
            let refusal = Refusal(reply: SMTPReply(.tooManyConnections, hostname: hostname),
                                  reason: "global connection limit")
            refuse(session, refusal)
            return refusal.reply
        }
        if fromIP + others.fromIP > maxConnectionsPerIP {
            let refusal = Refusal(reply: SMTPReply(.tooManyConnectionsFromHost, hostname: hostname),
                                  reason: "per-IP connection limit")
            refuse(session, refusal)
            return refusal.reply
        }
        return nil
    }

    func connectionClosed(_ session: SMTPSessionInfo) async {
        let ip = session.remoteAddress?.ipAddress ?? ""
        connections.withLock { state in
            state.total -= 1
            let left = (state.perIP[ip] ?? 1) - 1
            state.perIP[ip] = left > 0 ? left : nil
        }
    }

    // MARK: AUTH (R1)

    func authenticate(_ session: SMTPSessionInfo, username: String, password: String) async -> SMTPReply? {
        let ip = session.remoteAddress?.ipAddress ?? ""
        do {
            switch try await authenticator.check(login: username, password: password, ip: ip) {
            case .success(let account):
                process.logger.info("authenticated", metadata: ["login": .string(account.login),
                                                                 "customer": .string(account.customer),
                                                                 "client": .string(ip), "session": .string(session.id)])
                return nil
            case .failure:
                refuse(session, Refusal(reply: SMTPReply(.authFailed), reason: "wrong credentials",
                                              eventType: EventType.rejectedAuth), login: username)
                return SMTPReply(.authFailed)
            case .throttled:
                let reply = SMTPReply(.tooManyFailedLogins)
                refuse(session, Refusal(reply: reply, reason: "too many failed logins", eventType: EventType.rejectedAuth),
                             login: username)
                return reply
            }
        } catch {
            process.logger.error("cannot check credentials", metadata: ["error": "\(error)"])
            return SMTPReply(.authTemporaryFailure)
        }
    }

    // MARK: MAIL (R2, R4, R5, R6, R7)

    func mailFrom(_ session: SMTPSessionInfo, reversePath: String, parameters: [String: String]) async -> SMTPReply? {
        if let busy = pressure.withLock({ $0.refusal(maxPending: maxPending, maxMemoryFraction: maxMemoryFraction) }) {
            // Only a metric: writing an event per refused MAIL would add to the load being shed.
            Counter(label: "smg_ingress_refused_total", dimensions: [("reason", busy.reason)]).increment()
            return busy.reply
        }
        do {
            try await checkSender(session, reversePath: reversePath, size: parameters["SIZE"].flatMap { Int($0) })
            return nil
        } catch let refusal as Refusal {
            refuse(session, refusal, login: session.authenticatedAs, sender: reversePath)
            return refusal.reply
        } catch {
            process.logger.error("policy check failed", metadata: ["error": "\(error)"])
            return Refusal.temporary("policy check failed").reply
        }
    }

    func checkSender(_ session: SMTPSessionInfo, reversePath: String, size: Int?) async throws {
        let ip = session.remoteAddress?.ipAddress ?? ""
        guard let login = session.authenticatedAs else {
            // Only reachable with ingress.require_auth off (trusted relay networks).
            if checkSenderDomain, !reversePath.isEmpty, let refusal = await dns.senderDomain(Address.domain(of: reversePath)) {
                throw refusal
            }
            return
        }
        guard let (_, customer) = try await authenticator.customer(forLogin: login), !customer.disabled else {
            throw Refusal.accountUnavailable()
        }
        guard customer.networkList.contains(ip) else { throw Refusal.networkNotAllowed() }
        if let subject = try await brakes.refusing(login: login, customer: customer.id) { throw Refusal.braked(subject) }
        if customer.requireTLS && !session.tls { throw Refusal.tlsRequired() }
        if !reversePath.isEmpty && !customer.ownsSender(reversePath) { throw Refusal.senderNotOwned() }
        if let size, let limit = customer.maxMessageSize, size > limit { throw Refusal.tooBig() }
        if checkSenderDomain, !reversePath.isEmpty, let refusal = await dns.senderDomain(Address.domain(of: reversePath)) {
            throw refusal
        }
        if customer.reverseDNSCheck, let refusal = await dns.reverseDNS(ip) { throw refusal }
        if let limit = customer.rateLimitPerMinute {
            guard try await rateLimiter.allow(customer: customer.id, perMinute: limit) else { throw Refusal.rateLimited() }
        }
    }

    func rcptTo(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, forwardPath: String,
                parameters: [String: String]) async -> SMTPReply? {
        guard let login = session.authenticatedAs else { return nil }
        let found: (Account, Customer)?
        do { found = try await authenticator.customer(forLogin: login) } catch {
            return Refusal.temporary("customer lookup failed").reply
        }
        guard let (_, customer) = found else { return Refusal.accountUnavailable().reply }
        if let limit = customer.maxRecipients, envelope.recipients.count >= limit {
            refuse(session, Refusal.tooManyRecipients(), login: login, sender: envelope.reversePath)
            return Refusal.tooManyRecipients().reply
        }
        return nil
    }

    func commandRefused(_ session: SMTPSessionInfo, reason: String, reply: SMTPReply) async {
        refuse(session, Refusal(reply: reply, reason: reason), login: session.authenticatedAs)
    }

    /// Protocol-level refusals arrive here on the event loop; `refuse` only queues the event.
    func protocolRefusal(_ session: SMTPSessionInfo, reason: String, reply: SMTPReply) {
        refuse(session, Refusal(reply: reply, reason: reason), login: session.authenticatedAs)
    }

    // MARK: DATA: durable accept

    func dataReceived(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, message: ByteBuffer) async -> SMTPReply {
        var customerID: String?
        let raw = Array(message.readableBytesView)
        let header = DKIMMessage(raw)
        var bareNewlineMode = bareNewline
        if let login = session.authenticatedAs {
            guard let (_, customer) = try? await authenticator.customer(forLogin: login) else {
                return Refusal.temporary("customer lookup failed").reply
            }
            bareNewlineMode = customer.bareNewline ?? bareNewline
            if let limit = customer.maxMessageSize, message.readableBytes > limit {
                refuse(session, Refusal.tooBig(), login: login, sender: envelope.reversePath)
                return Refusal.tooBig().reply
            }
            // R5 for the header too: every From (and Sender) mailbox must be the customer's, or the
            // signer would put a DKIM signature of the From domain on another's name.
            if let refusal = HeaderSenderPolicy.check(header, owns: { customer.ownsSender("x@" + $0) }) {
                refuse(session, refusal, login: login, sender: envelope.reversePath)
                return refusal.reply
            }
            customerID = customer.id
        }
        // Bare LFs were stored as CRLF by the decoder; `reject` refuses such a message as Postfix's
        // smtpd_forbid_bare_newline = yes does (the end of DATA was a real CRLF.CRLF either way).
        if envelope.bareLineFeeds > 0, bareNewlineMode == "reject" {
            let refusal = Refusal(reply: SMTPReply(.bareLineEndingInData), reason: "bare LF in message data")
            refuse(session, refusal, login: session.authenticatedAs, sender: envelope.reversePath)
            return refusal.reply
        }
        // A loop (RFC 5321 §6.3): counted before stripping, and our own earlier Received headers
        // survive stripping, so mail that comes round through the gateway is counted each time.
        if header.fields(named: "received").count >= maxReceived {
            let refusal = Refusal(reply: SMTPReply(.tooManyHops), reason: "too many Received headers (mail loop)")
            refuse(session, refusal, login: session.authenticatedAs, sender: envelope.reversePath)
            return refusal.reply
        }
        let id = MessageID.make()
        var logger = process.logger
        logger[metadataKey: "msgid"] = .string(id.rawValue)
        let now = Date()
        var body = Array(receivedHeader(id: id, session: session, envelope: envelope, date: now).utf8)
        // RFC 6409 §8.2/§8.3: a submission without Message-ID or Date gets them here (receivers
        // score their absence as spam; Python's smtplib, for one, sends neither).
        var fixups: [JSONValue] = []
        if header.fields(named: "message-id").isEmpty {
            body.append(contentsOf: "Message-ID: <\(id.rawValue)@\(hostname)>\r\n".utf8)
            fixups.append("message-id")
        }
        if envelope.bareLineFeeds > 0 { fixups.append("bare-lf") }
        if header.fields(named: "date").isEmpty {
            body.append(contentsOf: "Date: \(Timestamp.rfc5322(now))\r\n".utf8)
            fixups.append("date")
        }
        body.append(contentsOf: HeaderHygiene.strip(raw, removing: stripNames, keep: Self.isOurReceived))
        let facts = SubmissionFacts(
            clientAddress: session.remoteAddress?.ipAddress ?? "", heloName: session.heloName, tls: session.tls,
            tlsVersion: session.tlsVersion, authenticatedAs: session.authenticatedAs, site: process.site,
            ingress: process.instance, receivedAt: now, size: body.count)
        let env = Self.envelope(customer: customerID, envelope, facts: facts)
        var eventFacts: [String: JSONValue] = [
            "sender": .string(envelope.reversePath), "recipients": .int(envelope.recipients.count),
            "size": .int(body.count), "tls": .bool(session.tls), "session": .string(session.id),
        ]
        if let customerID { eventFacts["customer"] = .string(customerID) }
        if let login = session.authenticatedAs { eventFacts["login"] = .string(login) }
        if !fixups.isEmpty { eventFacts["fixups"] = .array(fixups) }
        if let ret = env.dsnReturn { eventFacts["dsn_ret"] = .string(ret) }
        if let envid = env.envelopeID { eventFacts["envid"] = .string(envid) }
        let event = process.event(EventType.accepted, id: id, facts: eventFacts)
        let fingerprint = dedupeSeconds > 0 ? Self.fingerprint(session: session, envelope: envelope, message: message) : nil
        do {
            let result = try await process.store.accept(
                id: id, envelope: env, body: body, event: event, topic: Topic.accepted,
                redriveAfterMilliseconds: redriveAfter, fingerprint: fingerprint, fingerprintTTLSeconds: dedupeSeconds)
            if case .duplicate(let prior) = result {
                duplicates.increment()
                logger.notice("same submission as an accepted message; not stored again", metadata: ["prior": .string(prior.rawValue)])
                return .queued(as: prior.rawValue)
            }
        } catch {
            storeFailures.increment()
            logger.error("could not store message; answering 451", metadata: ["error": "\(error)"])
            return SMTPReply(.messageStoreFailed)
        }
        accepted.increment()
        logger.info("accepted", metadata: ["size": "\(body.count)", "recipients": "\(envelope.recipients.count)"])
        await process.publish([event])
        let producer = self.producer
        Task {
            // The record is durable: if this frame is lost, redrive delivers the message to a scanner.
            _ = await producer.send(BusMessage(topic: Topic.accepted, payload: Array(id.rawValue.utf8)),
                                    timeout: .milliseconds(500))
        }
        return .queued(as: id.rawValue)
    }

    /// The identity of a submission for `ingress.dedupe_window`: login, envelope and the client's
    /// octets (before our Received header), SHA-256 in hex.
    static func fingerprint(session: SMTPSessionInfo, envelope: SMTPEnvelope, message: ByteBuffer) -> String {
        var hasher = SHA256()
        let head = [session.authenticatedAs ?? "", envelope.reversePath] + envelope.recipients
        hasher.update(data: Array(head.joined(separator: "\n").utf8) + [0])
        message.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
        return Hex.lower(hasher.finalize())
    }

    /// Records a refusal as an event (`rejected.policy`, `rejected.auth`, `ratelimit.hit`) and a metric.
    /// Never waits: the event goes to the bounded `recorder` (dropped and counted when it is full).
    func refuse(_ session: SMTPSessionInfo, _ refusal: Refusal, login: String? = nil, sender: String? = nil) {
        Counter(label: "smg_ingress_refused_total", dimensions: [("reason", refusal.reason)]).increment()
        var facts: [String: JSONValue] = [
            "client": .string(session.remoteAddress?.ipAddress ?? ""), "reason": .string(refusal.reason),
            "reply": .string(refusal.reply.description), "session": .string(session.id),
        ]
        if let login { facts["login"] = .string(login) }
        if let sender { facts["sender"] = .string(sender) }
        process.logger.notice("refused", metadata: ["reason": .string(refusal.reason), "session": .string(session.id),
                                                    "reply": .string(refusal.reply.description)])
        recorder.record(process.event(refusal.eventType, id: nil, facts: facts))
    }

    /// The stored envelope of a transaction, with the DSN parameters (RFC 3461) the state machine
    /// validated: RET and ENVID per message, NOTIFY and ORCPT per recipient.
    static func envelope(customer: String?, _ envelope: SMTPEnvelope, facts: SubmissionFacts) -> Envelope {
        let recipients = envelope.recipients.map { address -> Recipient in
            let parameters = envelope.recipientParameters[address] ?? [:]
            return Recipient(address: address, notify: parameters["NOTIFY"].flatMap(DSNParameters.notify),
                             originalRecipient: parameters["ORCPT"].flatMap(DSNParameters.originalRecipient))
        }
        return Envelope(customer: customer, sender: envelope.reversePath, recipients: recipients, submission: facts,
                        dsnReturn: envelope.mailParameters["RET"].flatMap(DSNParameters.ret),
                        envelopeID: envelope.mailParameters["ENVID"].flatMap(DSNParameters.envelopeID))
    }

    /// A Received field that an smg-ingress wrote (`by <host> (smg-ingress) with`): kept when the
    /// customer's own are stripped. A client can forge one; that only makes its mail look more
    /// travelled.
    @Sendable static func isOurReceived(_ field: ArraySlice<UInt8>) -> Bool {
        let marker = Array(" (smg-ingress) with ".utf8)
        guard field.count >= marker.count else { return false }
        var i = field.startIndex
        while i <= field.endIndex - marker.count {
            if field[i] == marker[0], field[i..<(i + marker.count)].elementsEqual(marker) { return true }
            i += 1
        }
        return false
    }

    /// Our Received header. It names the customer's HELO but not its IP address (R8: the
    /// customer's original address is not shown to recipients).
    func receivedHeader(id: MessageID, session: SMTPSessionInfo, envelope: SMTPEnvelope, date: Date) -> String {
        // R8: by default neither the client's IP nor its HELO name (often an internal host name or
        // an address literal) appears; the customer is named by our message id only.
        var from = ""
        if receivedShowsClient {
            let helo = (session.heloName ?? "unknown").filter { $0.isASCII && !$0.isWhitespace && $0 != ";" && $0 != "(" && $0 != ")" }
            from = "from \(helo) ([\(session.remoteAddress?.ipAddress ?? "?")])\r\n\t"
        }
        let with = (session.tls ? "ESMTPS" : "ESMTP") + (session.authenticatedAs != nil ? "A" : "")
        let forClause = envelope.recipients.count == 1 ? "\r\n\tfor <\(envelope.recipients[0])>" : ""
        return "Received: \(from)by \(hostname) (smg-ingress) with \(with) id \(id)\(forClause);\r\n\t\(Timestamp.rfc5322(date))\r\n"
    }

    /// Keeps the backpressure figures fresh without a Redis call per MAIL command: every 250 ms
    /// one pipeline reads the size of every stage's pending set and `INFO memory`. While Redis
    /// cannot be read the sample grows old, and MAIL is refused with a 4xx once it is older than
    /// `Backpressure.staleAfter`: clients then retry before sending DATA, instead of each DATA
    /// waiting for a Redis timeout (whose accept might still run later).
    func watchBackpressure() async {
        let keys = process.store.keys
        let commands: [[RedisArg]] = Topic.all.map { ["ZCARD", RedisArg(keys.pending($0))] } + [["INFO", "memory"]]
        while !Task.isCancelled {
            if let replies = try? await process.redis.pipeline(commands), replies.count == commands.count {
                let pending = replies.prefix(Topic.all.count).reduce(0) { $0 + Int($1.int ?? 0) }
                let memory = replies.last?.string.map(Backpressure.parseMemory) ?? nil
                pressure.withLock { p in
                    p.sampled = ContinuousClock.now
                    p.pending = pending
                    if let memory { (p.usedMemory, p.maxMemory) = memory }
                }
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }
}

/// The last sample of what the pipeline holds: pending messages over all stages and Redis memory.
struct Backpressure: Sendable {
    var pending = 0
    var usedMemory = 0
    var maxMemory = 0
    /// When Redis last answered the sample (nil: not yet, e.g. just started).
    var sampled: ContinuousClock.Instant?
    /// A sample older than this means Redis is not answering.
    static let staleAfter = Duration.seconds(3)

    /// Why MAIL must wait now, or nil.
    func refusal(maxPending: Int, maxMemoryFraction: Double) -> Refusal? {
        if let sampled, ContinuousClock.now - sampled > Self.staleAfter {
            return .busy("redis not answering")
        }
        if pending > maxPending { return .busy("more than \(maxPending) messages pending in the pipeline") }
        if maxMemory > 0, Double(usedMemory) > Double(maxMemory) * maxMemoryFraction {
            return .busy("redis memory above \(maxMemoryFraction) of maxmemory")
        }
        return nil
    }

    /// `used_memory` and `maxmemory` from an `INFO memory` reply.
    static func parseMemory(_ info: String) -> (Int, Int)? {
        var used: Int?, max: Int?
        for line in info.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("used_memory:") { used = Int(line.dropFirst("used_memory:".count)) }
            else if line.hasPrefix("maxmemory:") { max = Int(line.dropFirst("maxmemory:".count)) }
        }
        guard let used, let max else { return nil }
        return (used, max)
    }
}

/// Runs the SMTP listener until SIGTERM, then stops accepting and lets sessions finish.
struct IngressService: Service {
    struct Listener {
        var host: String
        var port: Int
        var configuration: SMTPServerConfiguration
    }
    let process: GatewayProcess
    let delegate: IngressDelegate
    let listeners: [Listener]

    func run() async throws {
        var servers: [SMTPServer] = []
        for listener in listeners {
            let server = try await SMTPServer.start(host: listener.host, port: listener.port,
                                                    configuration: listener.configuration, delegate: delegate,
                                                    group: process.group, logger: process.logger)
            process.logger.info("SMTP listening", metadata: [
                "address": "\(server.localAddress.map { "\($0)" } ?? "?")",
                "tls": .string(listener.configuration.implicitTLS ? "implicit" : listener.configuration.tls != nil ? "starttls" : "none"),
            ])
            servers.append(server)
        }
        let watcher = Task { await delegate.watchBackpressure() }
        let connections = delegate.connections
        let census = Task { await delegate.census.run(snapshot: { connections.withLock { ($0.total, $0.perIP) } }) }
        try? await gracefulShutdown()
        watcher.cancel()
        census.cancel()
        for server in servers { try await server.close() }
    }
}
