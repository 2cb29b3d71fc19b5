public import SMGRedis
public import SMGStore
public import Foundation

/// One address listed by one zone: the removal request operators work through
/// (`open` → `requested` → `cleared`), kept in `smg:blacklist:listings`.
public struct Listing: Sendable, Hashable, Codable {
    public enum State: String, Sendable, Codable, CaseIterable { case open, requested, cleared }
    public var address: String
    public var lane: String
    public var zone: String
    public var code: String
    public var meaning: String
    /// The zone's TXT record for the address (often the reason and a lookup URL).
    public var text: String?
    public var delistURL: String
    public var state: State
    /// Unix seconds.
    public var since: Int
    public var checked: Int
    public var requestedAt: Int?
    public var requestedBy: String?
    public var note: String?
    public var clearedAt: Int?

    public var key: String { "\(address) \(zone)" }
    public var isActive: Bool { state != .cleared }

    /// What an operator does to get the address removed.
    public var instructions: String {
        var text = "Find out why \(address) was listed (\(meaning)"
        if let t = self.text { text += "; the list says: \(t)" }
        text += "), stop the cause (a compromised account, a customer sending spam through the good lane), then "
        text += delistURL.isEmpty ? "ask the operator of \(zone) to remove it."
            : "request removal at \(delistURL) and record it with `smgctl blacklist requested \(address) \(zone)`."
        return text
    }
}

/// The listings and the pool membership the monitor works from.
public struct ListingStore: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace

    public init(redis: RedisClient, keys: Keyspace) {
        self.redis = redis
        self.keys = keys
    }

    public func all() async throws -> [Listing] {
        let out = try await redis.command(["HGETALL", .init(keys.blacklistListings)]).fieldPairs.compactMap { pair in
            pair.value.bytes.flatMap { try? JSONDecoder().decode(Listing.self, from: Data($0)) }
        }
        return out.sorted { ($0.address, $0.zone) < ($1.address, $1.zone) }
    }

    public func save(_ listing: Listing) async throws {
        let json = String(decoding: try JSONEncoder().encode(listing), as: UTF8.self)
        _ = try await redis.command(["HSET", .init(keys.blacklistListings), .init(listing.key), .init(json)])
    }

    /// Records that a check run of `kind` (`daily`, `recheck`) finished at `now`, whichever
    /// instance ran it.
    public func recordRun(kind: String, now: Date = Date()) async throws {
        _ = try await redis.command(["HSET", .init(keys.blacklistLastRun), .init(kind), .init(Int(now.timeIntervalSince1970))])
    }

    /// Run kind → Unix seconds when the last run of that kind finished.
    public func lastRuns() async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for pair in try await redis.command(["HGETALL", .init(keys.blacklistLastRun)]).fieldPairs {
            if let seconds = pair.value.string.flatMap({ Int($0) }) { out[pair.field] = seconds }
        }
        return out
    }

    /// Marks an open listing as "removal requested" (an operator filled in the provider's form).
    public func markRequested(address: String, zone: String, by: String, note: String?, now: Date = Date()) async throws -> Listing? {
        guard var listing = try await all().first(where: { $0.address == address && $0.zone == zone.lowercased() && $0.isActive })
        else { return nil }
        listing.state = .requested
        listing.requestedAt = Int(now.timeIntervalSince1970)
        listing.requestedBy = by
        listing.note = note
        try await save(listing)
        return listing
    }

    /// The egress source addresses to check: what every egress announces (`smg:pool:members`,
    /// seen within `maxAge`), plus `extra` (lane → addresses from the monitor's configuration).
    public func poolAddresses(extra: [(lane: String, address: String)], maxAge: TimeInterval = 7 * 86400,
                              now: Date = Date()) async throws -> [(lane: String, address: String)] {
        var out: [String: String] = [:]
        for (address, member) in try await SourcePoolStore(redis: redis, keys: keys).members()
        where Double(member.seen) / 1000 >= now.timeIntervalSince1970 - maxAge {
            out[address] = member.lane
        }
        for e in extra where out[e.address] == nil { out[e.address] = e.lane }   // what egress says of its own pool wins
        return out.map { (lane: $0.value, address: $0.key) }.sorted { ($0.lane, $0.address) < ($1.lane, $1.address) }
    }
}
