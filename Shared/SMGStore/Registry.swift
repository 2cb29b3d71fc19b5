public import SMGRedis
import Foundation

/// Where the processes of the gateway can be reached: producers register the endpoint they
/// bound for a topic, consumers look it up and connect. An entry lives as long as its owner
/// refreshes it (heartbeat), so a killed process drops out by itself.
public final class Registry: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace

    public init(redis: RedisClient, keys: Keyspace = Keyspace()) {
        self.redis = redis
        self.keys = keys
    }

    /// Registers (or refreshes) `endpoint` under `kind` for `ttlMilliseconds`.
    public func register(kind: String, endpoint: String, ttlMilliseconds: Int) async throws {
        let expiry = Int(Date().timeIntervalSince1970 * 1000) + ttlMilliseconds
        _ = try await redis.command("HSET", .init(keys.registry(kind)), .init(endpoint), .init(expiry))
    }

    public func unregister(kind: String, endpoint: String) async throws {
        _ = try await redis.command("HDEL", .init(keys.registry(kind)), .init(endpoint))
    }

    /// The live endpoints of `kind`; stale ones are removed on the way.
    public func endpoints(kind: String) async throws -> [String] {
        let reply = try await redis.command("HGETALL", .init(keys.registry(kind)))
        guard let items = reply.array else { return [] }
        let now = Int(Date().timeIntervalSince1970 * 1000)
        var live: [String] = [], stale: [String] = []
        var index = 0
        while index + 1 < items.count {
            if let endpoint = items[index].string, let expiry = items[index + 1].string.flatMap({ Int($0) }) {
                if expiry > now { live.append(endpoint) } else { stale.append(endpoint) }
            }
            index += 2
        }
        if !stale.isEmpty {
            _ = try? await redis.command(["HDEL", .init(keys.registry(kind))] + stale.map { RedisArg($0) })
        }
        return live.sorted()
    }
}
