public import SMGRedis
public import SMGStore
import SMGCore
import Foundation

/// Customers and their logins in Redis (shared by every site), under `Keyspace`'s account keys:
/// `customer(id)` (STRING, JSON), `customers` (SET of ids),
/// `account(login)` (STRING, JSON with the scrypt hash), `logins(customer)` (SET).
/// Written by `smgctl` (and later the admin UI); read by ingress.
public final class AccountStore: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace

    public init(redis: RedisClient, keys: Keyspace = Keyspace()) {
        self.redis = redis
        self.keys = keys
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    public func saveCustomer(_ customer: Customer) async throws {
        try customer.validate()
        let json = try Self.encoder.encode(customer)
        let replies = try await redis.pipeline([
            ["SET", .init(keys.customer(customer.id)), .init(Array(json))],
            ["SADD", .init(keys.customers), .init(customer.id)],
        ])
        if case .error(let e) = replies.first { throw AccountError(code: .invalid, message: e) }
    }

    public func customer(_ id: String) async throws -> Customer? {
        guard let bytes = try await redis.command("GET", .init(keys.customer(id))).bytes else { return nil }
        do { return try JSONDecoder().decode(Customer.self, from: Data(bytes)) } catch {
            throw AccountError(code: .corrupt, message: "customer \(id): \(error)")
        }
    }

    public func customerIDs() async throws -> [String] {
        (try await redis.command("SMEMBERS", .init(keys.customers)).array ?? []).compactMap(\.string).sorted()
    }

    public func saveAccount(_ account: Account) async throws {
        guard try await customer(account.customer) != nil else {
            throw AccountError(code: .notFound, message: "customer \(account.customer) does not exist")
        }
        guard Customer.isValidID(account.login) else {
            throw AccountError(code: .invalid, message: "login: use letters, digits, '-', '_', '.', '@' (1–64)")
        }
        let json = try Self.encoder.encode(account)
        _ = try await redis.pipeline([
            ["SET", .init(keys.account(account.login)), .init(Array(json))],
            ["SADD", .init(keys.logins(account.customer)), .init(account.login.lowercased())],
        ])
    }

    public func account(_ login: String) async throws -> Account? {
        guard let bytes = try await redis.command("GET", .init(keys.account(login))).bytes else { return nil }
        do { return try JSONDecoder().decode(Account.self, from: Data(bytes)) } catch {
            throw AccountError(code: .corrupt, message: "account \(login): \(error)")
        }
    }

    public func logins(of customer: String) async throws -> [String] {
        (try await redis.command("SMEMBERS", .init(keys.logins(customer))).array ?? []).compactMap(\.string).sorted()
    }

    public func deleteAccount(_ login: String) async throws -> Bool {
        guard let account = try await account(login) else { return false }
        _ = try await redis.pipeline([
            ["DEL", .init(keys.account(login))],
            ["SREM", .init(keys.logins(account.customer)), .init(login.lowercased())],
        ])
        return true
    }
}

/// Per-customer message rate across every ingress process and site (R6): an exact sliding
/// window in one Lua script on Redis time, so two processes on two sites share one budget and
/// no 60-second window ever holds more than `limit` messages (the 101st in a minute is refused).
/// Keys: `smg:rate:<customer>` (ZSET of admission times, µs) and `…:seq` (unique members).
/// Memory per customer: at most `limit` entries.
public final class RateLimiter: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace

    public init(redis: RedisClient, keys: Keyspace = Keyspace()) {
        self.redis = redis
        self.keys = keys
    }

    /// KEYS: window zset, sequence. ARGV: limit, window µs. Returns 1 = admitted.
    static let slidingWindow = RedisScript("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local window = tonumber(ARGV[2])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
        if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
        local seq = redis.call('INCR', KEYS[2])
        redis.call('ZADD', KEYS[1], now, now .. '-' .. seq)
        local ttl = math.ceil(window / 1000) + 1000
        redis.call('PEXPIRE', KEYS[1], ttl)
        redis.call('PEXPIRE', KEYS[2], ttl)
        return 1
        """)

    /// Takes one message from `customer`'s budget; false when `limit` messages were admitted
    /// in the last minute.
    public func allow(customer: String, perMinute limit: Int) async throws -> Bool {
        let reply = try await redis.eval(Self.slidingWindow,
                                         keys: [.init(keys.rate(customer)), .init(keys.rateSequence(customer))],
                                         args: [.init(max(1, limit)), .init(60_000_000)])
        return reply.int == 1
    }
}

/// Failed-login counters per client IP and per login (existing or not), in Redis so that all
/// ingress processes see them. Past the limit, AUTH is refused before any password is checked.
public final class AuthThrottle: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace
    public let maxPerIP: Int
    public let maxPerLogin: Int
    public let windowSeconds: Int

    public init(redis: RedisClient, keys: Keyspace = Keyspace(), maxPerIP: Int, maxPerLogin: Int, windowSeconds: Int) {
        self.redis = redis
        self.keys = keys
        self.maxPerIP = maxPerIP
        self.maxPerLogin = maxPerLogin
        self.windowSeconds = windowSeconds
    }

    func ipKey(_ ip: String) -> RedisArg { .init(keys.authFailures(ip: ip)) }
    func loginKey(_ login: String) -> RedisArg { .init(keys.authFailures(login: login)) }

    /// True when this IP or login has failed too often recently.
    public func isBlocked(ip: String, login: String) async throws -> Bool {
        let replies = try await redis.pipeline([["GET", ipKey(ip)], ["GET", loginKey(login)]])
        let ipFails = replies.first?.string.flatMap { Int($0) } ?? 0
        let loginFails = replies.last?.string.flatMap { Int($0) } ?? 0
        return ipFails >= maxPerIP || loginFails >= maxPerLogin
    }

    public func recordFailure(ip: String, login: String) async throws {
        _ = try await redis.pipeline([
            ["INCR", ipKey(ip)], ["EXPIRE", ipKey(ip), .init(windowSeconds)],
            ["INCR", loginKey(login)], ["EXPIRE", loginKey(login), .init(windowSeconds)],
        ])
    }
}
