public import SMGCore
import Foundation

/// A customer of the gateway and its sending policy (R2–R7). Stored as JSON in Redis,
/// managed with `smgctl customer …`.
public struct Customer: Sendable, Codable, Hashable {
    public var id: String
    public var name: String
    /// Source networks allowed to send for this customer (R2). Empty = none (nothing is accepted).
    public var networks: [String]
    /// Sender domains this customer owns (R5). A sender must be in one of them or a subdomain.
    public var domains: [String]
    /// Messages per minute across all sites (R6); nil = no limit (the default).
    public var rateLimitPerMinute: Int?
    /// Refuse mail from this customer on sessions without TLS (R7).
    public var requireTLS: Bool
    /// Check that the client IP has a PTR whose name resolves back to it (R4).
    public var reverseDNSCheck: Bool
    /// Per-customer limits below the listener's (nil = the listener's).
    public var maxMessageSize: Int?
    public var maxRecipients: Int?
    public var disabled: Bool
    /// `reject` or `normalize`: overrides `ingress.bare_newline` for this customer (nil = the listener's).
    public var bareNewline: String?
    /// Limits of the compromised-account brake for this customer and its logins (nil = the
    /// classifier's `brake.*` defaults).
    public var brake: BrakeLimits?

    public init(id: String, name: String? = nil, networks: [String] = [], domains: [String] = [],
                rateLimitPerMinute: Int? = nil, requireTLS: Bool = false, reverseDNSCheck: Bool = false,
                maxMessageSize: Int? = nil, maxRecipients: Int? = nil, disabled: Bool = false, bareNewline: String? = nil) {
        self.id = id
        self.name = name ?? id
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

    /// The parsed networks (invalid entries are refused when the customer is saved).
    public var networkList: NetworkList { NetworkList(networks.compactMap { try? CIDR($0) }) }

    /// Whether `address` (local@domain) uses one of this customer's domains or a subdomain of one.
    public func ownsSender(_ address: String) -> Bool {
        let domain = Address.domain(of: address)
        guard !domain.isEmpty else { return false }
        return domains.contains { owned in
            let d = owned.lowercased()
            return domain == d || domain.hasSuffix("." + d)
        }
    }

    /// Checks the fields an operator typed; the error names the field.
    public func validate() throws {
        func fail(_ field: String, _ problem: String) -> AccountError {
            AccountError(code: .invalid, message: "\(field): \(problem)")
        }
        guard Customer.isValidID(id) else { throw fail("id", "use letters, digits, '-', '_' and '.' (1–64)") }
        for network in networks {
            do { _ = try CIDR(network) } catch { throw fail("networks", "\"\(network)\" is not a CIDR network") }
        }
        for domain in domains where domain.isEmpty || domain.contains("@") || domain.contains(" ") {
            throw fail("domains", "\"\(domain)\" is not a domain")
        }
        if let rate = rateLimitPerMinute, !(1...1_000_000).contains(rate) {
            throw fail("rate-limit", "must be 1…1000000 per minute")
        }
        if let size = maxMessageSize, size < 1024 { throw fail("max-size", "must be at least 1024 bytes") }
        if let count = maxRecipients, count < 1 { throw fail("max-recipients", "must be at least 1") }
        if let mode = bareNewline, !["reject", "normalize"].contains(mode) {
            throw fail("bare-newline", "\"\(mode)\" is not one of reject, normalize")
        }
        try brake?.validate()
    }

    static func isValidID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64
            && id.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "-_.@".unicodeScalars.contains($0) }
            && id.allSatisfy(\.isASCII)
    }
}

/// A login of a customer (SMTP AUTH username). The password is stored only as a scrypt hash.
public struct Account: Sendable, Codable, Hashable {
    public var login: String
    public var customer: String
    public var passwordHash: String
    public var disabled: Bool

    public init(login: String, customer: String, passwordHash: String, disabled: Bool = false) {
        self.login = login
        self.customer = customer
        self.passwordHash = passwordHash
        self.disabled = disabled
    }
}

public struct AccountError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public static let invalid = Code(name: "invalid")
        public static let notFound = Code(name: "not found")
        public static let exists = Code(name: "exists")
        public static let corrupt = Code(name: "corrupt record")
        public var description: String { name }
    }
    public var code: Code
    public var message: String
    public var description: String { "\(code): \(message)" }
}
