import SMGCore
import Foundation

/// Passwords of SMTP AUTH logins (and of operators): the one rule both `smgctl` and `smg-admin`
/// apply, and the generator of passwords that are shown once.
public enum PasswordRules {
    public static let minimumLength = 12
    public static let maximumLength = 256

    /// Why `password` is refused, or nil when it is acceptable.
    public static func problem(_ password: String) -> String? {
        if password.count < minimumLength { return "at least \(minimumLength) characters" }
        if password.utf8.count > maximumLength { return "at most \(maximumLength) bytes" }
        if password.contains(where: { $0.isNewline || $0 == "\0" }) { return "no line breaks or NUL characters" }
        return nil
    }

    /// 24 characters of URL-safe base64 from 18 random octets (144 bits).
    public static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<18).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return Data(bytes).base64EncodedString().replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "+", with: "-")
    }
}

/// The fields an operator may change on an existing customer; nil = leave as it is. For optional
/// limits, `.some(nil)` clears the limit.
public struct CustomerUpdate: Sendable, Codable, Hashable {
    public var name: String?
    public var networks: [String]?
    public var domains: [String]?
    public var rateLimitPerMinute: Int??
    public var requireTLS: Bool?
    public var reverseDNSCheck: Bool?
    public var maxMessageSize: Int??
    public var maxRecipients: Int??
    public var disabled: Bool?
    public var bareNewline: String??

    public init(name: String? = nil, networks: [String]? = nil, domains: [String]? = nil, rateLimitPerMinute: Int?? = nil,
                requireTLS: Bool? = nil, reverseDNSCheck: Bool? = nil, maxMessageSize: Int?? = nil,
                maxRecipients: Int?? = nil, disabled: Bool? = nil, bareNewline: String?? = nil) {
        self.name = name
        self.networks = networks
        self.domains = domains
        self.rateLimitPerMinute = rateLimitPerMinute
        self.requireTLS = requireTLS
        self.reverseDNSCheck = reverseDNSCheck
        self.maxMessageSize = maxMessageSize
        self.maxRecipients = maxRecipients
        self.disabled = disabled
        self.bareNewline = bareNewline
    }

    public var isEmpty: Bool { self == CustomerUpdate() }

    /// `customer` with these changes applied (not validated).
    public func applied(to customer: Customer) -> Customer {
        var c = customer
        if let name { c.name = name }
        if let networks { c.networks = networks }
        if let domains { c.domains = domains.map { $0.lowercased() } }
        if let rateLimitPerMinute { c.rateLimitPerMinute = rateLimitPerMinute }
        if let requireTLS { c.requireTLS = requireTLS }
        if let reverseDNSCheck { c.reverseDNSCheck = reverseDNSCheck }
        if let maxMessageSize { c.maxMessageSize = maxMessageSize }
        if let maxRecipients { c.maxRecipients = maxRecipients }
        if let disabled { c.disabled = disabled }
        if let bareNewline { c.bareNewline = bareNewline }
        return c
    }
}

/// A login just created or given a new password: `password` is set only when it was generated,
/// to be shown once.
public struct LoginSecret: Sendable {
    public var account: Account
    public var password: String?
}

/// The operations on customers and logins, shared by `smgctl` and `smg-admin`. Errors are
/// `AccountError`s whose message starts with the field at fault (`networks: …`).
extension AccountStore {
    /// Creates a customer; `.exists` when the id is taken (an update is `updateCustomer`).
    public func createCustomer(_ customer: Customer) async throws -> Customer {
        var customer = customer
        customer.domains = customer.domains.map { $0.lowercased() }
        try customer.validate()
        let json = try Self.encoder.encode(customer)
        let replies = try await redis.pipeline([
            ["SET", .init(keys.customer(customer.id)), .init(Array(json)), "NX"],
            ["SADD", .init(keys.customers), .init(customer.id)],
        ])
        if case .error(let e) = replies.first { throw AccountError(code: .invalid, message: e) }
        guard replies.first?.string == "OK" else {
            throw AccountError(code: .exists, message: "id: customer \"\(customer.id)\" exists (change it with an update)")
        }
        return customer
    }

    /// Changes the given fields of a customer and keeps every other one.
    /// Returns the customer before and after.
    public func updateCustomer(_ id: String, _ update: CustomerUpdate) async throws -> (before: Customer, after: Customer) {
        guard let before = try await customer(id) else {
            throw AccountError(code: .notFound, message: "id: no customer \"\(id)\"")
        }
        let after = update.applied(to: before)
        try await saveCustomer(after)
        return (before, after)
    }

    /// Creates a login of an existing customer; generates the password when none is given.
    public func createLogin(_ login: String, customer: String, password: String?,
                            hasher: PasswordHasher = PasswordHasher()) async throws -> LoginSecret {
        guard Customer.isValidID(login) else {
            throw AccountError(code: .invalid, message: "login: use letters, digits, '-', '_', '.', '@' (1–64)")
        }
        guard try await self.customer(customer) != nil else {
            throw AccountError(code: .notFound, message: "customer: no customer \"\(customer)\"")
        }
        if try await account(login) != nil {
            throw AccountError(code: .exists, message: "login: \"\(login)\" exists")
        }
        let (secret, generated) = try Self.resolve(password)
        let account = Account(login: login, customer: customer, passwordHash: try hasher.hash(secret))
        try await saveAccount(account)
        return LoginSecret(account: account, password: generated ? secret : nil)
    }

    /// Gives a login a new password (generated when none is given).
    public func resetPassword(_ login: String, password: String?, hasher: PasswordHasher = PasswordHasher()) async throws -> LoginSecret {
        guard var account = try await account(login) else {
            throw AccountError(code: .notFound, message: "login: no login \"\(login)\"")
        }
        let (secret, generated) = try Self.resolve(password)
        account.passwordHash = try hasher.hash(secret)
        try await saveAccount(account)
        return LoginSecret(account: account, password: generated ? secret : nil)
    }

    /// Disables or enables a login; returns it before and after.
    public func setLoginDisabled(_ login: String, _ disabled: Bool) async throws -> (before: Account, after: Account) {
        guard let before = try await account(login) else {
            throw AccountError(code: .notFound, message: "login: no login \"\(login)\"")
        }
        var after = before
        after.disabled = disabled
        try await saveAccount(after)
        return (before, after)
    }

    static func resolve(_ password: String?) throws -> (String, generated: Bool) {
        guard let password else { return (PasswordRules.generate(), true) }
        if let problem = PasswordRules.problem(password) {
            throw AccountError(code: .invalid, message: "password: \(problem)")
        }
        return (password, false)
    }
}

extension AccountError {
    /// The field this error names (the text before the first colon), if it names one.
    public var field: String? {
        guard let colon = message.firstIndex(of: ":") else { return nil }
        let head = message[..<colon]
        guard !head.isEmpty, head.allSatisfy({ $0.isLetter || $0 == "_" || $0 == "-" || $0 == "." }) else { return nil }
        return String(head)
    }
}
