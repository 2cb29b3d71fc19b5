public import SMGDNS
public import SMGCore
public import SMTPClient
import Foundation

/// The outbound TLS policy of one recipient domain (R14–R16), decided before connecting:
/// DANE > MTA-STS > forced rule > opportunistic, the strictest applicable requirement per MX host.
public struct TLSPolicyDecision: Sendable {
    public enum Mode: String, Sendable { case dane, mtaSTS = "mta-sts", forced, opportunistic }
    /// What happens to the mail when no host meets its requirement.
    public enum FailureAction: String, Sendable { case `defer`, reject, hold }

    /// One MX host's (or route's) requirement, in the order of the targets given.
    public struct Host: Sendable {
        public var name: String?
        public var requirement: TLSRequirement
        /// Not to be connected to at all (a failed TLSA lookup, an MX outside the MTA-STS policy).
        public var blocked: TLSPolicyFailure?
        public var tlsa: [TLSARecord]
        /// What the TLSA lookup said, for `smgctl tls check`: `dane`, `none: …`, `failed: …`, `not looked up: …`.
        public var tlsaStatus: String
        /// MTA-STS `testing` applies: the session is judged afterwards, for reports only.
        public var stsTesting: Bool
    }

    public var domain: String
    public var mode: Mode
    public var source: String
    public var sts: MTASTSLookup
    /// The rule that applies (the first by strength), if any.
    public var rule: ForcedTLSRule?
    public var action: FailureAction
    public var hosts: [Host]

    /// The `tls_policy` fact of delivery events.
    public var facts: JSONValue {
        var o: [String: JSONValue] = ["mode": .string(mode.rawValue), "source": .string(source), "domain": .string(domain)]
        if let policy = sts.policy, mode == .mtaSTS { o["sts_mode"] = .string(policy.mode.rawValue) }
        if let rule {
            o["rule"] = .string(rule.id)
            o["action"] = .string(rule.action.rawValue)
        }
        return .object(o)
    }

    /// RFC 8460 §4.1 policy description for reports: type, strings, MX hosts.
    public var reportPolicy: (type: String, strings: [String], mxHosts: [String]) {
        switch mode {
        case .dane:
            let hosts = self.hosts.filter { $0.requirement.dane != nil }
            return ("tlsa", hosts.flatMap { h in h.tlsa.map(\.description) }, hosts.compactMap(\.name))
        case .mtaSTS:
            let p = sts.policy!
            let lines = ["version: STSv1", "mode: \(p.mode.rawValue)"] + p.mx.map { "mx: \($0)" } + ["max_age: \(p.maxAge)"]
            return ("sts", lines, p.mx)
        case .forced, .opportunistic:
            return ("no-policy-found", [], [])
        }
    }

    /// For MTA-STS `testing`: what would have failed under `enforce` in a session that went
    /// through (`tls` nil = plaintext).
    public func testingFailure(host: Host, tls: TLSReport?) -> TLSPolicyFailure? {
        guard host.stsTesting, let policy = sts.policy else { return nil }
        guard let name = host.name, policy.matches(name) else {
            return TLSPolicyFailure(type: "validation-failure", detail: "MX \(host.name ?? "?") is not in the MTA-STS policy")
        }
        guard let tls else { return TLSPolicyFailure(type: "starttls-not-supported", detail: "delivered without TLS") }
        guard tls.verified else {
            return TLSPolicyFailure(type: TLSPolicyFailure.type(ofVerifyError: tls.verifyError),
                                    detail: "certificate does not verify: \(tls.verifyError ?? "")")
        }
        return nil
    }
}

/// Decides `TLSPolicyDecision`s. Pure policy plus the lookups it needs (TLSA through the
/// validating resolver, MTA-STS through its cache, rules from Redis).
public struct TLSPolicyEngine: Sendable {
    public let resolver: DNSResolver?
    public let sts: MTASTSPolicySource?
    public let rules: ForcedTLSRuleStore?
    public let dane: Bool
    public let providerRules: Bool

    public init(resolver: DNSResolver?, sts: MTASTSPolicySource?, rules: ForcedTLSRuleStore?, dane: Bool = true,
                providerRules: Bool = true) {
        self.resolver = resolver
        self.sts = sts
        self.rules = rules
        self.dane = dane
        self.providerRules = providerRules
    }

    /// One target as the engine sees it: the MX host name (nil for an address) and whether its
    /// MX and address answers were DNSSEC-validated.
    public struct Target: Sendable, Hashable {
        public var host: String?
        public var authenticated: Bool
        public init(host: String?, authenticated: Bool) {
            self.host = host
            self.authenticated = authenticated
        }
    }

    /// The decision for mail from `senderDomain` to `domain` over `targets`. `viaMX` is false for
    /// a static route: then only forced rules apply (DANE and MTA-STS are about the domain's MX).
    public func decide(domain: String, senderDomain: String, targets: [Target], viaMX: Bool) async -> TLSPolicyDecision {
        let domain = domain.lowercased()
        let stsLookup = viaMX ? await sts?.lookup(domain) ?? .none : .none
        var operatorRules: [ForcedTLSRule]? = []
        if let rules { operatorRules = await rules.current() }
        let allRules = (operatorRules ?? []) + (providerRules ? ForcedTLSRule.providers : [])

        var tlsaByHost: [String: (records: [TLSARecord]?, status: String, failure: TLSPolicyFailure?)] = [:]
        var hosts: [TLSPolicyDecision.Host] = []
        var applied: [ForcedTLSRule] = []
        for target in targets {
            var host = TLSPolicyDecision.Host(name: target.host, requirement: .none, blocked: nil, tlsa: [],
                                              tlsaStatus: "not looked up", stsTesting: false)
            // DANE (RFC 7672 §2.2): only for validated MX and address answers.
            if let name = target.host, viaMX {
                if !dane {
                    host.tlsaStatus = "not looked up: DANE is off (egress.dane)"
                } else if !target.authenticated {
                    host.tlsaStatus = "not looked up: MX or address not DNSSEC-validated"
                } else {
                    if tlsaByHost[name] == nil { tlsaByHost[name] = await tlsa(name) }
                    let t = tlsaByHost[name]!
                    host.tlsaStatus = t.status
                    if let failure = t.failure { host.blocked = failure }
                    if let records = t.records {
                        host.tlsa = records
                        let usable = records.filter(\.isUsableForSMTP)
                        // Only unusable records (RFC 7672 §2.2): TLS is mandatory but not DANE-authenticated,
                        // so MTA-STS and rules below still add their checks.
                        host.requirement = usable.isEmpty ? TLSRequirement(required: true)
                            : TLSRequirement(required: true, dane: usable, daneNames: [name])
                        if usable.isEmpty { host.tlsaStatus = "dane: no usable TLSA record (TLS required, any certificate)" }
                    }
                }
            }
            // MTA-STS, where DANE does not apply (RFC 8461 §2).
            if host.requirement.dane == nil, host.blocked == nil, let policy = stsLookup.policy {
                switch policy.mode {
                case .enforce:
                    if let name = target.host, policy.matches(name) {
                        host.requirement.required = true
                        host.requirement.verifyNames = [name]
                    } else {
                        host.blocked = TLSPolicyFailure(
                            type: "validation-failure",
                            detail: "MX \(target.host ?? "?") is not listed in the MTA-STS policy of \(domain)")
                    }
                case .testing: host.stsTesting = true
                case .none: break
                }
            }
            // Forced rules tighten, never loosen.
            if operatorRules == nil {
                host.blocked = host.blocked ?? TLSPolicyFailure(
                    type: "validation-failure", detail: "the forced TLS rules cannot be read (Redis): not sent without them")
            }
            let matching = allRules.filter { $0.applies(senderDomain: senderDomain, recipientDomain: domain, mxHost: target.host) }
            for rule in matching {
                host.requirement.required = true
                switch rule.level {
                case .encrypt: break
                case .verify:
                    if host.requirement.dane == nil, host.requirement.verifyNames == nil {
                        host.requirement.verifyNames = target.host.map { [$0] } ?? []
                    }
                case .fingerprint:
                    host.requirement.fingerprints = (host.requirement.fingerprints ?? []).union(rule.fingerprints)
                }
                if !applied.contains(rule) { applied.append(rule) }
            }
            hosts.append(host)
        }
        // The rule that decides the action: operator rules first, then the strongest level.
        let rule = applied.enumerated().min { a, b in
            (a.element.mxHost != nil ? 1 : 0, -a.element.level.strength, a.offset)
                < (b.element.mxHost != nil ? 1 : 0, -b.element.level.strength, b.offset)
        }?.element

        let mode: TLSPolicyDecision.Mode
        let source: String
        if let h = hosts.first(where: { $0.requirement.dane != nil }), let name = h.name {
            mode = .dane
            source = "DNSSEC-validated TLSA at _25._tcp.\(name)"
        } else if let h = hosts.first(where: { $0.tlsaStatus.hasPrefix("failed") }), let name = h.name {
            // DANE may apply, the DNS cannot tell now: waiting for it, never downgraded.
            mode = .dane
            source = "TLSA lookup at _25._tcp.\(name) \(h.tlsaStatus): deferred until it answers"
        } else if let policy = stsLookup.policy, policy.mode != .none {
            mode = .mtaSTS
            source = "MTA-STS policy id \(stsLookup.id ?? "?") of \(domain) (\(stsLookup.cached ? "cached" : "fetched"))"
                + (stsLookup.failure.map { "; refresh failed, cached policy kept: \($0.description)" } ?? "")
        } else if let rule {
            mode = .forced
            source = "forced TLS rule \(rule.summary)"
        } else {
            mode = .opportunistic
            var why = viaMX ? "no validated TLSA, no MTA-STS policy, no forced rule" : "static route, no forced rule"
            if let failure = stsLookup.failure { why += " (MTA-STS: \(failure.description))" }
            source = why
        }
        return TLSPolicyDecision(domain: domain, mode: mode, source: source, sts: stsLookup, rule: rule,
                                 action: rule.map { $0.action == .reject ? .reject : .hold } ?? .defer, hosts: hosts)
    }

    /// `_25._tcp.<host>` TLSA: records (validated answer), none (no DANE), or a failure (defer).
    func tlsa(_ host: String) async -> (records: [TLSARecord]?, status: String, failure: TLSPolicyFailure?) {
        guard let resolver else { return (nil, "not looked up: no resolver", nil) }
        let result = (try? await resolver.tlsa(port: 25, host: host)) ?? .formerr
        switch result {
        case .answer(let list, let authenticated, _):
            guard authenticated else { return (nil, "none: TLSA answer not DNSSEC-validated", nil) }
            let records = list.map { TLSARecord(usage: $0.usage, selector: $0.selector, matchingType: $0.matchingType, data: $0.data) }
            return (records, "dane", nil)
        case .nxdomain, .nodata:
            return (nil, result.isAuthenticated ? "none: validated denial" : "none: no TLSA", nil)
        case .servfail:
            return (nil, "failed: SERVFAIL (bogus or unreachable)", TLSPolicyFailure(
                type: "dnssec-invalid", detail: "TLSA lookup for _25._tcp.\(host) failed (SERVFAIL): deferred, never downgraded"))
        case .timeout, .refused, .formerr:
            return (nil, "failed: \(result)", TLSPolicyFailure(
                type: "validation-failure", detail: "TLSA lookup for _25._tcp.\(host) failed (\(result)): deferred, never downgraded"))
        }
    }
}
