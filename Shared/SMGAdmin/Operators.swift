public import SMGRedis
public import SMGStore
public import SMGAccounts
import SMGCore
import Crypto
import Foundation

/// What an operator may do in smg-admin.
public enum OperatorRole: String, Sendable, Codable, CaseIterable {
    /// Changes anything.
    case admin
    /// Sees everything, changes nothing.
    case viewer
}

/// An operator of the web interface (not a customer login). The password is kept as a scrypt hash.
public struct OperatorAccount: Sendable, Codable, Hashable {
    public var name: String
    public var role: OperatorRole
    public var passwordHash: String
    public var disabled: Bool
    /// Creation time, ms since the epoch.
    public var created: Int64

    enum CodingKeys: String, CodingKey {
        case name, role, disabled, created
        case passwordHash = "password_hash"
    }
}

/// Who made a request: from a web session or an API token.
public struct Principal: Sendable, Hashable {
    public var name: String
    public var role: OperatorRole
    /// The session's CSRF token; nil for API tokens (which need none).
    public var csrf: String?
    public var expires: Int64?
    public var canChange: Bool { role == .admin }

    public init(name: String, role: OperatorRole, csrf: String?, expires: Int64?) {
        self.name = name
        self.role = role
        self.csrf = csrf
        self.expires = expires
    }
}

public struct AdminError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable { case invalid, notFound, exists }
    public var code: Code
    public var field: String?
    public var message: String
    public var description: String { field.map { "\($0): \(message)" } ?? message }

    public init(_ code: Code, field: String?, _ message: String) {
        self.code = code
        self.field = field
        self.message = message
    }
}

/// Operator accounts and API tokens in Redis (`Keyspace.adminOperator`, `adminOperators`,
/// `adminTokens`). Used by `smgctl operator …` and by smg-admin's login.
public struct OperatorStore: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace

    public init(redis: RedisClient, keys: Keyspace) {
        self.redis = redis
        self.keys = keys
    }

    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.@".contains($0)) }
    }

    /// Creates an operator; the password is generated (and returned) when none is given.
    public func add(_ name: String, role: OperatorRole, password: String?, hasher: PasswordHasher = PasswordHasher())
        async throws -> (OperatorAccount, generatedPassword: String?) {
        guard Self.isValidName(name) else { throw AdminError(.invalid, field: "name", "use letters, digits, '-', '_', '.', '@' (1–64)") }
        if let password, let problem = PasswordRules.problem(password) { throw AdminError(.invalid, field: "password", problem) }
        let secret = password ?? PasswordRules.generate()
        let account = OperatorAccount(name: name.lowercased(), role: role, passwordHash: try hasher.hash(secret), disabled: false,
                                      created: Int64(Date().timeIntervalSince1970 * 1000))
        let replies = try await redis.pipeline([
            ["SET", .init(keys.adminOperator(name)), .init(Array(try JSONEncoder().encode(account))), "NX"],
            ["SADD", .init(keys.adminOperators), .init(name.lowercased())],
        ])
        guard replies.first?.string == "OK" else { throw AdminError(.exists, field: "name", "operator \"\(name)\" exists") }
        return (account, password == nil ? secret : nil)
    }

    public func get(_ name: String) async throws -> OperatorAccount? {
        guard let bytes = try await redis.command("GET", .init(keys.adminOperator(name))).bytes else { return nil }
        return try JSONDecoder().decode(OperatorAccount.self, from: Data(bytes))
    }

    public func all() async throws -> [OperatorAccount] {
        let names = (try await redis.command("SMEMBERS", .init(keys.adminOperators)).array ?? []).compactMap(\.string).sorted()
        var out: [OperatorAccount] = []
        for name in names { if let account = try await get(name) { out.append(account) } }
        return out
    }

    public func save(_ account: OperatorAccount) async throws {
        _ = try await redis.command("SET", .init(keys.adminOperator(account.name)), .init(Array(try JSONEncoder().encode(account))))
    }

    /// Sets a new password (generated and returned when none is given).
    public func setPassword(_ name: String, password: String?, hasher: PasswordHasher = PasswordHasher()) async throws -> String? {
        guard var account = try await get(name) else { throw AdminError(.notFound, field: "name", "no operator \"\(name)\"") }
        if let password, let problem = PasswordRules.problem(password) { throw AdminError(.invalid, field: "password", problem) }
        let secret = password ?? PasswordRules.generate()
        account.passwordHash = try hasher.hash(secret)
        try await save(account)
        return password == nil ? secret : nil
    }

    /// Deletes an operator, its tokens and (by expiry) its sessions: a session whose operator is
    /// gone is refused at its next request.
    public func remove(_ name: String) async throws -> Bool {
        let removed = try await redis.command("DEL", .init(keys.adminOperator(name))).int == 1
        _ = try await redis.command("SREM", .init(keys.adminOperators), .init(name.lowercased()))
        for (digest, record) in try await tokens() where record.operatorName == name.lowercased() {
            _ = try await redis.command("HDEL", .init(keys.adminTokens), .init(digest))
        }
        return removed
    }

    public struct Token: Sendable, Codable, Hashable {
        public var operatorName: String
        public var created: Int64
        public var label: String
        enum CodingKeys: String, CodingKey {
            case operatorName = "operator"
            case created, label
        }
    }

    /// Makes an API token for an operator; the token is returned once, only its SHA-256 is kept.
    public func makeToken(for name: String, label: String) async throws -> String {
        guard try await get(name) != nil else { throw AdminError(.notFound, field: "name", "no operator \"\(name)\"") }
        let token = "smg_" + Self.randomToken()
        let record = Token(operatorName: name.lowercased(), created: Int64(Date().timeIntervalSince1970 * 1000), label: label)
        _ = try await redis.command("HSET", .init(keys.adminTokens), .init(Self.digest(token)), .init(Array(try JSONEncoder().encode(record))))
        return token
    }

    public func tokens() async throws -> [(digest: String, record: Token)] {
        try await redis.command("HGETALL", .init(keys.adminTokens)).fieldPairs.compactMap { pair in
            pair.value.bytes.flatMap { try? JSONDecoder().decode(Token.self, from: Data($0)) }.map { (pair.field, $0) }
        }
    }

    /// The operator an API token belongs to, if it is known and the operator is enabled.
    public func principal(forToken token: String) async throws -> Principal? {
        guard token.hasPrefix("smg_"), token.utf8.count < 200,
              let json = try await redis.command("HGET", .init(keys.adminTokens), .init(Self.digest(token))).bytes,
              let record = try? JSONDecoder().decode(Token.self, from: Data(json)),
              let account = try await get(record.operatorName), !account.disabled else { return nil }
        return Principal(name: account.name, role: account.role, csrf: nil, expires: nil)
    }

    public static func randomToken() -> String {
        var rng = SystemRandomNumberGenerator()
        return Hex.lower((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })
    }

    public static func digest(_ secret: String) -> String {
        Hex.lower(SHA256.hash(data: Array(secret.utf8)))
    }
}
