import Logging

// Where mail for a domain goes (RFC 5321 §5.1, RFC 7505), the way Postfix's smtp client decides
// it: MX lookup, implicit MX, null MX, per-host address order, loop detection, address limit.
// Plain values and pure functions, plus one async wrapper on ``DNSResolver``; nothing here
// opens a connection or owns any resource.

// MARK: - Policy

/// Which address family of one host is tried first (Postfix `smtp_address_preference`).
/// `.any` puts all of a host's addresses in random order.
public enum AddressPreference: String, Sendable {
    case any, ipv4, ipv6
}

/// Which address families are used at all (Postfix `inet_protocols`). A disabled family is
/// not even looked up.
public enum AddressFamilies: String, Sendable {
    case both, ipv4, ipv6

    var usesIPv4: Bool { self != .ipv6 }
    var usesIPv6: Bool { self != .ipv4 }
}

/// The caller's rules for ``DNSResolver/mailDestination(for:policy:)``. A plain value; the
/// egress engine builds one from its configuration.
public struct MailDestinationPolicy: Sendable, Hashable {
    /// At most this many addresses are returned, in order (Postfix `smtp_mx_address_limit`);
    /// 0 or less means no limit.
    public var maxAddresses: Int
    /// Order of the families within one host.
    public var preference: AddressPreference
    /// Families used at all.
    public var families: AddressFamilies
    /// Keep loopback, private and reserved destinations (see ``DNSIPAddress/isPublic``);
    /// only for tests and local runs.
    public var allowNonPublic: Bool
    /// The gateway's own addresses, for loop detection. Textual IP literals (any form
    /// `inet_pton` accepts; compared as addresses, an IPv4-mapped IPv6 address equals its IPv4
    /// address); an entry that is not an IP literal never matches.
    public var localAddresses: Set<String>
    /// The gateway's own host names, for loop detection (compared case-insensitively, a
    /// trailing dot ignored).
    public var localNames: Set<String>

    public init(maxAddresses: Int = 5, preference: AddressPreference = .ipv4, families: AddressFamilies = .both,
                allowNonPublic: Bool = false, localAddresses: Set<String> = [], localNames: Set<String> = []) {
        self.maxAddresses = maxAddresses
        self.preference = preference
        self.families = families
        self.allowNonPublic = allowNonPublic
        self.localAddresses = localAddresses
        self.localNames = localNames
    }
}

// MARK: - Result

/// One address to deliver to, with the host it belongs to.
public struct MailTarget: Sendable, Hashable, CustomStringConvertible {
    /// The MX exchange name, lower-case, without trailing dot, as published in the MX record
    /// (not the CNAME target when it is an alias); the domain itself for an implicit MX; the
    /// address text (e.g. `192.0.2.1`, `2001:db8::1`) for an address-literal domain.
    public var host: String
    public var address: DNSIPAddress
    /// The MX preference; 0 for an implicit MX and an address literal.
    public var preference: Int
    /// True when there was no MX (the domain's own A/AAAA) and for an address literal.
    public var implicitMX: Bool
    /// The MX answer (for an implicit MX: the MX denial) and the A/AAAA answer of this
    /// address both carried a trusted AD bit. Always false for an address literal. The
    /// precondition for DANE (RFC 7672 §2.2); not sufficient on its own.
    public var authenticated: Bool

    public init(host: String, address: DNSIPAddress, preference: Int, implicitMX: Bool = false, authenticated: Bool = false) {
        self.host = host
        self.address = address
        self.preference = preference
        self.implicitMX = implicitMX
        self.authenticated = authenticated
    }

    /// Postfix style: `mx1.example[192.0.2.1]`.
    public var description: String { "\(host)[\(address)]" }
}

/// Where mail for a domain goes, or why it goes nowhere. `status` values are RFC 3463
/// enhanced status codes; `reason` is text for logs and bounces (it contains only the domain
/// and host names, never resolver internals).
public enum MailDestination: Sendable, Equatable {
    /// Try these addresses in this order (never empty, at most `maxAddresses`).
    case targets([MailTarget])
    /// The domain publishes the RFC 7505 null MX `0 .`: it accepts no mail; the caller
    /// bounces with 5.1.10 (RFC 7505 §4.2).
    case nullMX
    /// Bounce: "5.1.2" the domain does not exist / has no MX and no address / invalid domain;
    /// "5.4.4" no usable mail exchanger / only non-public addresses / address family disabled;
    /// "5.4.6" mail loops back to myself.
    case permanentFailure(status: String, reason: String)
    /// Defer: "4.4.3" a DNS lookup failed temporarily (SERVFAIL, timeout, REFUSED, FORMERR);
    /// "4.4.4" the more preferred exchangers did not resolve and the rest are us.
    case temporaryFailure(status: String, reason: String)
}

// MARK: - Pure planning

extension MailDestination {
    /// At most this many distinct exchangers of one MX answer are considered (the rest are
    /// ignored, most preferred kept), which bounds the lookups one hostile domain can cause.
    public static let maximumExchangers = 64

    /// One mail exchanger (or the implicit MX, or an address literal) and what its address
    /// lookups returned: the input of ``plan(domain:hosts:policy:using:)``.
    public struct HostLookup: Sendable, Equatable {
        /// Lower-case, no trailing dot (see ``MailTarget/host``).
        public var host: String
        public var preference: Int
        public var implicitMX: Bool
        /// The MX answer naming this host (for an implicit MX: the MX denial) had a trusted AD bit.
        public var mxAuthenticated: Bool
        /// The A lookup; nil when it was not made (IPv4 disabled, or not needed).
        public var ipv4: DNSResult<[DNSIPv4Address]>?
        /// The AAAA lookup; nil when it was not made.
        public var ipv6: DNSResult<[DNSIPv6Address]>?

        public init(host: String, preference: Int, implicitMX: Bool = false, mxAuthenticated: Bool = false,
                    ipv4: DNSResult<[DNSIPv4Address]>? = nil, ipv6: DNSResult<[DNSIPv6Address]>? = nil) {
            self.host = host
            self.preference = preference
            self.implicitMX = implicitMX
            self.mxAuthenticated = mxAuthenticated
            self.ipv4 = ipv4
            self.ipv6 = ipv6
        }
    }

    /// True if an MX exchange name is an IP address ("192.0.2.1."), which RFC 5321 §5.1
    /// forbids; such exchangers are skipped, as Postfix does.
    public static func isIPLiteralName(_ exchange: DNSName) -> Bool {
        DNSIPAddress(parsing: exchange.description) != nil
    }

    /// The try order of an MX answer's exchangers: ascending preference, equal preferences
    /// shuffled with `rng` (RFC 5321 §5.1; from a canonical order, so a seeded `rng` gives the
    /// same order whatever order the server listed the records in); root (".") and IP-literal exchanges removed; a
    /// name listed twice kept once, at its lowest preference; at most ``maximumExchangers``.
    public static func orderExchangers(_ exchangers: [DNSMXData], using rng: inout some RandomNumberGenerator) -> [DNSMXData] {
        let sorted = exchangers.enumerated()
            .filter { !$0.element.exchange.isRoot && !isIPLiteralName($0.element.exchange) }
            .sorted { ($0.element.preference, $0.offset) < ($1.element.preference, $1.offset) }
            .map(\.element)
        var seen = Set<DNSName>()
        let unique = sorted.filter { seen.insert($0.exchange).inserted }
        var out: [DNSMXData] = []
        out.reserveCapacity(unique.count)
        var i = 0
        while i < unique.count {
            var j = i
            while j < unique.count, unique[j].preference == unique[i].preference { j += 1 }
            // Canonical order first, so the result depends on `rng` only, not on the server's
            // (rotating) RRset order.
            out.append(contentsOf: unique[i..<j].sorted { $0.exchange.description.lowercased() < $1.exchange.description.lowercased() }
                .shuffled(using: &rng))
            i = j
        }
        return Array(out.prefix(maximumExchangers))
    }

    /// Turns the address lookups of the exchangers (in try order, as from
    /// ``orderExchangers(_:using:)``) into the destination. Pure; `rng` only shuffles
    /// addresses. Steps, in this order:
    ///
    /// 1. Per host: addresses of the enabled `families` only, ordered by `preference`
    ///    (IPv4 first, IPv6 first, or all shuffled); within one family shuffled (Postfix
    ///    `smtp_randomize_addresses`, so a cached RRset does not always send to its first
    ///    address; from a canonical order, as for exchangers). A host with no address is
    ///    skipped; it counts as a temporary failure if either of its lookups failed
    ///    temporarily (SERVFAIL/timeout/REFUSED/FORMERR).
    ///    If one family answered and the other failed temporarily, the answer is used.
    /// 2. Loop detection (Postfix): a host whose name is in `localNames` or with an address in
    ///    `localAddresses` is us; every address at a preference ≥ the lowest preference at
    ///    which us appears is dropped. Nothing left: "5.4.6 mail for <domain> loops back to
    ///    myself", or, when more preferred exchangers existed but did not resolve,
    ///    "4.4.4 unable to find primary relay for <domain>" (Postfix: we are a backup MX and
    ///    the primary is unreachable in the DNS; bouncing would lose mail).
    /// 3. Unless `allowNonPublic`, non-public addresses (``DNSIPAddress/isPublic``) are
    ///    dropped; nothing left and no temporary failure: "5.4.4 <domain> resolves only to
    ///    non-public addresses".
    /// 4. An address already listed (for a more preferred host) is dropped.
    /// 5. Nothing left: "4.4.3" if any host failed temporarily; else "5.1.2 <domain> has no
    ///    MX and no address" for an implicit MX, "5.4.4 no usable mail exchanger for
    ///    <domain>" otherwise.
    /// 6. The list is cut to `maxAddresses`.
    public static func plan(domain: String, hosts: [HostLookup], policy: MailDestinationPolicy,
                            using rng: inout some RandomNumberGenerator) -> MailDestination {
        planDetailed(domain: domain, hosts: hosts, policy: policy, using: &rng).destination
    }

    /// ``plan(domain:hosts:policy:using:)`` plus whether a host was us (then no later host can
    /// contribute: the wrapper stops looking up).
    static func planDetailed(domain: String, hosts: [HostLookup], policy: MailDestinationPolicy,
                             using rng: inout some RandomNumberGenerator) -> (destination: MailDestination, sawSelf: Bool) {
        let localAddresses = Set(policy.localAddresses.compactMap { DNSIPAddress(parsing: $0)?.unmapped })
        let localNames = Set(policy.localNames.map(normalizedHostName))
        let implicit = hosts.count == 1 && hosts[0].implicitMX
        var candidates: [MailTarget] = []
        var temporary = false
        var selfPreference: Int? = nil
        let bestPreference = hosts.map(\.preference).min()

        for h in hosts {
            var v4: [MailTarget] = [], v6: [MailTarget] = []
            var hostTemporary = false
            if policy.families.usesIPv4, let r = h.ipv4 {
                if case .answer(let list, let auth, _) = r {
                    v4 = list.sorted { $0.value < $1.value }.map { MailTarget(host: h.host, address: .v4($0), preference: h.preference,
                                               implicitMX: h.implicitMX, authenticated: h.mxAuthenticated && auth) }
                } else if r.isTemporaryFailure { hostTemporary = true }
            }
            if policy.families.usesIPv6, let r = h.ipv6 {
                if case .answer(let list, let auth, _) = r {
                    v6 = list.sorted { $0.octets.lexicographicallyPrecedes($1.octets) }.map { MailTarget(host: h.host, address: .v6($0), preference: h.preference,
                                               implicitMX: h.implicitMX, authenticated: h.mxAuthenticated && auth) }
                } else if r.isTemporaryFailure { hostTemporary = true }
            }
            let addresses: [MailTarget]
            switch policy.preference {
            case .ipv4: addresses = v4.shuffled(using: &rng) + v6.shuffled(using: &rng)
            case .ipv6: addresses = v6.shuffled(using: &rng) + v4.shuffled(using: &rng)
            case .any: addresses = (v4 + v6).shuffled(using: &rng)
            }
            let isUs = localNames.contains(normalizedHostName(h.host))
                || addresses.contains { localAddresses.contains($0.address.unmapped) }
            if isUs { selfPreference = min(selfPreference ?? .max, h.preference) }
            if addresses.isEmpty {
                if hostTemporary { temporary = true }
                continue
            }
            candidates += addresses
        }

        if let us = selfPreference {
            candidates.removeAll { $0.preference >= us }
            if candidates.isEmpty {
                if let best = bestPreference, best < us {
                    return (.temporaryFailure(status: "4.4.4", reason: "unable to find primary relay for \(domain)"), true)
                }
                return (.permanentFailure(status: "5.4.6", reason: "mail for \(domain) loops back to myself"), true)
            }
        }
        if !policy.allowNonPublic {
            let before = candidates.count
            candidates.removeAll { !$0.address.isPublic }
            if candidates.isEmpty, before > 0, !temporary {
                return (.permanentFailure(status: "5.4.4", reason: "\(domain) resolves only to non-public addresses"),
                        selfPreference != nil)
            }
        }
        var seen = Set<DNSIPAddress>()
        candidates.removeAll { !seen.insert($0.address).inserted }
        if candidates.isEmpty {
            let destination: MailDestination
            if temporary {
                destination = .temporaryFailure(status: "4.4.3",
                                                reason: "address lookup for \(domain) failed temporarily")
            } else if implicit {
                destination = .permanentFailure(status: "5.1.2", reason: "\(domain) has no MX and no address")
            } else {
                destination = .permanentFailure(status: "5.4.4", reason: "no usable mail exchanger for \(domain)")
            }
            return (destination, selfPreference != nil)
        }
        if policy.maxAddresses > 0, candidates.count > policy.maxAddresses {
            candidates.removeLast(candidates.count - policy.maxAddresses)
        }
        return (.targets(candidates), selfPreference != nil)
    }

    /// Lower-case, without one trailing dot.
    static func normalizedHostName(_ s: String) -> String {
        let l = s.lowercased()
        return l.hasSuffix(".") ? String(l.dropLast()) : l
    }

    /// An RFC 5321 §4.1.3 address literal: `[192.0.2.1]`, `[IPv6:2001:db8::1]` (tag
    /// case-insensitive). nil if `domain` does not start with `[`; `.failure` if it does
    /// but is not a valid literal (general-address-literal tags and untagged IPv6 included).
    static func parseAddressLiteral(_ domain: String) -> Result<DNSIPAddress, LiteralError>? {
        guard domain.hasPrefix("[") else { return nil }
        guard domain.hasSuffix("]"), domain.count >= 3 else { return .failure(LiteralError()) }
        let inner = String(domain.dropFirst().dropLast())
        if inner.lowercased().hasPrefix("ipv6:") {
            let text = String(inner.dropFirst(5))
            if case .v6(let a)? = DNSIPAddress(parsing: text) { return .success(.v6(a)) }
            return .failure(LiteralError())
        }
        if case .v4(let a)? = DNSIPAddress(parsing: inner) { return .success(.v4(a)) }
        return .failure(LiteralError())
    }

    struct LiteralError: Error {}
}

/// SplitMix64 with a fixed seed: for a provisional plan where only the count matters, so
/// the caller's generator is not consumed by it.
struct FixedRandomNumberGenerator: RandomNumberGenerator {
    private var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - Resolver wrapper

extension DNSResolver {
    /// Where mail for `domain` goes (RFC 5321 §5.1, RFC 7505), as Postfix's smtp client
    /// decides it. Never throws; every outcome is a ``MailDestination``:
    ///
    /// - `domain` is lower-cased and one trailing dot removed. Not a valid DNS name: 5.1.2.
    /// - Address literal `[192.0.2.1]` / `[IPv6:2001:db8::1]`: that address, no DNS lookup
    ///   (host = the address text, preference 0, `implicitMX`, not authenticated); still
    ///   subject to the family, loop and non-public rules. Malformed literal: 5.1.2; family
    ///   disabled: 5.4.4.
    /// - MX lookup: NXDOMAIN → 5.1.2 "domain does not exist"; temporary failure → 4.4.3;
    ///   null MX (only `0 .`) → `.nullMX`; NODATA → implicit MX: the domain's own A/AAAA
    ///   (preference 0), none → 5.1.2 "no MX and no address".
    /// - Exchangers: ``MailDestination/orderExchangers(_:using:)`` (preference order, equal
    ///   preferences shuffled, IP-literal exchanges skipped and logged at debug, as Postfix
    ///   does). An exchange that is a CNAME is followed by the A/AAAA lookups (RFC 5321 §5.1
    ///   allows it); the target keeps the MX name as `host`.
    /// - Per host: A and AAAA (concurrently) for the enabled families only; a host whose
    ///   lookups are denials is skipped; all skipped → 4.4.3 if any failed temporarily, else
    ///   5.4.4 "no usable mail exchanger".
    /// - Then loop detection, non-public filter, de-duplication and `maxAddresses` as in
    ///   ``MailDestination/plan(domain:hosts:policy:using:)``.
    /// - Lookups stop early: once a whole preference group is resolved and the addresses so
    ///   far already fill `maxAddresses`, or a host was us (nothing after it can be used),
    ///   the less preferred exchangers are not looked up. The result is the same as if all
    ///   had been.
    ///
    /// `rng` decides the shuffles (pass a seeded generator in tests).
    public func mailDestination(for domain: String, policy: MailDestinationPolicy,
                                using rng: inout some RandomNumberGenerator) async -> MailDestination {
        let d = MailDestination.normalizedHostName(domain)
        let result = await resolveMailDestination(d, policy: policy, using: &rng)
        logger.debug("dns: mail destination", metadata: ["domain": "\(d)", "result": "\(result)"])
        return result
    }

    /// As ``mailDestination(for:policy:using:)`` with the system random number generator.
    public func mailDestination(for domain: String, policy: MailDestinationPolicy) async -> MailDestination {
        var rng = SystemRandomNumberGenerator()
        return await mailDestination(for: domain, policy: policy, using: &rng)
    }

    private func resolveMailDestination(_ d: String, policy: MailDestinationPolicy,
                                        using rng: inout some RandomNumberGenerator) async -> MailDestination {
        if let literal = MailDestination.parseAddressLiteral(d) {
            guard case .success(let address) = literal else {
                return .permanentFailure(status: "5.1.2", reason: "invalid address literal \(d)")
            }
            var host = MailDestination.HostLookup(host: address.description, preference: 0, implicitMX: true)
            switch address {
            case .v4(let a):
                guard policy.families.usesIPv4 else {
                    return .permanentFailure(status: "5.4.4", reason: "\(d) is an IPv4 address and IPv4 is disabled")
                }
                host.ipv4 = .answer([a], authenticated: false, ttl: 0)
            case .v6(let a):
                guard policy.families.usesIPv6 else {
                    return .permanentFailure(status: "5.4.4", reason: "\(d) is an IPv6 address and IPv6 is disabled")
                }
                host.ipv6 = .answer([a], authenticated: false, ttl: 0)
            }
            return MailDestination.plan(domain: d, hosts: [host], policy: policy, using: &rng)
        }
        guard let name = try? DNSName(d), !name.isRoot else {
            return .permanentFailure(status: "5.1.2", reason: "invalid domain name \(d)")
        }
        let mx = await lookup(name, .mx)
        switch mx {
        case .answer(let records, let mxAuthenticated, _):
            let all = records.compactMap { if case .mx(let m) = $0.data { m } else { nil } }
            if all.allSatisfy(\.exchange.isRoot) && all.contains(where: \.isNullMX) { return .nullMX }
            for m in all where MailDestination.isIPLiteralName(m.exchange) {
                logger.debug("dns: MX exchange is an IP address (RFC 5321 §5.1), skipped",
                             metadata: ["domain": "\(d)", "exchange": "\(m.exchange)"])
            }
            let ordered = MailDestination.orderExchangers(all, using: &rng)
            var hosts: [MailDestination.HostLookup] = []
            var i = 0
            while i < ordered.count {
                let preference = ordered[i].preference
                while i < ordered.count, ordered[i].preference == preference {
                    hosts.append(await hostLookup(ordered[i].exchange, preference: Int(preference),
                                                  implicitMX: false, mxAuthenticated: mxAuthenticated, policy: policy))
                    i += 1
                }
                guard i < ordered.count else { break }
                var fixed = FixedRandomNumberGenerator()
                let partial = MailDestination.planDetailed(domain: d, hosts: hosts, policy: policy, using: &fixed)
                if partial.sawSelf { break }
                if policy.maxAddresses > 0, case .targets(let t) = partial.destination, t.count >= policy.maxAddresses { break }
            }
            return MailDestination.plan(domain: d, hosts: hosts, policy: policy, using: &rng)
        case .nodata(let mxAuthenticated):
            let host = await hostLookup(name, preference: 0, implicitMX: true, mxAuthenticated: mxAuthenticated, policy: policy)
            return MailDestination.plan(domain: d, hosts: [host], policy: policy, using: &rng)
        case .nxdomain:
            return .permanentFailure(status: "5.1.2", reason: "domain \(d) does not exist")
        case .servfail, .timeout, .refused, .formerr:
            return .temporaryFailure(status: "4.4.3", reason: "MX lookup for \(d) failed temporarily (\(mx.failureName))")
        }
    }

    /// A and AAAA of one exchanger, concurrently, for the enabled families only.
    private func hostLookup(_ name: DNSName, preference: Int, implicitMX: Bool, mxAuthenticated: Bool,
                            policy: MailDestinationPolicy) async -> MailDestination.HostLookup {
        async let v4: DNSOutcome? = policy.families.usesIPv4 ? lookup(name, .a) : nil
        async let v6: DNSOutcome? = policy.families.usesIPv6 ? lookup(name, .aaaa) : nil
        let (r4, r6) = await (v4, v6)
        let host = MailDestination.HostLookup(
            host: MailDestination.normalizedHostName(name.description), preference: preference,
            implicitMX: implicitMX, mxAuthenticated: mxAuthenticated,
            ipv4: r4?.map { $0.compactMap { if case .a(let a) = $0.data { a } else { nil } } },
            ipv6: r6?.map { $0.compactMap { if case .aaaa(let a) = $0.data { a } else { nil } } })
        if host.ipv4?.value?.isEmpty != false && host.ipv6?.value?.isEmpty != false {
            logger.debug("dns: mail exchanger has no address, skipped",
                         metadata: ["host": "\(host.host)", "a": "\(r4.map(\.failureName) ?? "-")",
                                    "aaaa": "\(r6.map(\.failureName) ?? "-")"])
        }
        return host
    }
}

extension DNSResult {
    /// A short name of the case for logs and reasons ("SERVFAIL", "NODATA", ...).
    var failureName: String {
        switch self {
        case .answer: "answer"
        case .nxdomain: "NXDOMAIN"
        case .nodata: "NODATA"
        case .servfail: "SERVFAIL"
        case .timeout: "timeout"
        case .refused: "REFUSED"
        case .formerr: "FORMERR"
        }
    }
}

// MARK: - Address classification

extension DNSIPAddress {
    /// Parses an IPv4 dotted quad or any RFC 4291 IPv6 text form (no brackets, no zone id);
    /// nil otherwise.
    public init?(parsing string: String) {
        guard !string.isEmpty, !string.utf8.contains(0) else { return nil }
        if let a = DNSIPv4Address(string) { self = .v4(a) }
        else if let a = DNSIPv6Address(string) { self = .v6(a) }
        else { return nil }
    }

    /// False for addresses that mail must not be sent to from the Internet-facing gateway:
    /// see ``DNSIPv4Address/isPublic`` and ``DNSIPv6Address/isPublic``.
    public var isPublic: Bool {
        switch self {
        case .v4(let a): a.isPublic
        case .v6(let a): a.isPublic
        }
    }

    /// An IPv4-mapped IPv6 address as its IPv4 address; anything else unchanged.
    var unmapped: DNSIPAddress {
        if case .v6(let a) = self, let v4 = a.mappedIPv4 { return .v4(v4) }
        return self
    }
}

extension DNSIPv4Address {
    /// RFC 6890 special-purpose and other non-global blocks (prefix, length).
    static let nonPublicBlocks: [(UInt32, Int)] = [
        (0x0000_0000, 8),   // 0.0.0.0/8 "this network" (RFC 791)
        (0x0A00_0000, 8),   // 10.0.0.0/8 private (RFC 1918)
        (0x6440_0000, 10),  // 100.64.0.0/10 shared address space, CGNAT (RFC 6598)
        (0x7F00_0000, 8),   // 127.0.0.0/8 loopback
        (0xA9FE_0000, 16),  // 169.254.0.0/16 link-local (RFC 3927)
        (0xAC10_0000, 12),  // 172.16.0.0/12 private
        (0xC000_0000, 24),  // 192.0.0.0/24 IETF protocol assignments (RFC 6890)
        (0xC000_0200, 24),  // 192.0.2.0/24 TEST-NET-1 (RFC 5737)
        (0xC058_6300, 24),  // 192.88.99.0/24 6to4 relay anycast (deprecated, RFC 7526)
        (0xC0A8_0000, 16),  // 192.168.0.0/16 private
        (0xC612_0000, 15),  // 198.18.0.0/15 benchmarking (RFC 2544)
        (0xC633_6400, 24),  // 198.51.100.0/24 TEST-NET-2
        (0xCB00_7100, 24),  // 203.0.113.0/24 TEST-NET-3
        (0xE000_0000, 4),   // 224.0.0.0/4 multicast
        (0xF000_0000, 4),   // 240.0.0.0/4 reserved, including 255.255.255.255 broadcast
    ]

    /// False for 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12, 192.0.0/24, 192.0.2/24,
    /// 192.88.99/24, 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24, 224/4 and 240/4
    /// (which includes 255.255.255.255); true otherwise.
    public var isPublic: Bool {
        for (net, bits) in Self.nonPublicBlocks where value >> (32 - bits) == net >> (32 - bits) { return false }
        return true
    }
}

extension DNSIPv6Address {
    /// The IPv4 address of an IPv4-mapped address `::ffff:a.b.c.d`, nil otherwise.
    public var mappedIPv4: DNSIPv4Address? {
        guard octets[0..<10].allSatisfy({ $0 == 0 }), octets[10] == 0xFF, octets[11] == 0xFF else { return nil }
        return DNSIPv4Address(octets[12], octets[13], octets[14], octets[15])
    }

    /// Only global unicast (2000::/3) is public, except 2001::/32 (Teredo), 2001:2::/48
    /// (benchmarking), 2001:10::/28 and 2001:20::/28 (ORCHID), 2001:db8::/32 and 3fff::/20
    /// (documentation) and 5f00::/16 (SRv6 SIDs). Addresses that embed an IPv4 address are
    /// public exactly when it is: IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`
    /// (RFC 6052) and 6to4 `2002::/16` (RFC 3056). So `::`, `::1`, `::/96`, fc00::/7 (ULA),
    /// fe80::/10 (link-local), fec0::/10, ff00::/8 (multicast), 100::/64 (discard) and
    /// 64:ff9b:1::/48 (local NAT64) are not public.
    public var isPublic: Bool {
        let o = octets
        if let v4 = mappedIPv4 { return v4.isPublic }
        if o[0..<12].elementsEqual([0x00, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0]) {
            return DNSIPv4Address(o[12], o[13], o[14], o[15]).isPublic
        }
        if o[0] == 0x20, o[1] == 0x02 { return DNSIPv4Address(o[2], o[3], o[4], o[5]).isPublic }
        guard o[0] & 0xE0 == 0x20 else { return false }
        let w0 = UInt16(o[0]) << 8 | UInt16(o[1]), w1 = UInt16(o[2]) << 8 | UInt16(o[3]), w2 = UInt16(o[4]) << 8 | UInt16(o[5])
        if w0 == 0x2001 {
            if w1 == 0x0000 { return false }                      // 2001::/32 Teredo
            if w1 == 0x0002 && w2 == 0x0000 { return false }      // 2001:2::/48 benchmarking
            if w1 & 0xFFF0 == 0x0010 || w1 & 0xFFF0 == 0x0020 { return false }  // 2001:10::/28, 2001:20::/28 ORCHID
            if w1 == 0x0DB8 { return false }                      // 2001:db8::/32 documentation
        }
        if w0 == 0x3FFF, w1 & 0xF000 == 0x0000 { return false }  // 3fff::/20 documentation (RFC 9637)
        if w0 == 0x5F00 { return false }                          // 5f00::/16 SRv6 SIDs (RFC 9602)
        return true
    }
}
