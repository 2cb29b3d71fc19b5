public import SMGRedis
import SMGCore
public import Foundation

/// Drained egress source addresses (R17), shared by every egress of every site through Redis.
///
/// Written by `smgctl pool drain|undrain` (and later the blacklist monitor), read by egress,
/// which keeps the set for a second or two (`SourcePool`). Owns no state of its own.
public struct SourcePoolStore: Sendable {
    public struct Drain: Sendable, Hashable, Codable {
        public var reason: String
        public var by: String
        /// Milliseconds since 1970.
        public var at: Int64
        public init(reason: String, by: String, at: Int64) {
            self.reason = reason
            self.by = by
            self.at = at
        }
    }

    public let redis: RedisClient
    public let keys: Keyspace

    public init(redis: RedisClient, keys: Keyspace) {
        self.redis = redis
        self.keys = keys
    }

    /// Marks `address` drained; true if it was not drained before.
    @discardableResult
    public func drain(_ address: String, reason: String, by: String, now: Date = Date()) async throws -> Bool {
        let drain = Drain(reason: reason, by: by, at: Int64(now.timeIntervalSince1970 * 1000))
        let json = String(decoding: try JSONEncoder().encode(drain), as: UTF8.self)
        let reply = try await redis.command("HSET", .init(keys.drainedSources), .init(address), .init(json))
        return (reply.int ?? 0) > 0
    }

    /// Puts `address` back in service; true if it was drained.
    @discardableResult
    public func undrain(_ address: String) async throws -> Bool {
        let reply = try await redis.command("HDEL", .init(keys.drainedSources), .init(address))
        return (reply.int ?? 0) > 0
    }

    /// A source address an egress uses, as it announces it (for the blacklist monitor).
    public struct Member: Sendable, Hashable, Codable {
        public var lane: String
        public var helo: String
        /// Milliseconds since 1970 of the last announcement.
        public var seen: Int64
        public init(lane: String, helo: String, seen: Int64) {
            self.lane = lane
            self.helo = helo
            self.seen = seen
        }
    }

    /// Records that an egress of `lane` sends from these addresses (address → HELO name).
    public func announce(lane: String, addresses: [(address: String, helo: String)], now: Date = Date()) async throws {
        guard !addresses.isEmpty else { return }
        var command: [RedisArg] = ["HSET", .init(keys.poolMembers)]
        for a in addresses {
            let member = Member(lane: lane, helo: a.helo, seen: Int64(now.timeIntervalSince1970 * 1000))
            command += [.init(a.address), .init(String(decoding: try JSONEncoder().encode(member), as: UTF8.self))]
        }
        _ = try await redis.command(command)
    }

    /// Every announced source address.
    public func members() async throws -> [String: Member] {
        var out: [String: Member] = [:]
        for (address, value) in try await redis.command("HGETALL", .init(keys.poolMembers)).fieldPairs {
            out[address] = value.bytes.flatMap { try? JSONDecoder().decode(Member.self, from: Data($0)) }
        }
        return out
    }

    /// Every drained address with why; an entry that does not parse still counts as drained.
    public func drained() async throws -> [String: Drain] {
        var out: [String: Drain] = [:]
        for (address, value) in try await redis.command("HGETALL", .init(keys.drainedSources)).fieldPairs {
            out[address] = value.bytes.flatMap { try? JSONDecoder().decode(Drain.self, from: Data($0)) }
                ?? Drain(reason: "unreadable entry", by: "?", at: 0)
        }
        return out
    }
}
