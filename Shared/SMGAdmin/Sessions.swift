public import SMGRedis
public import SMGStore
public import SMGCore
public import Foundation

/// Web sessions of operators in Redis, so any smg-admin process of any site serves them. The cookie
/// holds a random token; Redis keeps only its SHA-256 (`Keyspace.adminSession`) with the operator,
/// role, CSRF token and absolute expiry. The key's time to live is the idle timeout, renewed on
/// every request (never past the absolute expiry).
public struct SessionStore: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace
    public let idle: Duration
    public let maximum: Duration

    public init(redis: RedisClient, keys: Keyspace, idle: Duration, maximum: Duration) {
        self.redis = redis
        self.keys = keys
        self.idle = idle
        self.maximum = maximum
    }

    struct Record: Codable {
        var operatorName: String
        var csrf: String
        var created: Int64
        var expires: Int64
        enum CodingKeys: String, CodingKey {
            case operatorName = "operator"
            case csrf, created, expires
        }
    }

    static func milliseconds(_ d: Duration) -> Int64 {
        d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    }

    /// Opens a session for an operator; returns the cookie value.
    public func open(for account: OperatorAccount, now: Date = Date()) async throws -> String {
        let token = OperatorStore.randomToken()
        let created = Int64(now.timeIntervalSince1970 * 1000)
        let record = Record(operatorName: account.name, csrf: OperatorStore.randomToken(), created: created,
                            expires: created + Self.milliseconds(maximum))
        _ = try await redis.command("SET", .init(keys.adminSession(OperatorStore.digest(token))),
                                    .init(Array(try JSONEncoder().encode(record))), "PX",
                                    .init(Int(min(Self.milliseconds(idle), Self.milliseconds(maximum)))))
        return token
    }

    /// The principal of a live session, renewing its idle timeout; nil when it expired, was closed,
    /// or its operator is gone or disabled.
    public func principal(forCookie token: String, operators: OperatorStore, now: Date = Date()) async throws -> Principal? {
        guard token.utf8.count == 64, token.allSatisfy(\.isHexDigit) else { return nil }
        let key = keys.adminSession(OperatorStore.digest(token))
        guard let bytes = try await redis.command("GET", .init(key)).bytes,
              let record = try? JSONDecoder().decode(Record.self, from: Data(bytes)) else { return nil }
        let nowMS = Int64(now.timeIntervalSince1970 * 1000)
        let left = record.expires - nowMS
        guard left > 0 else {
            _ = try? await redis.command("DEL", .init(key))
            return nil
        }
        guard let account = try await operators.get(record.operatorName), !account.disabled else {
            _ = try? await redis.command("DEL", .init(key))
            return nil
        }
        _ = try await redis.command("PEXPIRE", .init(key), .init(Int(min(Self.milliseconds(idle), left))))
        return Principal(name: account.name, role: account.role, csrf: record.csrf,
                         expires: min(record.expires, nowMS + Self.milliseconds(idle)))
    }

    public func close(_ token: String) async throws {
        _ = try await redis.command("DEL", .init(keys.adminSession(OperatorStore.digest(token))))
    }
}

/// Failed operator logins per client IP and per operator name, shared by all smg-admin processes.
/// Past `limit` failures within `window`, a login is refused before any password is checked.
public struct LoginThrottle: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace
    public let limit: Int
    public let window: Duration

    public init(redis: RedisClient, keys: Keyspace, limit: Int, window: Duration) {
        self.redis = redis
        self.keys = keys
        self.limit = limit
        self.window = window
    }

    func subjects(ip: String, name: String) -> [RedisArg] {
        [.init(keys.adminLoginFailures("ip:\(ip)")), .init(keys.adminLoginFailures("name:\(name.lowercased())"))]
    }

    public func isBlocked(ip: String, name: String) async throws -> Bool {
        let replies = try await redis.pipeline(subjects(ip: ip, name: name).map { ["GET", $0] })
        return replies.contains { ($0.string.flatMap { Int($0) } ?? 0) >= limit }
    }

    public func recordFailure(ip: String, name: String) async throws {
        let seconds = max(1, Int(window.components.seconds))
        _ = try await redis.pipeline(subjects(ip: ip, name: name).flatMap { [["INCR", $0], ["EXPIRE", $0, .init(seconds)]] })
    }

    public func clear(ip: String, name: String) async throws {
        _ = try await redis.pipeline([["DEL"] + subjects(ip: ip, name: name)])
    }
}

/// The audit trail: one `admin.change` event per change {operator, action, target, before, after},
/// in the event log (so taps see it) and in `Keyspace.adminAudit` (capped stream).
public struct AuditLog: Sendable {
    public static let eventType = "admin.change"
    public let redis: RedisClient
    public let keys: Keyspace
    public let maxLength: Int

    public init(redis: RedisClient, keys: Keyspace, maxLength: Int = 100_000) {
        self.redis = redis
        self.keys = keys
        self.maxLength = maxLength
    }

    public func event(by principal: Principal, action: String, target: String, before: JSONValue?, after: JSONValue?,
                      site: String, process: String) -> Event {
        var facts: [String: JSONValue] = ["operator": .string(principal.name), "action": .string(action), "target": .string(target)]
        facts["before"] = before ?? .null
        facts["after"] = after ?? .null
        return Event(type: Self.eventType, id: nil, site: site, process: process, facts: facts)
    }

    /// Writes the event to the audit stream (the caller records it in the event log as well).
    public func append(_ event: Event) async throws {
        _ = try await redis.command("XADD", .init(keys.adminAudit), "MAXLEN", "~", .init(maxLength), "*", "e", .init(event.jsonBytes()))
    }

    /// The newest `count` audit events, newest first.
    public func recent(count: Int) async throws -> [Event] {
        let reply = try await redis.command("XREVRANGE", .init(keys.adminAudit), "+", "-", "COUNT", .init(max(1, min(count, 10_000))))
        return (reply.array ?? []).compactMap { entry -> Event? in
            guard let fields = entry.array?.last?.array, fields.count >= 2, let bytes = fields[1].bytes else { return nil }
            return try? Event.decode(bytes)
        }
    }
}
