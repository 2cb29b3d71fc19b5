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

    /// Every drained address with why; an entry that does not parse still counts as drained.
    public func drained() async throws -> [String: Drain] {
        let reply = try await redis.command("HGETALL", .init(keys.drainedSources))
        guard let items = reply.array else { return [:] }
        var out: [String: Drain] = [:]
        var index = 0
        while index + 1 < items.count {
            if let address = items[index].string {
                let value = items[index + 1].bytes.flatMap { try? JSONDecoder().decode(Drain.self, from: Data($0)) }
                out[address] = value ?? Drain(reason: "unreadable entry", by: "?", at: 0)
            }
            index += 2
        }
        return out
    }
}
