public import SMGCore
import SMGRedis
import Foundation

/// Where a message sits, as the queue sees it.
public enum QueueLocation: Sendable, Hashable {
    /// In `pending:<topic>` with its deadline (ms, Redis time) and the owner entry of
    /// `owner:<topic>` (a lease token, `~wait`, or nil when nobody took it yet).
    case pending(topic: String, deadline: Int64, owner: String?)
    /// In `held`, taken from `topic`'s stage by an operator.
    case held(from: String)
    /// In `quarantine` since the given time (ms): its record could not be read.
    case quarantined(since: Int64)
    /// In no set: finished (done, deleted), or unknown.
    case nowhere

    /// The topic of its stage (for a held message: the one it was taken from).
    public var topic: String? {
        switch self {
        case .pending(let topic, _, _): topic
        case .held(let from): from
        case .quarantined, .nowhere: nil
        }
    }

    /// How events and listings name the place: the topic, `held`, `quarantine` or `none`.
    public var name: String {
        switch self {
        case .pending(let topic, _, _): topic
        case .held: "held"
        case .quarantined: "quarantine"
        case .nowhere: "none"
        }
    }
}

/// The states `smgctl queue list --state` filters on. A message can be in several at once
/// (a deferred message waiting for its retry time is also queued); `QueueItem.state` is the
/// most specific one.
public enum QueueState: String, Sendable, Hashable, CaseIterable {
    /// Waiting or leased in a stage's pending set.
    case queued
    /// In a pending set and past its deadline: the next redrive pass takes it.
    case due
    /// Taken out of its stage by an operator.
    case held
    /// Its record could not be read; no stage works on it.
    case quarantined
    /// At least one recipient is deferred (egress will try it again).
    case deferred
}

/// The stages `requeue --stage` accepts.
public enum QueueStage: String, Sendable, Hashable, CaseIterable {
    case accepted, scanned, classified, outbound
}

/// One message as the queue commands see it: where it sits, its record (without the body) and
/// the states that apply to it, all read in one round trip.
public struct QueueItem: Sendable {
    public var id: MessageID
    public var location: QueueLocation
    /// Every field of `msg:<id>` (empty when there is no record).
    public var fields: [String: String]
    /// The decoded envelope; nil when the record is missing or unreadable.
    public var envelope: Envelope?
    /// Size of `body:<id>` in bytes (0 when there is none).
    public var bodySize: Int
    /// Redis time (ms) when this was read: ages and "due" are relative to it.
    public var now: Int64

    /// Recipients with their recorded state (`rcpt:<address>`), else as accepted.
    public var recipients: [Recipient] {
        guard let envelope else { return [] }
        return envelope.recipients.map { r in
            fields["rcpt:\(r.address)"].flatMap(Recipient.decode(json:)) ?? r
        }
    }

    /// The record's `created` time (ms), else the time in the message id.
    public var createdMilliseconds: Int64 {
        fields["created"].flatMap { Int64($0) } ?? Int64(id.timestampMilliseconds)
    }

    public var ageMilliseconds: Int64 { max(0, now - createdMilliseconds) }

    /// True when a worker holds a live lease (an owner token, not `~wait`, deadline ahead).
    public var leased: Bool {
        if case .pending(_, let deadline, let owner?) = location { return owner != QueueAdmin.waitOwner && deadline > now }
        return false
    }

    /// Whether the record says it is finished (`done` or `deleted`).
    public var finished: Bool { fields["state"] == "done" || fields["state"] == "deleted" }

    public var exists: Bool { !fields.isEmpty || location != .nowhere }

    /// Every `QueueState` that applies.
    public var states: Set<QueueState> {
        var s: Set<QueueState> = []
        switch location {
        case .pending(_, let deadline, _):
            s.insert(.queued)
            if deadline <= now { s.insert(.due) }
        case .held: s.insert(.held)
        case .quarantined: s.insert(.quarantined)
        case .nowhere: break
        }
        if location != .nowhere, recipients.contains(where: { $0.state == .deferred }) { s.insert(.deferred) }
        return s
    }

    /// The most specific state (held, quarantined, due, deferred, queued); nil when finished or unknown.
    public var state: QueueState? {
        let s = states
        return [QueueState.held, .quarantined, .due, .deferred, .queued].first(where: s.contains)
    }
}

/// What `smgctl queue list` selects; every filter given must match.
public struct QueueFilter: Sendable {
    public var topic: String?
    public var olderThanMilliseconds: Int64?
    /// Exact, case-insensitive; `""` or `<>` select the null sender.
    public var sender: String?
    public var recipientDomain: String?
    public var customer: String?
    public var state: QueueState?
    public var limit: Int

    public init(topic: String? = nil, olderThanMilliseconds: Int64? = nil, sender: String? = nil,
                recipientDomain: String? = nil, customer: String? = nil, state: QueueState? = nil, limit: Int = 100) {
        self.topic = topic
        self.olderThanMilliseconds = olderThanMilliseconds
        self.sender = sender
        self.recipientDomain = recipientDomain
        self.customer = customer
        self.state = state
        self.limit = limit
    }

    public func matches(_ item: QueueItem) -> Bool {
        if let topic, item.location.topic != topic { return false }
        if let olderThanMilliseconds, item.ageMilliseconds < olderThanMilliseconds { return false }
        if let state, !item.states.contains(state) { return false }
        if let sender {
            let wanted = sender == "<>" ? "" : sender.lowercased()
            guard let envelope = item.envelope, envelope.sender.lowercased() == wanted else { return false }
        }
        if let recipientDomain {
            let wanted = recipientDomain.lowercased()
            guard item.recipients.contains(where: { $0.domain == wanted }) else { return false }
        }
        if let customer, item.envelope?.customer != customer { return false }
        return true
    }
}

/// How many messages are where: per topic, held and quarantined.
public struct QueueSummary: Sendable, Hashable {
    public var pending: [String: Int]
    public var held: Int
    public var quarantined: Int
}

/// The NDR an operator bounce stores (built by `SMGNDR`, stored by the bounce script), and the
/// `ndr.sent` event recorded on the original message.
public struct NDRMessage: Sendable {
    public var message: NewMessage
    public var sent: Event
    public var id: MessageID { message.id }

    public init(message: NewMessage, sent: Event) {
        self.message = message
        self.sent = sent
    }
}

/// Why an operator action was refused; nothing was changed for that message.
public struct QueueError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// No record and in no set.
        public static let unknownMessage = Code(name: "unknown message")
        /// Done or deleted already.
        public static let finished = Code(name: "finished")
        public static let notHeld = Code(name: "not held")
        public static let alreadyHeld = Code(name: "already held")
        public static let quarantined = Code(name: "quarantined")
        /// The record (envelope or body) cannot be read, and the action needs it.
        public static let unreadable = Code(name: "unreadable")
        /// A worker holds a live lease and the action would run it a second time.
        public static let leased = Code(name: "leased")
        /// The message kept moving under us (a stage committed between every read and write).
        public static let busy = Code(name: "busy")
        public var description: String { name }
    }
    public var code: Code
    public var id: MessageID
    public var message: String
    public var description: String { "\(id): \(message)" }
}

/// What an action did (for the operator's report).
public struct QueueActionResult: Sendable {
    public var id: MessageID
    public var from: String
    public var to: String
    /// The events written (in the same script as the change).
    public var events: [Event]
    /// For a bounce: the NDR's id, when one was stored.
    public var ndr: MessageID?
}

/// Operator control of the queue (what postqueue/postsuper are for Postfix): list, inspect, hold,
/// release, bounce, delete and requeue messages.
///
/// Every change is one Lua script (`QueueScripts.transition`) that re-checks the place and the
/// fields it was computed from, and writes the change together with its event (`queue.*`, facts
/// `action`, `reason`, `operator`, `from`, `to`) to the message's stream and the global stream. A
/// refused action writes nothing. Because held and finished messages are in no pending set, no
/// redrive takes them, and a worker whose message was taken away finds its commit refused.
/// Thread rules: `Sendable`; all calls go through the store's `RedisClient`.
public struct QueueAdmin: Sendable {
    public let store: MessageStore
    /// `site` and `process` of the events this writes.
    public let site: String
    public let process: String

    /// The owner entry of a message that waits for its time (see `Keyspace.owners`).
    public static let waitOwner = "~wait"
    /// The reply recorded for recipients an operator bounces. The one reply text outside
    /// `SMTPStatus` (SMTPProtocol): SMGStore sits directly on SMGCore and SMGRedis and stays
    /// free of NIO and the protocol modules, so its single reply lives here.
    public static func bounceReply(reason: String) -> String { "550 5.0.0 Bounced by operator: \(reason)" }

    var keys: Keyspace { store.keys }
    var redis: RedisClient { store.redis }

    public init(store: MessageStore, site: String, process: String) {
        self.store = store
        self.site = site
        self.process = process
    }

    // MARK: Reading

    /// Where the message sits and its record, in one round trip; `exists` is false for an unknown id.
    public func locate(_ id: MessageID) async throws -> QueueItem {
        var commands: [[RedisArg]] = [["TIME"], ["HGETALL", .init(keys.message(id))], ["STRLEN", .init(keys.body(id))],
                                      ["HGET", .init(keys.held), .init(id.rawValue)],
                                      ["ZSCORE", .init(keys.quarantine), .init(id.rawValue)]]
        for topic in Topic.all {
            commands.append(["ZSCORE", .init(keys.pending(topic)), .init(id.rawValue)])
            commands.append(["HGET", .init(keys.owners(topic)), .init(id.rawValue)])
        }
        let r = try await redis.pipeline(commands)
        try Self.checkReplies(r, count: commands.count, what: "locate \(id)")
        var location = QueueLocation.nowhere
        if let from = r[3].string {
            location = .held(from: from)
        } else if let since = Self.score(r[4]) {
            location = .quarantined(since: since)
        } else {
            for (index, topic) in Topic.all.enumerated() {
                if let deadline = Self.score(r[5 + 2 * index]) {
                    location = .pending(topic: topic, deadline: deadline, owner: r[6 + 2 * index].string)
                    break
                }
            }
        }
        let fields = Self.hash(r[1])
        return QueueItem(id: id, location: location, fields: fields, envelope: Self.envelope(fields),
                         bodySize: Int(r[2].int ?? 0), now: try Self.time(r[0]))
    }

    /// Counts per topic, held and quarantined.
    public func summary() async throws -> QueueSummary {
        var commands: [[RedisArg]] = Topic.all.map { ["ZCARD", .init(keys.pending($0))] }
        commands += [["HLEN", .init(keys.held)], ["ZCARD", .init(keys.quarantine)]]
        let r = try await redis.pipeline(commands)
        try Self.checkReplies(r, count: commands.count, what: "summary")
        var pending: [String: Int] = [:]
        for (index, topic) in Topic.all.enumerated() { pending[topic] = Int(r[index].int ?? 0) }
        return QueueSummary(pending: pending, held: Int(r[Topic.all.count].int ?? 0),
                            quarantined: Int(r[Topic.all.count + 1].int ?? 0))
    }

    /// Messages in pending sets, held and quarantined that match `filter`, oldest first, at most
    /// `filter.limit`. Records are read in batches, so a long queue costs a few round trips.
    public func list(_ filter: QueueFilter) async throws -> [QueueItem] {
        let topics = filter.topic.map { [$0] } ?? Topic.all
        var commands: [[RedisArg]] = [["TIME"], ["HGETALL", .init(keys.held)],
                                      ["ZRANGE", .init(keys.quarantine), "0", "-1", "WITHSCORES"]]
        for topic in topics {
            commands.append(["ZRANGE", .init(keys.pending(topic)), "0", "-1", "WITHSCORES"])
            commands.append(["HGETALL", .init(keys.owners(topic))])
        }
        let r = try await redis.pipeline(commands)
        try Self.checkReplies(r, count: commands.count, what: "list")
        let now = try Self.time(r[0])
        var places: [MessageID: QueueLocation] = [:]
        for (index, topic) in topics.enumerated() {
            let owners = Self.hash(r[4 + 2 * index])
            for (member, score) in Self.pairs(r[3 + 2 * index]) {
                guard let id = MessageID(member), let deadline = Int64(score) else { continue }
                places[id] = .pending(topic: topic, deadline: deadline, owner: owners[member])
            }
        }
        for (member, from) in Self.hash(r[1]) {
            if let id = MessageID(member), filter.topic == nil || filter.topic == from { places[id] = .held(from: from) }
        }
        if filter.topic == nil {
            for (member, score) in Self.pairs(r[2]) {
                if let id = MessageID(member) { places[id] = .quarantined(since: Int64(score) ?? 0) }
            }
        }
        var found: [QueueItem] = []
        let ids = places.keys.sorted()
        var start = 0
        while start < ids.count, found.count < filter.limit {
            let batch = ids[start..<min(ids.count, start + 200)]
            start += batch.count
            var reads: [[RedisArg]] = []
            for id in batch { reads += [["HGETALL", .init(keys.message(id))], ["STRLEN", .init(keys.body(id))]] }
            let replies = try await redis.pipeline(reads)
            try Self.checkReplies(replies, count: reads.count, what: "list records")
            for (offset, id) in batch.enumerated() {
                let fields = Self.hash(replies[2 * offset])
                let item = QueueItem(id: id, location: places[id]!, fields: fields, envelope: Self.envelope(fields),
                                     bodySize: Int(replies[2 * offset + 1].int ?? 0), now: now)
                if filter.matches(item) {
                    found.append(item)
                    if found.count >= filter.limit { break }
                }
            }
        }
        return found
    }

    /// The newest `count` events of one message, oldest first.
    public func lastEvents(of id: MessageID, count: Int = 20) async throws -> [Event] {
        let reply = try await redis.command("XREVRANGE", .init(keys.events(id)), "+", "-", "COUNT", .init(count))
        return try MessageStore.decodeStream(reply).reversed()
    }

    // MARK: Actions

    /// Takes a queued message out of its stage: out of the pending set and the owner hash, into
    /// `held` (id → topic), `state = held`, `held_from = <topic>`. A worker holding its lease finds
    /// its commit refused.
    public func hold(_ id: MessageID, reason: String?, operator actor: String) async throws -> QueueActionResult {
        try await act(id) { item in
            switch item.location {
            case .pending(let topic, _, _):
                var change = Change(action: "hold", dest: .held(topic), to: "held")
                change.set = ["state": "held", "held_from": topic]
                if let reason { change.set["held_reason"] = reason }
                change.events = [event(EventType.queueHeld, id, item, change, reason: reason, actor: actor)]
                return change
            case .held: throw QueueError(code: .alreadyHeld, id: id, message: "is already held (release it first)")
            case .quarantined:
                throw QueueError(code: .quarantined, id: id, message: "is quarantined, not in a stage (release or delete it)")
            case .nowhere: throw finishedOrUnknown(item)
            }
        }
    }

    /// Puts a held message back into the pending set it was taken from with deadline now (the next
    /// redrive pass takes it), `state = queued`. A quarantined message is released into the stage
    /// named by its record (`quarantined_from`, else `mail.accepted`) only if its record is readable now.
    public func release(_ id: MessageID, operator actor: String) async throws -> QueueActionResult {
        try await act(id) { item in
            let topic: String
            switch item.location {
            case .held(let from): topic = from
            case .quarantined:
                try readable(item)
                topic = item.fields["quarantined_from"].flatMap { Topic.all.contains($0) ? $0 : nil } ?? Topic.accepted
            case .pending(let t, _, _):
                throw QueueError(code: .notHeld, id: id, message: "is not held (it is queued in \(t))")
            case .nowhere: throw finishedOrUnknown(item)
            }
            var change = Change(action: "release", dest: .pending(topic), to: topic)
            change.set = ["state": "queued"]
            change.delete = ["held_from", "held_reason"]
            change.events = [event(EventType.queueReleased, id, item, change, reason: nil, actor: actor)]
            return change
        }
    }

    /// Bounces every recipient that is not final (`bounced`, reply `550 5.0.0 Bounced by operator:
    /// <reason>`), finishes the message, and stores the NDR that `notification` builds (nil: none,
    /// e.g. for the null sender) — all in one script. `notification` gets the message and every
    /// bounced recipient (earlier ones included: egress has not reported them yet).
    public func bounce(_ id: MessageID, reason: String, operator actor: String,
                       notification: @Sendable (StoredMessage, [Recipient]) -> NDRMessage?) async throws
        -> QueueActionResult
    {
        try await act(id) { item in
            switch item.location {
            case .nowhere: throw finishedOrUnknown(item)
            case .quarantined, .held, .pending: try readable(item)
            }
            guard let envelope = item.envelope else { throw QueueError(code: .unreadable, id: id, message: "no envelope") }
            var change = Change(action: "bounce", dest: .finish("done"), to: "done")
            let reply = Self.bounceReply(reason: reason)
            var bounced: [Recipient] = []
            var recipientEvents: [Event] = []
            for var r in item.recipients {
                if r.state == .bounced { bounced.append(r) }
                guard !r.state.isFinal else { continue }
                let field = "rcpt:\(r.address)"
                change.check[field] = item.fields[field] ?? ""
                r.state = .bounced
                r.lastReply = reply
                r.nextAttempt = nil
                change.set[field] = r.jsonString()
                bounced.append(r)
                recipientEvents.append(Event(type: EventType.bounced, id: id, site: site, process: process, facts: [
                    "recipient": .string(r.address), "reply": .string(reply), "attempts": .int(r.attempts),
                    "reason": .string("operator: \(reason)"), "operator": .string(actor),
                ]))
            }
            guard !recipientEvents.isEmpty else {
                throw QueueError(code: .finished, id: id, message: "every recipient is final already; nothing to bounce")
            }
            let body = try await store.redis.command("GET", .init(keys.body(id))).bytes ?? []
            let message = StoredMessage(id: id, envelope: envelope, body: body, fields: item.fields)
            change.ndr = notification(message, bounced)
            var facts = change.facts(item, reason: reason, actor: actor)
            facts["recipients"] = .array(recipientEvents.compactMap { $0.facts["recipient"] })
            if let ndr = change.ndr { facts["ndr"] = .string(ndr.id.rawValue) }
            change.events = [Event(type: EventType.queueBounced, id: id, site: site, process: process, facts: facts)]
                + recipientEvents + (change.ndr.map { [$0.sent] } ?? [])
            return change
        }
    }

    /// Removes a message from every pending set, held and quarantine without delivering it:
    /// `state = deleted`; its records expire after the store's retention (the body after the body retention).
    public func delete(_ id: MessageID, reason: String, operator actor: String) async throws -> QueueActionResult {
        try await act(id) { item in
            if item.location == .nowhere { throw finishedOrUnknown(item) }
            var change = Change(action: "delete", dest: .finish("deleted"), to: "deleted")
            change.set = ["deleted_reason": reason]
            change.events = [event(EventType.queueDeleted, id, item, change, reason: reason, actor: actor)]
            return change
        }
    }

    /// Puts a message into a pending set with deadline now: by default the stage it is in (or was
    /// held from; a quarantined one: `mail.accepted`), or `stage` (`accepted` restarts the pipeline at
    /// the scanner; `outbound` is the egress of its recorded lane, `bad` when it has none). Deferred
    /// recipients' next attempt is cleared so egress tries them at once. Refused while a worker holds
    /// a live lease (it would run twice at once): hold it first, or wait for its lease to end.
    public func requeue(_ id: MessageID, stage: QueueStage?, operator actor: String) async throws -> QueueActionResult {
        try await act(id) { item in
            let current: String
            switch item.location {
            case .pending(let topic, _, let owner):
                if item.leased {
                    throw QueueError(code: .leased, id: id,
                                     message: "is being processed in \(topic) (lease of \(owner ?? "?")); hold it first or try again later")
                }
                current = topic
            case .held(let from): current = from
            case .quarantined:
                try readable(item)
                current = Topic.accepted
            case .nowhere: throw finishedOrUnknown(item)
            }
            let target: String
            switch stage {
            case nil: target = current
            case .accepted: target = Topic.accepted
            case .scanned: target = Topic.scanned
            case .classified: target = Topic.classified
            case .outbound: target = (item.fields["lane"].flatMap(Lane.init(rawValue:)) ?? .bad).topic
            }
            var change = Change(action: "requeue", dest: .pending(target), to: target)
            change.set = ["state": "queued"]
            change.delete = ["held_from", "held_reason"]
            var reset: [String] = []
            for var r in item.recipients where r.state == .deferred && r.nextAttempt != nil {
                let field = "rcpt:\(r.address)"
                change.check[field] = item.fields[field] ?? ""
                r.nextAttempt = nil
                change.set[field] = r.jsonString()
                reset.append(r.address)
            }
            var facts = change.facts(item, reason: nil, actor: actor)
            if !reset.isEmpty { facts["reset_recipients"] = .array(reset.map { .string($0) }) }
            change.events = [Event(type: EventType.queueRequeued, id: id, site: site, process: process, facts: facts)]
            return change
        }
    }

    // MARK: Machinery

    /// One planned change, computed from one `QueueItem` read.
    struct Change {
        enum Dest { case held(String), pending(String), finish(String) }
        /// The `action` fact: hold, release, bounce, delete, requeue.
        var action: String
        var dest: Dest
        var to: String
        var check: [String: String] = [:]
        var set: [String: String] = [:]
        var delete: [String] = []
        var events: [Event] = []
        var ndr: NDRMessage?

        func facts(_ item: QueueItem, reason: String?, actor: String) -> [String: JSONValue] {
            var facts: [String: JSONValue] = [
                "action": .string(action), "operator": .string(actor), "from": .string(item.location.name),
                "to": .string(to),
            ]
            if let reason { facts["reason"] = .string(reason) }
            return facts
        }
    }

    func event(_ type: String, _ id: MessageID, _ item: QueueItem, _ change: Change, reason: String?,
               actor: String) -> Event {
        Event(type: type, id: id, site: site, process: process, facts: change.facts(item, reason: reason, actor: actor))
    }

    func readable(_ item: QueueItem) throws {
        guard item.envelope != nil else {
            throw QueueError(code: .unreadable, id: item.id,
                             message: item.fields.isEmpty ? "has no record (delete it)"
                                 : "has no readable envelope (repair or delete it)")
        }
        guard item.bodySize > 0 else { throw QueueError(code: .unreadable, id: item.id, message: "has no body (delete it)") }
    }

    func finishedOrUnknown(_ item: QueueItem) -> QueueError {
        if item.fields.isEmpty { return QueueError(code: .unknownMessage, id: item.id, message: "no such message") }
        let state = item.fields["state"] ?? "?"
        return QueueError(code: .finished, id: item.id,
                          message: item.finished ? "is finished (state \(state))" : "is in no queue (state \(state))")
    }

    /// Reads, plans and runs the change; when the message moved or a checked field changed in
    /// between, reads again (a few times) — nothing was written by a refused attempt.
    func act(_ id: MessageID, plan: (QueueItem) async throws -> Change) async throws -> QueueActionResult {
        for _ in 0..<5 {
            let item = try await locate(id)
            let change = try await plan(item)
            if let ndrStored = try await run(item, change) {
                return QueueActionResult(id: id, from: item.location.name, to: change.to, events: change.events,
                                         ndr: ndrStored ? change.ndr?.id : nil)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw QueueError(code: .busy, id: id, message: "kept moving between stages; try again")
    }

    /// Runs the transition script; nil when it refused (moved / changed), else whether an NDR was stored.
    func run(_ item: QueueItem, _ change: Change) async throws -> Bool? {
        let id = item.id
        let kind: String, topic: String, owner: String
        switch item.location {
        case .pending(let t, _, let o): (kind, topic, owner) = ("pending", t, o ?? "")
        case .held(let from): (kind, topic, owner) = ("held", from, "")
        case .quarantined: (kind, topic, owner) = ("quarantined", Topic.accepted, "")
        case .nowhere: return nil
        }
        let dest: String, destArg: String, destTopic: String
        switch change.dest {
        case .held(let from): (dest, destArg, destTopic) = ("held", from, topic)
        case .pending(let t): (dest, destArg, destTopic) = ("pending", "", t)
        case .finish(let state): (dest, destArg, destTopic) = ("final", state, topic)
        }
        let ndrID = change.ndr?.id ?? id
        var args: [RedisArg] = [.init(id.rawValue), .init(kind), .init(topic), .init(owner), .init(dest), .init(destArg),
                                .init(store.globalEventsMaxLength), .init(store.retentionSeconds),
                                .init(store.bodyRetentionSeconds)]
        args.append(.init(change.check.count))
        for (k, v) in change.check.sorted(by: { $0.key < $1.key }) { args += [.init(k), .init(v)] }
        args.append(.init(change.set.count))
        for (k, v) in change.set.sorted(by: { $0.key < $1.key }) { args += [.init(k), .init(v)] }
        args.append(.init(change.delete.count))
        args += change.delete.map { .init($0) }
        args.append(.init(change.events.count))
        args += change.events.map { .init($0.jsonBytes()) }
        if let ndr = change.ndr {
            args += ["1", .init(ndr.id.rawValue), .init(ndr.message.envelope.jsonBytes()), .init(ndr.message.body),
                     .init(ndr.message.accepted.jsonBytes())]
        } else {
            args.append("0")
        }
        let reply = try await redis.eval(
            QueueScripts.transition,
            keys: [.init(keys.message(id)), .init(keys.body(id)), .init(keys.events(id)), .init(keys.globalEvents),
                   .init(keys.held), .init(keys.quarantine), .init(keys.pending(topic)), .init(keys.owners(topic)),
                   .init(keys.pending(destTopic)), .init(keys.owners(destTopic)), .init(keys.message(ndrID)),
                   .init(keys.body(ndrID)), .init(keys.events(ndrID)), .init(keys.pending(Topic.accepted))],
            args: args)
        guard let parts = reply.array, let status = parts.first?.string else {
            throw StoreError(code: .unexpectedReply, message: "queue transition \(id): \(reply)")
        }
        switch status {
        case "ok": return parts.count > 1 && parts[1].int == 1
        case "moved", "changed": return nil
        default: throw StoreError(code: .unexpectedReply, message: "queue transition \(id): \(reply)")
        }
    }

    static func checkReplies(_ replies: [RedisValue], count: Int, what: String) throws {
        guard replies.count == count else { throw StoreError(code: .unexpectedReply, message: "\(what): \(replies)") }
        if let failure = replies.first(where: { if case .error = $0 { true } else { false } }) {
            throw StoreError(code: .unexpectedReply, message: "\(what): \(failure)")
        }
    }

    static func time(_ reply: RedisValue) throws -> Int64 {
        guard let parts = reply.array, parts.count == 2, let s = parts[0].int, let us = parts[1].int else {
            throw StoreError(code: .unexpectedReply, message: "TIME: \(reply)")
        }
        return s * 1000 + us / 1000
    }

    static func score(_ reply: RedisValue) -> Int64? {
        guard let text = reply.string, let value = Double(text) else { return nil }
        return Int64(value)
    }

    static func hash(_ reply: RedisValue) -> [String: String] {
        Dictionary(pairs(reply), uniquingKeysWith: { _, last in last })
    }

    static func pairs(_ reply: RedisValue) -> [(String, String)] {
        guard let items = reply.array else { return [] }
        var out: [(String, String)] = []
        var index = 0
        while index + 1 < items.count {
            if let k = items[index].string, let v = items[index + 1].string { out.append((k, v)) }
            index += 2
        }
        return out
    }

    static func envelope(_ fields: [String: String]) -> Envelope? {
        fields["envelope"].flatMap { try? Envelope.decode(Array($0.utf8)) }
    }
}
