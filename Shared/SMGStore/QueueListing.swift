public import SMGCore
import Foundation

/// How operators see a `QueueItem`: the words and the JSON object that `smgctl queue list/show`
/// and smg-admin's queue page and API both show (one implementation, so both say the same).
extension QueueItem {
    /// The most specific `QueueState`, else the record's `state` (done, deleted, …), else `unknown`.
    public var stateName: String {
        state?.rawValue ?? (fields["state"] ?? "unknown")
    }

    /// When the next redrive pass may take it: `now`, `in 5m3s`, or `-` when it is in no pending set.
    public var nextDeadlineText: String {
        guard case .pending(_, let deadline, _) = location else { return "-" }
        let delta = deadline - now
        return delta <= 0 ? "now" : "in \(QueueText.duration(delta))"
    }

    /// Where it sits, in words: the pending set with deadline and lease, held, quarantine, or none.
    public var whereText: String {
        switch location {
        case .pending(let topic, let deadline, let owner):
            let lease: String
            if leased { lease = "leased by \(owner ?? "?")" }
            else if owner == QueueAdmin.waitOwner { lease = "waiting for its time" }
            else if let owner { lease = "lease of \(owner) expired" }
            else { lease = "not taken yet" }
            return "pending in \(topic), deadline \(QueueText.time(deadline)) (\(nextDeadlineText)), \(lease)"
        case .held(let from): return "held (taken from \(from))"
        case .quarantined(let since): return "quarantine since \(QueueText.time(since))"
        case .nowhere: return "in no queue"
        }
    }

    /// One listing entry (`smgctl queue list --json`, `GET /api/v1/queue` items): `id`, `where`,
    /// `state`, `states`, `age_ms`, `created`, `size`, `leased`, `record_state`, `topic`; pending:
    /// `deadline`, `owner`; with a readable envelope: `sender`, `customer`, `recipients` (count),
    /// `deferred_recipients`.
    public var listing: [String: JSONValue] {
        var o: [String: JSONValue] = [:]
        o["id"] = .string(id.rawValue)
        o["where"] = .string(location.name)
        o["state"] = .string(stateName)
        o["states"] = .array(QueueState.allCases.filter(states.contains).map { .string($0.rawValue) })
        o["age_ms"] = .int(Int(ageMilliseconds))
        o["created"] = .string(QueueText.time(createdMilliseconds))
        o["size"] = .int(bodySize)
        o["leased"] = .bool(leased)
        o["record_state"] = fields["state"].map { JSONValue.string($0) } ?? JSONValue.null
        o["topic"] = location.topic.map { JSONValue.string($0) } ?? JSONValue.null
        if case .pending(_, let deadline, let owner) = location {
            o["deadline"] = .string(QueueText.time(deadline))
            o["owner"] = owner.map { JSONValue.string($0) } ?? JSONValue.null
        }
        if let envelope {
            o["sender"] = .string(envelope.sender)
            o["customer"] = envelope.customer.map { JSONValue.string($0) } ?? JSONValue.null
            o["recipients"] = .int(envelope.recipients.count)
            o["deferred_recipients"] = .array(recipients.filter { $0.state == .deferred }.map { .string($0.address) })
        }
        return o
    }
}

/// Short texts of times and durations for queue listings.
public enum QueueText {
    /// 3d4h, 2h5m, 5m3s, 12s, 250ms.
    public static func duration(_ ms: Int64) -> String {
        if ms < 1000 { return "\(ms)ms" }
        let s = ms / 1000
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m\(s % 60)s" }
        if s < 86400 { return "\(s / 3600)h\((s % 3600) / 60)m" }
        return "\(s / 86400)d\((s % 86400) / 3600)h"
    }

    /// Milliseconds since the epoch as the events' RFC 3339 time.
    public static func time(_ ms: Int64) -> String {
        Timestamp.format(Date(timeIntervalSince1970: Double(ms) / 1000))
    }
}
