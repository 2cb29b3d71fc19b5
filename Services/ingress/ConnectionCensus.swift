import SMGRedis
import SMGStore
import SMGSync
import Logging

/// R3 across processes: `ingress.max_connections` and `ingress.max_connections_per_ip` count the
/// connections of every ingress process of the site (`ingress.connection_limit_scope = site`,
/// the default), of every site (`all`), or of this process only (`process`).
///
/// No Redis call per connection: every second each process writes its own counts into its own
/// hash (`smg:conn:<site>:<instance>`, expiring after 5 s, listed in `smg:conn-index`) and reads
/// the others' in the same script; a new connection is checked against this process's live
/// count plus the others' as of the last second. A process that dies (kill -9) stops refreshing
/// its hash, which expires within 5 s: its connections are not counted for ever. While Redis
/// cannot be reached the last known figures of the others are kept for 5 s, then only this
/// process's own connections count (the limit falls back to per process, never to no limit).
final class ConnectionCensus: Sendable {
    enum Scope: String, CaseIterable { case process, site, all }

    let scope: Scope
    let redis: RedisClient
    let key: String
    let index: String
    let prefix: String
    let logger: Logger
    static let lifetimeMilliseconds = 5_000
    /// The others' connections: total and per IP, and when they were read.
    let others = Locked<(total: Int, perIP: [String: Int], read: ContinuousClock.Instant?)>((0, [:], nil))

    init(scope: Scope, redis: RedisClient, keys: Keyspace, site: String, instance: String, logger: Logger) {
        self.scope = scope
        self.redis = redis
        self.key = keys.connections(site: site, instance: instance)
        self.index = keys.connectionsIndex
        self.prefix = keys.connectionsPrefix(site: scope == .all ? nil : site)
        self.logger = logger
    }

    /// Connections of the other processes in scope (0 for `process`, or when the figures are stale).
    func othersCount(ip: String) -> (total: Int, fromIP: Int) {
        others.withLock { o in
            guard let read = o.read, ContinuousClock.now - read < .milliseconds(Self.lifetimeMilliseconds) else { return (0, 0) }
            return (o.total, o.perIP[ip] ?? 0)
        }
    }

    /// Writes this process's counts, removes expired index entries, and returns the other live
    /// hashes in scope with their fields. Keys outside KEYS are read: the gateway runs on one
    /// Redis primary, never Redis Cluster (docs/ARCHITECTURE.md).
    static let script = RedisScript("""
        local now = redis.call('TIME')
        now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
        local ttl = tonumber(ARGV[1])
        redis.call('DEL', KEYS[1])
        local i = 3
        while i <= #ARGV do
          redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
          i = i + 1000
        end
        redis.call('PEXPIRE', KEYS[1], ttl)
        redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
        local out = {}
        for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')) do
          if k ~= KEYS[1] and string.sub(k, 1, #ARGV[2]) == ARGV[2] then
            out[#out + 1] = redis.call('HGETALL', k)
          end
        end
        return out
        """)

    /// Once a second until cancelled: publish `snapshot()` and read the others.
    func run(snapshot: @Sendable () -> (total: Int, perIP: [String: Int])) async {
        guard scope != .process else { return }
        var failing = false
        while !Task.isCancelled {
            let (total, perIP) = snapshot()
            var args: [RedisArg] = [RedisArg(String(Self.lifetimeMilliseconds)), RedisArg(prefix), "_total", RedisArg(String(total))]
            for (ip, n) in perIP where n > 0 {
                args.append(RedisArg(ip))
                args.append(RedisArg(String(n)))
            }
            do {
                let reply = try await redis.eval(Self.script, keys: [RedisArg(key), RedisArg(index)], args: args)
                var sum = 0
                var byIP: [String: Int] = [:]
                for hash in reply.array ?? [] {
                    let fields = hash.array ?? []
                    var j = 0
                    while j + 1 < fields.count {
                        if let name = fields[j].string, let value = fields[j + 1].string.flatMap({ Int($0) }) {
                            if name == "_total" { sum += value } else { byIP[name, default: 0] += value }
                        }
                        j += 2
                    }
                }
                others.withLock { $0 = (sum, byIP, ContinuousClock.now) }
                if failing { logger.notice("connection census: Redis answers again") }
                failing = false
            } catch {
                if !failing {
                    logger.warning("connection census: cannot reach Redis; others' connections known until they are 5 s old",
                                   metadata: ["error": "\(error)"])
                }
                failing = true
            }
            try? await Task.sleep(for: .seconds(1))
        }
        // Stopped (SIGTERM): take this process out of the census at once rather than in 5 s.
        _ = try? await redis.pipeline([["DEL", RedisArg(key)], ["ZREM", RedisArg(index), RedisArg(key)]])
    }
}
