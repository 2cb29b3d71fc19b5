public import SMGCore
import SMGRedis
public import Foundation

/// What to look for in the event log; every criterion given must match.
public struct MessageQuery: Sendable, Hashable {
    /// One message (its own event stream is read; the global stream is not scanned).
    public var id: MessageID?
    /// An address (exact, case-insensitive), `@domain` (every sender of the domain), or `<>` / `""`
    /// for the null sender.
    public var sender: String?
    /// An address (exact, case-insensitive), or `@domain` / `domain` (any recipient in the domain).
    public var recipient: String?
    /// A customer id (exact).
    public var customer: String?
    /// Accepted at or after this time (ms since the epoch).
    public var sinceMilliseconds: Int64?
    /// Accepted at or before this time (ms since the epoch).
    public var untilMilliseconds: Int64?
    /// At most this many results.
    public var limit: Int
    /// At most this many entries of the global stream are read (newest first), whatever matched.
    public var scanLimit: Int

    public init(id: MessageID? = nil, sender: String? = nil, recipient: String? = nil, customer: String? = nil,
                sinceMilliseconds: Int64? = nil, untilMilliseconds: Int64? = nil, limit: Int = 100,
                scanLimit: Int = 200_000) {
        self.id = id
        self.sender = sender
        self.recipient = recipient
        self.customer = customer
        self.sinceMilliseconds = sinceMilliseconds
        self.untilMilliseconds = untilMilliseconds
        self.limit = limit
        self.scanLimit = scanLimit
    }

    func senderMatches(_ sender: String) -> Bool {
        guard let wanted = self.sender else { return true }
        if wanted == "<>" || wanted.isEmpty { return sender.isEmpty }
        return Self.addressMatches(sender, wanted)
    }

    func recipientMatches(_ recipients: [String]) -> Bool {
        guard let wanted = recipient else { return true }
        let pattern = wanted.contains("@") ? wanted : "@" + wanted
        return recipients.contains { Self.addressMatches($0, pattern) }
    }

    /// `@domain` matches the domain part; anything else the whole address (case-insensitive).
    static func addressMatches(_ address: String, _ pattern: String) -> Bool {
        if pattern.hasPrefix("@") { return Address.domain(of: address) == pattern.dropFirst().lowercased() }
        return address.lowercased() == pattern.lowercased()
    }

    func timeMatches(_ ms: Int64) -> Bool {
        if let sinceMilliseconds, ms < sinceMilliseconds { return false }
        if let untilMilliseconds, ms > untilMilliseconds { return false }
        return true
    }
}

/// One message found: its `accepted` facts, its recipients when its record still exists, and
/// the type of its newest event.
public struct MessageSummary: Sendable, Hashable {
    public var id: MessageID
    /// When it was accepted.
    public var time: Date
    public var sender: String
    /// From the envelope in the message record; nil when the record is gone (expired).
    public var recipients: [String]?
    /// The `recipients` fact of `accepted` (a count), else the envelope's.
    public var recipientCount: Int?
    public var customer: String?
    public var login: String?
    /// The type of the message's newest event (`delivered`, `deferred`, `queue.held`, …); nil when
    /// its event stream is gone.
    public var state: String?

    /// `{id, time, sender, recipients (when known), recipient_count, customer, login, state}`.
    public var json: [String: JSONValue] {
        var o: [String: JSONValue] = [
            "id": .string(id.rawValue), "time": .string(Timestamp.format(time)), "sender": .string(sender),
            "customer": customer.map { .string($0) } ?? .null, "state": state.map { .string($0) } ?? .null,
            "recipient_count": recipientCount.map { .int($0) } ?? .null,
        ]
        if let recipients { o["recipients"] = .array(recipients.map { .string($0) }) }
        if let login { o["login"] = .string(login) }
        return o
    }
}

/// What a search found, and whether it looked at everything in its time range.
public struct MessageSearchResult: Sendable {
    public var messages: [MessageSummary]
    /// Entries of the global stream read.
    public var scanned: Int
    /// False when `scanLimit` ended the scan before the time range (or the stream) was exhausted:
    /// older matches may exist; narrow the range with `since`/`until`.
    public var complete: Bool
}

/// Finds messages by envelope facts in the event log (smg-admin's message search; smgctl can use
/// it too).
///
/// How: the global event stream (`Keyspace.globalEvents`, entry ids are Redis ms timestamps) is
/// read newest first with `XREVRANGE <until> <since> COUNT 1000`, page by page, for `accepted`
/// events (recognised by the end of their JSON before decoding, so other events cost only the
/// transfer); sender, customer and time are matched on the event's facts. Recipients are not in
/// `accepted` (only their count), so for each candidate of a page one pipeline reads the envelope
/// from the message record (`HGET msg:<id> envelope`) and the newest event of its own stream
/// (`XREVRANGE ev:<id> + - COUNT 1`, the `state`). The recipient criterion matches the envelope's
/// recipients: delivery events carry recipients too, but they live exactly as long as the record
/// (both expire after the store's retention), so they would find nothing more. A message whose
/// record expired therefore never matches a recipient criterion, and shows no recipients.
/// Cost: at most `scanLimit` stream entries read (pages of 1000, so Redis is never blocked long),
/// plus one pipelined round trip per page with candidates.
public struct MessageSearch: Sendable {
    public let store: MessageStore

    public init(store: MessageStore) { self.store = store }

    static let acceptedSuffix = Array("\"type\":\"accepted\"}".utf8)
    static let pageSize = 1000

    public func search(_ query: MessageQuery) async throws -> MessageSearchResult {
        if let id = query.id { return MessageSearchResult(messages: try await one(id, query), scanned: 0, complete: true) }
        let keys = store.keys
        let limit = max(1, query.limit)
        var found: [MessageSummary] = []
        var seen: Set<MessageID> = []
        var scanned = 0
        var complete = false
        var end = query.untilMilliseconds.map { String($0) } ?? "+"
        let start = query.sinceMilliseconds.map { String($0) } ?? "-"
        if let since = query.sinceMilliseconds, let until = query.untilMilliseconds, since > until {
            return MessageSearchResult(messages: [], scanned: 0, complete: true)
        }
        while found.count < limit {
            let page = min(Self.pageSize, query.scanLimit - scanned)
            guard page > 0 else { break }
            let reply = try await store.redis.command("XREVRANGE", .init(keys.globalEvents), .init(end), .init(start),
                                                      "COUNT", .init(page))
            guard let entries = reply.array else { throw StoreError(code: .unexpectedReply, message: "XREVRANGE: \(reply)") }
            var candidates: [(MessageID, Event)] = []
            var lastID: String?
            for entry in entries {
                guard let parts = entry.array, parts.count == 2 else { continue }
                lastID = parts[0].string
                scanned += 1
                guard let kv = parts[1].array, kv.count >= 2, let json = kv[1].bytes,
                      json.count > Self.acceptedSuffix.count, json.suffix(Self.acceptedSuffix.count).elementsEqual(Self.acceptedSuffix),
                      let event = try? Event.decode(json), event.type == EventType.accepted, let id = event.id
                else { continue }
                if let customer = query.customer, event.facts["customer"]?.stringValue != customer { continue }
                guard query.senderMatches(event.facts["sender"]?.stringValue ?? ""), seen.insert(id).inserted else { continue }
                candidates.append((id, event))
            }
            if !candidates.isEmpty {
                for summary in try await enrich(candidates) where query.recipientMatches(summary.recipients ?? []) {
                    found.append(summary)
                    if found.count >= limit { break }
                }
            }
            if entries.count < page {
                complete = true
                break
            }
            guard let lastID else { complete = true; break }
            end = "(" + lastID
        }
        return MessageSearchResult(messages: found, scanned: scanned, complete: complete || found.count >= limit)
    }

    /// Envelope and newest event of each candidate, in one pipeline.
    func enrich(_ candidates: [(MessageID, Event)]) async throws -> [MessageSummary] {
        let keys = store.keys
        var commands: [[RedisArg]] = []
        for (id, _) in candidates {
            commands.append(["HGET", .init(keys.message(id)), "envelope"])
            commands.append(["XREVRANGE", .init(keys.events(id)), "+", "-", "COUNT", "1"])
        }
        let replies = try await store.redis.pipeline(commands)
        guard replies.count == commands.count else { throw StoreError(code: .unexpectedReply, message: "search: \(replies)") }
        return candidates.enumerated().map { index, candidate in
            let envelope = replies[2 * index].bytes.flatMap { try? Envelope.decode($0) }
            let newest = (try? MessageStore.decodeStream(replies[2 * index + 1]))?.last
            return Self.summary(candidate.0, accepted: candidate.1, envelope: envelope, newest: newest)
        }
    }

    /// One message by id: its first event (normally `accepted`), newest event and envelope.
    func one(_ id: MessageID, _ query: MessageQuery) async throws -> [MessageSummary] {
        let keys = store.keys
        let replies = try await store.redis.pipeline([
            ["XRANGE", .init(keys.events(id)), "-", "+", "COUNT", "1"],
            ["XREVRANGE", .init(keys.events(id)), "+", "-", "COUNT", "1"],
            ["HGET", .init(keys.message(id)), "envelope"],
        ])
        guard replies.count == 3 else { throw StoreError(code: .unexpectedReply, message: "search \(id): \(replies)") }
        let first = (try? MessageStore.decodeStream(replies[0]))?.first
        let newest = (try? MessageStore.decodeStream(replies[1]))?.last
        let envelope = replies[2].bytes.flatMap { try? Envelope.decode($0) }
        let accepted = first?.type == EventType.accepted ? first : nil
        guard accepted != nil || envelope != nil else { return [] }
        let summary = Self.summary(id, accepted: accepted, envelope: envelope, newest: newest)
        if let customer = query.customer, summary.customer != customer { return [] }
        guard query.senderMatches(summary.sender), query.recipientMatches(summary.recipients ?? []),
              query.timeMatches(Int64((summary.time.timeIntervalSince1970 * 1000).rounded()))
        else { return [] }
        return [summary]
    }

    static func summary(_ id: MessageID, accepted: Event?, envelope: Envelope?, newest: Event?) -> MessageSummary {
        let facts = accepted?.facts ?? [:]
        let time = accepted?.time ?? envelope?.submission.receivedAt
            ?? Date(timeIntervalSince1970: Double(id.timestampMilliseconds) / 1000)
        return MessageSummary(
            id: id, time: time, sender: facts["sender"]?.stringValue ?? envelope?.sender ?? "",
            recipients: envelope.map { $0.recipients.map(\.address) },
            recipientCount: facts["recipients"]?.intValue ?? envelope?.recipients.count,
            customer: facts["customer"]?.stringValue ?? envelope?.customer,
            login: facts["login"]?.stringValue ?? envelope?.submission.authenticatedAs,
            state: newest?.type)
    }
}
