public import SMGRedis
public import SMGStore
import Foundation

/// An operator's forced TLS rule (R16): mail from a sender domain and/or to a recipient domain
/// must go over TLS of at least `level`; when that cannot be made, `action` decides.
public struct ForcedTLSRule: Sendable, Hashable, Codable {
    public enum Level: String, Sendable, Codable, CaseIterable {
        /// TLS with any certificate.
        case encrypt
        /// TLS with a certificate valid in the WebPKI for the MX host name.
        case verify
        /// TLS with a certificate whose SHA-256 is one of `fingerprints`.
        case fingerprint

        var strength: Int { switch self { case .encrypt: 1; case .verify: 2; case .fingerprint: 3 } }
    }
    public enum Action: String, Sendable, Codable, CaseIterable {
        /// Bounce with an NDR that explains the TLS failure.
        case reject
        /// Keep the message held ("TLS required"), rechecked later, released by an operator.
        case hold
    }

    public var id: String
    /// `example.com` (that domain) or `*.example.com` (its subdomains); nil = any.
    public var sender: String?
    public var recipient: String?
    /// Built-in provider rules match the MX host instead (`*.mail.protection.outlook.com`).
    public var mxHost: String?
    public var level: Level
    public var fingerprints: [String]
    public var action: Action
    public var comment: String

    public init(id: String, sender: String? = nil, recipient: String? = nil, mxHost: String? = nil, level: Level,
                fingerprints: [String] = [], action: Action, comment: String = "") {
        self.id = id
        self.sender = sender
        self.recipient = recipient
        self.mxHost = mxHost
        self.level = level
        self.fingerprints = fingerprints
        self.action = action
        self.comment = comment
    }

    public struct Invalid: Error, CustomStringConvertible {
        /// The argument or key at fault (`--sender`, `--level`, …).
        public var argument: String
        public var problem: String
        public var description: String { "\(argument): \(problem)" }
    }

    /// Checks a rule as an operator wrote it; the error names the argument.
    public func validated() throws(Invalid) -> ForcedTLSRule {
        var rule = self
        rule.sender = try Self.normalizedPattern(sender, argument: "--sender")
        rule.recipient = try Self.normalizedPattern(recipient, argument: "--recipient")
        rule.mxHost = try Self.normalizedPattern(mxHost, argument: "--mx-host")
        if rule.sender == nil && rule.recipient == nil && rule.mxHost == nil {
            throw Invalid(argument: "--sender/--recipient", problem: "give at least one of them")
        }
        if rule.mxHost != nil && (rule.sender != nil || rule.recipient != nil) {
            throw Invalid(argument: "--mx-host", problem: "a rule by MX host has no sender or recipient")
        }
        rule.fingerprints = fingerprints.map { $0.lowercased().replacingOccurrences(of: ":", with: "") }
        for f in rule.fingerprints where f.count != 64 || !f.allSatisfy(\.isHexDigit) {
            throw Invalid(argument: "--fingerprint", problem: "\"\(f)\" is not a SHA-256 in hex (64 digits)")
        }
        if level == .fingerprint && rule.fingerprints.isEmpty {
            throw Invalid(argument: "--fingerprint", problem: "level fingerprint needs at least one --fingerprint")
        }
        if level != .fingerprint && !rule.fingerprints.isEmpty {
            throw Invalid(argument: "--fingerprint", problem: "only for --level fingerprint")
        }
        return rule
    }

    /// A rule as an operator gives it (level and action as text, `smgctl tls rule add` and the
    /// admin API alike), checked by `validated()`; the error names the argument (`--level`,
    /// `--action`, `--sender`, …). Without `action`: `hold` (nothing is bounced or sent in
    /// plaintext; an operator decides).
    public static func make(sender: String?, recipient: String?, mxHost: String? = nil, level: String,
                            fingerprints: [String] = [], action: String?, comment: String = "") throws(Invalid) -> ForcedTLSRule {
        guard let parsedLevel = Level(rawValue: level.trimmingCharacters(in: .whitespaces).lowercased()) else {
            throw Invalid(argument: "--level", problem: "\"\(level)\" is not one of \(Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var parsedAction = Action.hold
        if let action {
            guard let a = Action(rawValue: action.trimmingCharacters(in: .whitespaces).lowercased()) else {
                throw Invalid(argument: "--action", problem: "\"\(action)\" is not one of \(Action.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            parsedAction = a
        }
        return try ForcedTLSRule(id: "", sender: sender, recipient: recipient, mxHost: mxHost, level: parsedLevel,
                                 fingerprints: fingerprints, action: parsedAction, comment: comment).validated()
    }

    static func normalizedPattern(_ pattern: String?, argument: String) throws(Invalid) -> String? {
        guard let raw = pattern?.trimmingCharacters(in: .whitespaces).lowercased(), !raw.isEmpty else { return nil }
        let p = raw.hasSuffix(".") ? String(raw.dropLast()) : raw
        let name = p.hasPrefix("*.") ? String(p.dropFirst(2)) : p
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        guard !name.isEmpty, labels.allSatisfy({ !$0.isEmpty && $0.count <= 63 }),
              name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_") })
        else { throw Invalid(argument: argument, problem: "\"\(raw)\" is not a domain or *.domain") }
        return p
    }

    /// `example.com` matches only that domain; `*.example.com` every subdomain (not the domain).
    public static func matches(_ pattern: String?, _ domain: String) -> Bool {
        guard let pattern else { return true }
        let d = domain.lowercased().hasSuffix(".") ? String(domain.lowercased().dropLast()) : domain.lowercased()
        if pattern.hasPrefix("*.") { return d.hasSuffix(pattern.dropFirst(1)) }
        return d == pattern
    }

    /// Whether this rule applies to mail from `senderDomain` to `recipientDomain` via `mxHost`.
    public func applies(senderDomain: String, recipientDomain: String, mxHost host: String?) -> Bool {
        if let mxHost { return host.map { Self.matches(mxHost, $0) } ?? false }
        return Self.matches(sender, senderDomain) && Self.matches(recipient, recipientDomain)
    }

    public var summary: String {
        var parts: [String] = []
        if let sender { parts.append("sender \(sender)") }
        if let recipient { parts.append("recipient \(recipient)") }
        if let mxHost { parts.append("MX \(mxHost)") }
        return "\(id): \(parts.joined(separator: ", ")) → \(level.rawValue), \(action.rawValue)"
            + (comment.isEmpty ? "" : " (\(comment))")
    }

    /// Providers whose MX hosts always get verified TLS, whatever the operator configured
    /// (`egress.tls_provider_rules`): each runs its inbound MX with STARTTLS and a publicly
    /// trusted certificate for the MX name, so anything less is an attack or an outage, and the
    /// mail is held rather than sent in plaintext or bounced.
    public static let providers: [ForcedTLSRule] = [
        ForcedTLSRule(id: "provider:microsoft365", mxHost: "*.mail.protection.outlook.com", level: .verify, action: .hold,
                      comment: "Microsoft 365 / Exchange Online"),
        ForcedTLSRule(id: "provider:outlook.com", mxHost: "*.olc.protection.outlook.com", level: .verify, action: .hold,
                      comment: "Outlook.com, Hotmail"),
        ForcedTLSRule(id: "provider:google", mxHost: "*.l.google.com", level: .verify, action: .hold,
                      comment: "Gmail, Google Workspace"),
        ForcedTLSRule(id: "provider:yahoo", mxHost: "*.yahoodns.net", level: .verify, action: .hold,
                      comment: "Yahoo, AOL"),
        ForcedTLSRule(id: "provider:icloud", mxHost: "*.mail.icloud.com", level: .verify, action: .hold,
                      comment: "iCloud Mail"),
    ]
}

/// The forced TLS rules in Redis (`<prefix>tls:rules`, one JSON per rule id), written by
/// `smgctl tls rule`, read by egress (kept for at most `maxAge` per process).
public actor ForcedTLSRuleStore {
    public let redis: RedisClient
    public let keys: Keyspace
    let maxAge: Duration
    private var loaded: (rules: [ForcedTLSRule], at: ContinuousClock.Instant)?

    public init(redis: RedisClient, keys: Keyspace, maxAge: Duration = .seconds(5)) {
        self.redis = redis
        self.keys = keys
        self.maxAge = maxAge
    }

    /// Adds a rule (its id is given here: `r<n>`); returns it.
    public func add(_ rule: ForcedTLSRule) async throws -> ForcedTLSRule {
        var rule = try rule.validated()
        let n = try await redis.command(["INCR", .init(keys.tlsRuleSequence)]).int ?? 0
        rule.id = "r\(n)"
        let json = String(decoding: try JSONEncoder().encode(rule), as: UTF8.self)
        _ = try await redis.command(["HSET", .init(keys.tlsRules), .init(rule.id), .init(json)])
        loaded = nil
        return rule
    }

    /// Removes a rule; false when there is none of that id.
    public func remove(_ id: String) async throws -> Bool {
        loaded = nil
        return (try await redis.command(["HDEL", .init(keys.tlsRules), .init(id)]).int ?? 0) > 0
    }

    /// Every rule, by id (numerically). Unreadable entries are skipped.
    public func list() async throws -> [ForcedTLSRule] {
        let rules = try await redis.command(["HGETALL", .init(keys.tlsRules)]).fieldPairs.compactMap { pair in
            pair.value.bytes.flatMap { try? JSONDecoder().decode(ForcedTLSRule.self, from: Data($0)) }
        }
        return rules.sorted { (Int($0.id.dropFirst()) ?? 0, $0.id) < (Int($1.id.dropFirst()) ?? 0, $1.id) }
    }

    /// The rules as egress uses them: cached for `maxAge`; a Redis failure keeps the last list
    /// (a rule must not vanish because Redis blinked); nil when they were never readable (then
    /// nothing may be sent: a forced domain would go out in plaintext).
    public func current() async -> [ForcedTLSRule]? {
        let now = ContinuousClock.now
        if let loaded, now - loaded.at < maxAge { return loaded.rules }
        guard let rules = try? await list() else { return loaded?.rules }
        loaded = (rules, now)
        return rules
    }
}
