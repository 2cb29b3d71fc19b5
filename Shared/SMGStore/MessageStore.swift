public import SMGCore
public import SMGRedis
import Foundation

/// A message as a stage sees it: its record and body, read in one round trip.
public struct StoredMessage: Sendable {
    public var id: MessageID
    public var envelope: Envelope
    public var body: [UInt8]
    /// Every field of the message hash (`lane`, `rcpt:<address>`, stage facts, …).
    public var fields: [String: String]

    /// The field where the signer records the `DKIM-Signature` header fields (CRLF-terminated,
    /// possibly empty); egress sends them on top of the body.
    public static let dkimField = "dkim"

    /// The field where the classifier records header fields it adds (`X-SMG-Spam`, when
    /// `classifier.add_header` is on; CRLF-terminated, possibly empty).
    public static let addedHeadersField = "headers"

    /// The octets egress sends: the signer's header fields, the classifier's, then the stored body.
    public var outgoingBody: [UInt8] {
        let dkim = fields[Self.dkimField] ?? "", added = fields[Self.addedHeadersField] ?? ""
        if dkim.isEmpty && added.isEmpty { return body }
        return Array(dkim.utf8) + Array(added.utf8) + body
    }

    /// Recipients with the state egress recorded for them (`rcpt:<address>`), else as accepted.
    public var recipients: [Recipient] {
        envelope.recipients.map { r in
            if let json = fields["rcpt:\(r.address)"], let stored = Recipient.decode(json: json) {
                return stored
            }
            return r
        }
    }
}

/// How a stage leaves a message after processing it.
public enum Transition: Sendable, Hashable {
    /// Hand it on: it enters `topic`'s pending set, redriven if nobody records a result within
    /// the given time.
    case forward(topic: String, redriveAfterMilliseconds: Int)
    /// Nothing more to do with it (delivered, bounced, rejected): records expire after retention.
    case done
    /// Keep it in this stage and try again after the delay (a deferred delivery, a failed scan).
    case retry(afterMilliseconds: Int)
    /// Take it out of the stages into `held` (as `smgctl queue hold` does), to be released by an
    /// operator into `releaseTo`'s stage (a braked account's mail, R10).
    case hold(releaseTo: String)
}

/// A message a stage writes itself (an NDR, an operator notice), stored in the same commit as
/// the outcome that caused it and due at once in `topic`'s stage.
public struct NewMessage: Sendable {
    public var id: MessageID
    public var envelope: Envelope
    public var body: [UInt8]
    /// Its `accepted` event (recorded on the new message's own stream).
    public var accepted: Event
    public var topic: String

    public init(id: MessageID, envelope: Envelope, body: [UInt8], accepted: Event, topic: String) {
        self.id = id
        self.envelope = envelope
        self.body = body
        self.accepted = accepted
        self.topic = topic
    }
}

/// Errors of the store, with a code callers can switch on.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public static let corruptRecord = Code(name: "corrupt record")
        public static let unexpectedReply = Code(name: "unexpected reply")
        public var description: String { name }
    }
    public var code: Code
    public var message: String
    public var description: String { "\(code): \(message)" }
}

/// The system of record: message records, bodies, event logs and per-stage pending sets in Redis.
///
/// Every state change is one Lua script (one round trip, atomic), and each stage change writes
/// its events in the same script, so what the log says happened is exactly what happened.
/// Thread rules: `Sendable`; all calls go through the `RedisClient` pool.
public final class MessageStore: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace
    /// Upper bound of the global event stream (`XADD MAXLEN ~`).
    public let globalEventsMaxLength: Int
    /// How long records of finished messages are kept (seconds) for `smgctl trace`.
    public let retentionSeconds: Int
    /// How long the body of a finished message is kept (seconds); bodies are the bulk of memory.
    public let bodyRetentionSeconds: Int
    /// Upper bound of each message's own event stream (`XADD MAXLEN ~`), so a message that is
    /// retried for days cannot grow without bound.
    public let messageEventsMaxLength: Int
    /// Group commit for the hot scripts (see `RedisBatcher`): accepts of concurrent SMTP
    /// sessions, and claims and commits of a stage's concurrent workers, share round trips.
    let acceptBatch: RedisBatcher
    let claimBatch: RedisBatcher
    /// Claims that count only once the replicas of `acceptReplicas` have them (egress).
    let replicatedClaimBatch: RedisBatcher
    let acceptReplicas: ReplicaAcknowledgement?
    let commitBatch: RedisBatcher
    /// Commits of outcomes with external effects (a delivery happened), waiting for the same
    /// replicas as an accept: see `commit(…, replicated:)`.
    let replicatedCommitBatch: RedisBatcher

    public init(redis: RedisClient, keys: Keyspace = Keyspace(), globalEventsMaxLength: Int = 1_000_000,
                retentionSeconds: Int = 7 * 24 * 3600, bodyRetentionSeconds: Int = 3600,
                messageEventsMaxLength: Int = 1000, acceptReplicas: ReplicaAcknowledgement? = nil) {
        self.bodyRetentionSeconds = max(1, bodyRetentionSeconds)
        self.messageEventsMaxLength = max(10, messageEventsMaxLength)
        self.redis = redis
        self.keys = keys
        self.globalEventsMaxLength = globalEventsMaxLength
        self.retentionSeconds = retentionSeconds
        // With `acceptReplicas`, an accept counts only once that many replicas have it (`WAIT`
        // after each batch); ingress answers 451 otherwise (the client's retry is deduplicated).
        acceptBatch = RedisBatcher(client: redis, script: Scripts.accept, replicas: acceptReplicas)
        claimBatch = RedisBatcher(client: redis, script: Scripts.claim)
        replicatedClaimBatch = acceptReplicas == nil
            ? claimBatch : RedisBatcher(client: redis, script: Scripts.claim, replicas: acceptReplicas)
        self.acceptReplicas = acceptReplicas
        commitBatch = RedisBatcher(client: redis, script: Scripts.commit)
        replicatedCommitBatch = acceptReplicas == nil
            ? commitBatch : RedisBatcher(client: redis, script: Scripts.commit, replicas: acceptReplicas)
    }

    /// Stores a newly accepted message, its `accepted` event and its entry in the first
    /// stage's pending set, atomically. Only after this returns may ingress answer 250.
    /// Returns false if the id was already stored.
    @discardableResult
    public func accept(id: MessageID, envelope: Envelope, body: [UInt8], event: Event, topic: String,
                       redriveAfterMilliseconds: Int) async throws -> Bool {
        switch try await accept(id: id, envelope: envelope, body: body, event: event, topic: topic,
                                redriveAfterMilliseconds: redriveAfterMilliseconds, fingerprint: nil) {
        case .stored: return true
        case .existed, .duplicate: return false
        }
    }

    /// What `accept` did.
    public enum AcceptResult: Sendable, Equatable {
        case stored
        /// The id was stored already; nothing changed.
        case existed
        /// The same submission (fingerprint) was stored within its time to live as this message;
        /// nothing changed. Ingress answers 250 with that id: the client is retrying a transaction
        /// whose 250 it never saw (e.g. the first reply was a 451 after a Redis timeout, but the
        /// accept had been queued in Redis and ran later).
        case duplicate(of: MessageID)
    }

    /// `accept` with an optional submission fingerprint (a hash of login, envelope and content)
    /// remembered for `fingerprintTTLSeconds`.
    public func accept(id: MessageID, envelope: Envelope, body: [UInt8], event: Event, topic: String,
                       redriveAfterMilliseconds: Int, fingerprint: String?, fingerprintTTLSeconds: Int = 600)
        async throws -> AcceptResult
    {
        let ttl = fingerprint == nil ? 0 : max(1, fingerprintTTLSeconds)
        let reply = try await acceptBatch.eval(
            keys: [.init(keys.message(id)), .init(keys.body(id)), .init(keys.events(id)),
                   .init(keys.globalEvents), .init(keys.pending(topic)), .init(keys.submission(fingerprint ?? "-"))],
            args: [.init(id.rawValue), .init(envelope.jsonBytes()), .init(body), .init(event.jsonBytes()),
                   .init(redriveAfterMilliseconds), .init(globalEventsMaxLength), .init(ttl)])
        if case .error(let message) = reply { throw RedisError(.server, message) }
        if let text = reply.string, let prior = MessageID(text) { return .duplicate(of: prior) }
        return try Self.flag(reply) ? .stored : .existed
    }

    /// Takes the lease on a message received from `topic`. False: done already, or another
    /// process holds a live lease (a message seen twice is processed once).
    public func claim(_ id: MessageID, topic: String, owner: String, leaseMilliseconds: Int) async throws -> Bool {
        let reply = try await redis.eval(
            Scripts.claim, keys: [.init(keys.pending(topic)), .init(keys.owners(topic))],
            args: [.init(id.rawValue), .init(owner), .init(leaseMilliseconds)])
        return try Self.flag(reply)
    }

    /// What `claimAndLoad` found.
    public enum Claim: Sendable {
        /// Done already, or another process holds a live lease: nothing to do.
        case notYours
        /// The lease is yours, but the record is gone (expired or deleted).
        case missing
        case claimed(StoredMessage)
    }

    /// `claim` and `load` in one round trip: the hot path of every stage.
    /// `replicated`: with `acceptReplicas`, the claim counts only once that many replicas have it;
    /// else it throws (NOTREPLICATED) and the lease it took on the primary simply runs out.
    ///
    /// The lease is taken by the `claim` script; the record and body are read by plain `HGETALL`
    /// and `GET` right behind it in the same pipeline, on the same connection. Returned through
    /// Lua they cost Redis more than the claim itself (a 10 KiB body: ~25 µs against ~1 µs).
    /// Reading them after the script instead of inside it changes nothing a stage can see: the
    /// body never changes, and the record can change only by what could equally have come just
    /// after an atomic claim-and-read (an operator's hold or delete, which the commit then meets).
    public func claimAndLoad(_ id: MessageID, topic: String, owner: String, leaseMilliseconds: Int,
                             replicated: Bool = false) async throws -> Claim
    {
        let reply = try await (replicated ? replicatedClaimBatch : claimBatch).eval(
            keys: [.init(keys.pending(topic)), .init(keys.owners(topic))],
            args: [.init(id.rawValue), .init(owner), .init(leaseMilliseconds)],
            followUps: [["HGETALL", .init(keys.message(id))], ["GET", .init(keys.body(id))]])
        guard let parts = reply.array, parts.count == 3, let flag = parts[0].int else {
            throw StoreError(code: .unexpectedReply, message: "claimAndLoad \(id): \(reply)")
        }
        if flag == 0 { return .notYours }
        guard let message = try Self.message(id, record: parts[1], body: parts[2]) else { return .missing }
        return .claimed(message)
    }

    /// Takes the leases of up to `limit` messages of `topic` whose deadline has passed
    /// (their stage died, their frame was lost, or their retry time has come).
    /// `replicated`: as for `claimAndLoad`.
    public func claimExpired(topic: String, owner: String, leaseMilliseconds: Int, limit: Int,
                             replicated: Bool = false) async throws -> [MessageID]
    {
        let call: (keys: [RedisArg], args: [RedisArg]) = (
            [.init(keys.pending(topic)), .init(keys.owners(topic))], [.init(owner), .init(leaseMilliseconds), .init(limit)])
        let reply = try await redis.evalMany(Scripts.claimExpired, calls: [call],
                                             replicas: replicated ? acceptReplicas : nil)[0]
        guard let items = reply.array else {
            throw StoreError(code: .unexpectedReply, message: "claimExpired: \(reply)")
        }
        return items.compactMap { $0.string.flatMap(MessageID.init) }
    }

    /// Records a stage's result: its events, fields on the message record, new messages it made
    /// (NDRs, notices), and where the message goes next, atomically. False when the caller no
    /// longer holds the lease; then nothing was written and the caller must not hand the message on.
    /// Idempotent for one lease token: repeating a commit whose reply was lost returns true and
    /// writes nothing twice. A final recipient state (delivered, bounced) is never overwritten.
    /// `eventJSON`: the events already encoded (`Event.jsonBytes`), so a caller that also
    /// publishes them encodes them once.
    /// `replicated`: with `acceptReplicas`, the commit counts only once that many replicas have it
    /// (else it throws, and the caller repeats it — a no-op where it already ran, and on a newly
    /// promoted primary the write that the old one lost). For outcomes with external effects: a
    /// delivery whose record a failover lost would be made again.
    public func commit(_ id: MessageID, topic: String, owner: String, events: [Event],
                       fields: [String: String] = [:], newMessages: [NewMessage] = [],
                       transition: Transition, eventJSON: [[UInt8]]? = nil, replicated: Bool = false) async throws -> Bool {
        let mode: String, delay: Int, next: String
        switch transition {
        case .forward(let topic, let after): (mode, delay, next) = ("forward", after, keys.pending(topic))
        case .done: (mode, delay, next) = ("done", 0, keys.pending(topic))
        case .retry(let after): (mode, delay, next) = ("wait", after, keys.pending(topic))
        case .hold: (mode, delay, next) = ("hold", 0, keys.held)
        }
        // For `hold`, the delay's place carries the topic a release returns it to.
        var delayArg = RedisArg(delay)
        if case .hold(let releaseTo) = transition { delayArg = .init(releaseTo) }
        var args: [RedisArg] = [.init(id.rawValue), .init(owner), .init(mode), delayArg,
                                .init(globalEventsMaxLength), .init(retentionSeconds), .init(bodyRetentionSeconds),
                                .init(events.count), .init(newMessages.count), .init(messageEventsMaxLength)]
        if let eventJSON, eventJSON.count == events.count {
            args += eventJSON.map { .init($0) }
        } else {
            args += events.map { .init($0.jsonBytes()) }
        }
        var keyArgs: [RedisArg] = [.init(keys.pending(topic)), .init(keys.owners(topic)), .init(keys.message(id)),
                                   .init(keys.events(id)), .init(keys.globalEvents), .init(next), .init(keys.body(id))]
        for m in newMessages {
            keyArgs += [.init(keys.message(m.id)), .init(keys.body(m.id)), .init(keys.events(m.id)),
                        .init(keys.pending(m.topic))]
            args += [.init(m.id.rawValue), .init(m.envelope.jsonBytes()), .init(m.body), .init(m.accepted.jsonBytes())]
        }
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) { args += [.init(key), .init(value)] }
        let reply = try await (replicated ? replicatedCommitBatch : commitBatch).eval(keys: keyArgs, args: args)
        return try Self.flag(reply)
    }

    /// Records what a worker did after its lease was lost (another process took the message over):
    /// its events, and the recipient states in `fields` that are final where the record's are not,
    /// so a delivery a remote server confirmed is not repeated by later attempts. No transition.
    /// Returns how many recipient states were written (0 when the record is gone).
    @discardableResult
    public func recordOrphan(_ id: MessageID, events: [Event], fields: [String: String]) async throws -> Int {
        var args: [RedisArg] = [.init(globalEventsMaxLength), .init(messageEventsMaxLength), .init(events.count)]
        args += events.map { .init($0.jsonBytes()) }
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) { args += [.init(key), .init(value)] }
        let reply = try await redis.eval(
            Scripts.recordOrphan, keys: [.init(keys.message(id)), .init(keys.events(id)), .init(keys.globalEvents)],
            args: args)
        guard let written = reply.int else { throw StoreError(code: .unexpectedReply, message: "recordOrphan: \(reply)") }
        return max(0, Int(written))
    }

    /// Moves a message whose record cannot be read from `topic`'s stage to the quarantine set
    /// (`Keyspace.quarantine`), recording `event`. False when `owner` does not hold its lease.
    public func quarantine(_ id: MessageID, topic: String, owner: String, event: Event) async throws -> Bool {
        let reply = try await redis.eval(
            Scripts.quarantine,
            keys: [.init(keys.pending(topic)), .init(keys.owners(topic)), .init(keys.quarantine), .init(keys.message(id)),
                   .init(keys.events(id)), .init(keys.globalEvents)],
            args: [.init(id.rawValue), .init(owner), .init(topic), .init(event.jsonBytes()), .init(globalEventsMaxLength),
                   .init(messageEventsMaxLength)])
        return try Self.flag(reply)
    }

    /// What a stage's pending set looks like now (for metrics): how many, and how far behind the
    /// most overdue entry is (0 when nothing is past its deadline), by Redis server time.
    public func backlog(_ topic: String) async throws -> (count: Int, overdueMilliseconds: Int) {
        let replies = try await redis.pipeline([["ZCARD", .init(keys.pending(topic))],
                                                ["ZRANGE", .init(keys.pending(topic)), "0", "0", "WITHSCORES"],
                                                ["TIME"]])
        guard replies.count == 3, let count = replies[0].int else {
            throw StoreError(code: .unexpectedReply, message: "backlog \(topic): \(replies)")
        }
        var overdue = 0
        if let first = replies[1].array, first.count == 2, let scoreText = first[1].string, let score = Double(scoreText),
           let time = replies[2].array, time.count == 2, let s = time[0].string.flatMap(Int.init),
           let us = time[1].string.flatMap(Int.init) {
            overdue = max(0, s * 1000 + us / 1000 - Int(score))
        }
        return (Int(count), overdue)
    }

    /// How many messages operators hold and how many are quarantined.
    public func heldAndQuarantined() async throws -> (held: Int, quarantined: Int) {
        let replies = try await redis.pipeline([["HLEN", .init(keys.held)], ["ZCARD", .init(keys.quarantine)]])
        guard replies.count == 2, let h = replies[0].int, let q = replies[1].int else {
            throw StoreError(code: .unexpectedReply, message: "held/quarantine: \(replies)")
        }
        return (Int(h), Int(q))
    }

    /// Extends a lease this caller holds to now + `leaseMilliseconds`; false when it was lost.
    /// Stages call it periodically while they work, so a lease only runs out when its holder died.
    @discardableResult
    public func renew(_ id: MessageID, topic: String, owner: String, leaseMilliseconds: Int) async throws -> Bool {
        let reply = try await redis.eval(
            Scripts.renew, keys: [.init(keys.pending(topic)), .init(keys.owners(topic))],
            args: [.init(id.rawValue), .init(owner), .init(leaseMilliseconds)])
        return try Self.flag(reply)
    }

    /// Gives a lease back; the message is tried again after `retryAfterMilliseconds` by whichever
    /// process redrives it first. Used when a stage fails (fail closed) or drains on SIGTERM.
    @discardableResult
    public func release(_ id: MessageID, topic: String, owner: String, retryAfterMilliseconds: Int) async throws
        -> Bool
    {
        let reply = try await redis.eval(
            Scripts.release, keys: [.init(keys.pending(topic)), .init(keys.owners(topic))],
            args: [.init(id.rawValue), .init(owner), .init(retryAfterMilliseconds)])
        return try Self.flag(reply)
    }

    /// Reads a message's record and body in one round trip; nil if it does not exist (expired).
    public func load(_ id: MessageID) async throws -> StoredMessage? {
        let replies = try await redis.pipeline([["HGETALL", .init(keys.message(id))], ["GET", .init(keys.body(id))]])
        guard replies.count == 2 else { throw StoreError(code: .unexpectedReply, message: "load \(id): \(replies)") }
        return try Self.message(id, record: replies[0], body: replies[1])
    }

    /// Builds a message from its HGETALL and GET replies; nil when the record does not exist.
    static func message(_ id: MessageID, record: RedisValue, body: RedisValue) throws -> StoredMessage? {
        guard let pairs = record.array else {
            throw StoreError(code: .unexpectedReply, message: "record of \(id): \(record)")
        }
        if pairs.isEmpty { return nil }
        var fields: [String: String] = [:]
        var index = 0
        while index + 1 < pairs.count {
            if let k = pairs[index].string, let v = pairs[index + 1].string { fields[k] = v }
            index += 2
        }
        guard let envelopeJSON = fields["envelope"],
              let envelope = try? Envelope.decode(envelopeJSON.utf8)
        else { throw StoreError(code: .corruptRecord, message: "message \(id) has no readable envelope") }
        guard let bytes = body.bytes else {
            throw StoreError(code: .corruptRecord, message: "message \(id) has no body")
        }
        return StoredMessage(id: id, envelope: envelope, body: bytes, fields: fields)
    }

    /// Appends events that are not part of a stage transition (e.g. `stage.error`, `rejected.policy`).
    public func append(_ events: [Event]) async throws {
        var commands: [[RedisArg]] = []
        for event in events {
            let json = RedisArg(event.jsonBytes())
            if let id = event.id { commands.append(["XADD", .init(keys.events(id)), "*", "e", json]) }
            commands.append(["XADD", .init(keys.globalEvents), "MAXLEN", "~", .init(globalEventsMaxLength), "*", "e", json])
        }
        guard !commands.isEmpty else { return }
        let replies = try await redis.pipeline(commands)
        if let failure = replies.first(where: { if case .error = $0 { true } else { false } }) {
            throw StoreError(code: .unexpectedReply, message: "append events: \(failure)")
        }
    }

    /// One message's history, oldest first (`smgctl trace`).
    public func events(of id: MessageID) async throws -> [Event] {
        try Self.decodeStream(try await redis.command("XRANGE", .init(keys.events(id)), "-", "+"))
    }

    /// The newest `count` events of the whole gateway, oldest first.
    public func recentEvents(count: Int) async throws -> [Event] {
        let reply = try await redis.command("XREVRANGE", .init(keys.globalEvents), "+", "-", "COUNT", .init(count))
        return try Self.decodeStream(reply).reversed()
    }

    /// How many messages wait in (or are being processed by) the stage that consumes `topic`.
    public func pendingCount(_ topic: String) async throws -> Int {
        Int(try await redis.command("ZCARD", .init(keys.pending(topic))).int ?? 0)
    }

    static func decodeStream(_ reply: RedisValue) throws -> [Event] {
        guard let entries = reply.array else { throw StoreError(code: .unexpectedReply, message: "\(reply)") }
        return entries.compactMap { entry in
            guard let parts = entry.array, parts.count == 2, let kv = parts[1].array, kv.count >= 2,
                  let json = kv[1].bytes
            else { return nil }
            return try? Event.decode(json)
        }
    }

    static func flag(_ reply: RedisValue) throws -> Bool {
        guard let value = reply.int else { throw StoreError(code: .unexpectedReply, message: "\(reply)") }
        return value == 1
    }
}
