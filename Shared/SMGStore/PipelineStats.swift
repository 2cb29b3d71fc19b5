import SMGCore
import SMGRedis
import Foundation

/// One stage's backlog.
public struct StageBacklog: Sendable, Hashable {
    public var topic: String
    /// Messages in the stage's pending set (waiting, leased, or waiting for a retry time).
    public var pending: Int
    /// Age (by message id, i.e. since it was accepted) of the oldest message in the set; nil when
    /// the set is empty. Exact up to 2 × `PipelineStats.sample` messages, else the oldest of the
    /// `sample` entries with the earliest and the `sample` with the latest deadlines.
    public var oldestAgeMilliseconds: Int64?
}

/// The pipeline at one moment: every stage's backlog, held and quarantined counts.
public struct PipelineSnapshot: Sendable, Hashable {
    public var stages: [StageBacklog]
    public var held: Int
    public var quarantined: Int
    /// Redis server time (ms) of the reading.
    public var now: Int64
}

/// Per-minute event counts of the last minutes.
public struct EventRates: Sendable, Hashable {
    public var windowMinutes: Int
    /// Start (ms, minute-aligned) of the first bucket; the last bucket is the current minute.
    public var startMilliseconds: Int64
    /// Event type → `windowMinutes` counts, oldest minute first.
    public var series: [String: [Int]]
    /// Stream entries read.
    public var scanned: Int
    /// False when `maxEvents` ended the read: minutes before `coveredSinceMilliseconds` are undercounted.
    public var complete: Bool
    /// The oldest time (ms) the counts cover.
    public var coveredSinceMilliseconds: Int64
}

/// The numbers of smg-admin's overview: backlog per stage and event rates.
public struct PipelineStats: Sendable {
    public let store: MessageStore

    /// Entries read from each end of a pending set to find its oldest message.
    public static let sample = 500

    /// The event types the overview charts.
    public static let rateTypes = [EventType.accepted, EventType.scannedClean, EventType.scannedInfected,
                                   EventType.classified, EventType.signed, EventType.delivered, EventType.deferred,
                                   EventType.bounced]

    public init(store: MessageStore) { self.store = store }

    /// One pipelined round trip: TIME, and per topic ZCARD plus the `sample` earliest and latest
    /// deadlines (a ZSET is ordered by deadline, not by age: deferred messages sit at the end).
    public func snapshot() async throws -> PipelineSnapshot {
        let keys = store.keys
        var commands: [[RedisArg]] = [["TIME"], ["HLEN", .init(keys.held)], ["ZCARD", .init(keys.quarantine)]]
        for topic in Topic.all {
            commands.append(["ZCARD", .init(keys.pending(topic))])
            commands.append(["ZRANGE", .init(keys.pending(topic)), "0", .init(Self.sample - 1)])
            commands.append(["ZRANGE", .init(keys.pending(topic)), .init(-Self.sample), "-1"])
        }
        let r = try await store.redis.pipeline(commands)
        try QueueAdmin.checkReplies(r, count: commands.count, what: "pipeline snapshot")
        let now = try QueueAdmin.time(r[0])
        var stages: [StageBacklog] = []
        for (index, topic) in Topic.all.enumerated() {
            let base = 3 + 3 * index
            let members = (r[base + 1].array ?? []) + (r[base + 2].array ?? [])
            let oldest = members.compactMap { $0.string.flatMap(MessageID.init) }.map { Int64($0.timestampMilliseconds) }.min()
            stages.append(StageBacklog(topic: topic, pending: Int(r[base].int ?? 0),
                                       oldestAgeMilliseconds: oldest.map { max(0, now - $0) }))
        }
        return PipelineSnapshot(stages: stages, held: Int(r[1].int ?? 0), quarantined: Int(r[2].int ?? 0), now: now)
    }

    /// Counts of `types` per minute over the last `minutes` minutes, from the global event stream.
    ///
    /// Cost: `XREVRANGE <events> + <start> COUNT 5000` page by page, newest first, until the
    /// window is read or `maxEvents` entries were (then `complete` is false and the oldest minutes
    /// are undercounted). Only the type is taken from each entry (the last key of the sorted JSON),
    /// no full decode; so at most `maxEvents` entries (default 60,000, a few MB) cross the wire and
    /// Redis is never busy with more than 5,000 at once.
    public func rates(minutes: Int = 30, types: [String] = PipelineStats.rateTypes, maxEvents: Int = 60_000) async throws
        -> EventRates
    {
        let keys = store.keys
        let now = try QueueAdmin.time(try await store.redis.command("TIME"))
        let minute: Int64 = 60_000
        let start = (now / minute) * minute - Int64(minutes - 1) * minute
        var series: [String: [Int]] = [:]
        for type in types { series[type] = Array(repeating: 0, count: minutes) }
        var scanned = 0
        var complete = false
        var covered = now
        var end = "+"
        while scanned < maxEvents {
            let page = min(5000, maxEvents - scanned)
            let reply = try await store.redis.command("XREVRANGE", .init(keys.globalEvents), .init(end), .init(start),
                                                      "COUNT", .init(page))
            guard let entries = reply.array else { throw StoreError(code: .unexpectedReply, message: "XREVRANGE: \(reply)") }
            var lastID: String?
            for entry in entries {
                guard let parts = entry.array, parts.count == 2, let entryID = parts[0].string else { continue }
                lastID = entryID
                scanned += 1
                guard let ms = entryID.split(separator: "-").first.flatMap({ Int64($0) }) else { continue }
                covered = min(covered, ms)
                guard let kv = parts[1].array, kv.count >= 2, let json = kv[1].bytes, let type = Self.type(of: json),
                      series[type] != nil
                else { continue }
                let bucket = Int((ms - start) / minute)
                if bucket >= 0, bucket < minutes { series[type]![bucket] += 1 }
            }
            guard entries.count == page, let lastID else {
                complete = true
                break
            }
            end = "(" + lastID
        }
        if complete { covered = start }
        return EventRates(windowMinutes: minutes, startMilliseconds: start, series: series, scanned: scanned,
                          complete: complete, coveredSinceMilliseconds: covered)
    }

    static let typeKey = Array("\"type\":\"".utf8)

    /// The top-level `type` of an event's JSON: keys are sorted, so it is the last `"type":"…"`.
    static func type(of json: [UInt8]) -> String? {
        let key = typeKey
        guard json.count > key.count else { return nil }
        var i = json.count - key.count
        while i >= 0 {
            if json[i] == key[0], json[i..<(i + key.count)].elementsEqual(key) {
                let from = i + key.count
                guard let close = json[from...].firstIndex(of: 34) else { return nil }
                return String(decoding: json[from..<close], as: UTF8.self)
            }
            i -= 1
        }
        return nil
    }
}
