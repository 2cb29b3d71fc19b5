import ArgumentParser
import SMGCore
import SMGStore
import SMGDNS
import SMGTLSPolicy
import SMTPClient
import NIOCore
import Logging
import Foundation

/// `smgctl tls …`: forced TLS rules (R16), what policy a domain gets (like Postfix's
/// posttls-finger), and TLS-RPT reports (RFC 8460).
struct TLSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tls", abstract: "Outbound TLS policy: forced TLS rules, policy check, TLS reports.",
        subcommands: [Rule.self, Check.self, Report.self])

    struct Rule: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Forced TLS rules by sender and/or recipient domain (read by every egress within 5 s).",
            subcommands: [Add.self, List.self, Remove.self])

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Add a rule; prints its id.")
            @OptionGroup var connection: Connection
            @Option(name: .long, help: "Sender domain: example.com or *.example.com.") var sender: String?
            @Option(name: .long, help: "Recipient domain: example.com or *.example.com.") var recipient: String?
            @Option(name: .long, help: "encrypt (any certificate), verify (WebPKI, MX name) or fingerprint (pinned SHA-256).")
            var level: String
            @Option(name: .long, help: "SHA-256 of the server certificate (hex; repeatable; for --level fingerprint).")
            var fingerprint: [String] = []
            @Option(name: .long, help: "reject (bounce with an NDR) or hold (keep, retry, operator release) when TLS fails.")
            var action: String
            @Option(name: .long, help: "A note for operators.") var comment = ""

            func rule() throws -> ForcedTLSRule {
                do {
                    return try ForcedTLSRule.make(sender: sender, recipient: recipient, level: level, fingerprints: fingerprint,
                                                  action: action, comment: comment)
                } catch { throw ValidationError(error.description) }
            }

            func validate() throws { _ = try rule() }

            func run() async throws {
                let (redis, keys, _) = try connection.open()
                let added = try await ForcedTLSRuleStore(redis: redis, keys: keys).add(try rule())
                print("rule \(added.summary)")
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "The rules (and, with --providers, the built-in provider rules).")
            @OptionGroup var connection: Connection
            @Flag(name: .long, help: "JSON: a list of rule objects.") var json = false
            @Flag(name: .long, help: "Also the shipped provider rules (egress.tls_provider_rules).") var providers = false
            func run() async throws {
                let (redis, keys, _) = try connection.open()
                var rules = try await ForcedTLSRuleStore(redis: redis, keys: keys).list()
                if providers { rules += ForcedTLSRule.providers }
                if json {
                    print(String(decoding: try TLSCommand.encoder.encode(rules), as: UTF8.self))
                } else {
                    for rule in rules { print(rule.summary) }
                }
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Remove the rule ID.")
            @OptionGroup var connection: Connection
            @Argument(help: "The rule id (from `smgctl tls rule list`).") var id: String
            func run() async throws {
                let (redis, keys, _) = try connection.open()
                guard try await ForcedTLSRuleStore(redis: redis, keys: keys).remove(id) else {
                    throw ValidationError("<id>: there is no rule \"\(id)\"")
                }
                print("rule \(id) removed")
            }
        }
    }

    /// DNS and trust options shared by `check` and `report`.
    struct Lookup: ParsableArguments {
        @Option(name: [.customLong("dns-server"), .customLong("dns")],
                help: "DNS server host:port (default: $SMG_DNS_SERVERS, else /etc/resolv.conf).")
        var dnsServer: String?
        @Flag(name: .long, help: "Believe the server's AD bit (a validating resolver on a trusted path; needed for DANE).")
        var dnsTrusted = false
        @Option(name: .long, help: "PEM trust anchors added to the system's (default: $SMG_EGRESS_TLS_CA_FILE).")
        var caFile: String?
        @Option(name: .long, help: "HTTPS port of MTA-STS policy hosts.") var mtaStsPort = 443

        func resolver() throws -> DNSResolver {
            try TLSCommand.resolver(servers: dnsServer, trusted: dnsTrusted || ProcessInfo.processInfo.environment["SMG_DNS_TRUSTED"] == "true")
        }

        var trustFile: String? { caFile ?? ProcessInfo.processInfo.environment["SMG_EGRESS_TLS_CA_FILE"] }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the TLS policy egress would apply to DOMAIN, and why: MX hosts, TLSA records, MTA-STS policy, rules.")
        @OptionGroup var connection: Connection
        @OptionGroup var lookup: Lookup
        @Argument(help: "The recipient domain.") var domain: String
        @Option(name: .long, help: "The sender address or domain (for rules by sender).") var sender = ""
        @Flag(name: .long, help: "One JSON object instead of text.") var json = false

        func run() async throws {
            let (redis, keys, logger) = try connection.open()
            let resolver = try lookup.resolver()
            let domain = self.domain.lowercased()
            let policy = MailDestinationPolicy(maxAddresses: 0, allowNonPublic: true)
            var mx: [MailTarget] = []
            var routing = "ok"
            switch await resolver.mailDestination(for: domain, policy: policy) {
            case .targets(let list): mx = list
            case .nullMX: routing = "null MX: the domain accepts no mail"
            case .permanentFailure(let status, let reason): routing = "\(status) \(reason)"
            case .temporaryFailure(let status, let reason): routing = "\(status) \(reason)"
            }
            let fetcher = MTASTSFetcher(resolver: resolver, caFile: lookup.trustFile, port: lookup.mtaStsPort)
            let engine = TLSPolicyEngine(resolver: resolver,
                                         sts: MTASTSPolicySource(fetcher: fetcher, redis: redis, keys: keys, logger: logger,
                                                                 storesPolicies: false),
                                         rules: ForcedTLSRuleStore(redis: redis, keys: keys))
            let senderDomain = sender.contains("@") ? Address.domain(of: sender) : sender.lowercased()
            let decision = await engine.decide(domain: domain, senderDomain: senderDomain,
                                               targets: mx.map { .init(host: $0.host, authenticated: $0.authenticated) },
                                               viaMX: true)
            var hosts: [JSONValue] = []
            for (target, host) in zip(mx, decision.hosts) {
                var o: [String: JSONValue] = [
                    "host": .string(target.host), "address": .string("\(target.address)"), "preference": .int(target.preference),
                    "authenticated": .bool(target.authenticated), "tlsa": .array(host.tlsa.map { .string($0.description) }),
                    "tlsa_status": .string(host.tlsaStatus), "requirement": .string(Self.describe(host)),
                ]
                if let policy = decision.sts.policy { o["mta_sts_match"] = .bool(policy.matches(target.host)) }
                hosts.append(.object(o))
            }
            var sts: JSONValue = .null
            if let p = decision.sts.policy {
                sts = ["mode": .string(p.mode.rawValue), "mx": .array(p.mx.map { .string($0) }), "max_age": .int(p.maxAge),
                       "id": .string(decision.sts.id ?? ""), "cached": .bool(decision.sts.cached)]
            }
            let rules = decision.rule.map { JSONValue.string($0.summary) } ?? .null
            var out: [String: JSONValue] = ["domain": .string(domain), "policy": decision.facts, "mx": .array(hosts),
                                            "mta_sts": sts, "rule": rules, "routing": .string(routing)]
            if let f = decision.sts.failure { out["mta_sts_problem"] = .string(f.description) }
            if json {
                print(String(decoding: try TLSCommand.encoder.encode(JSONValue.object(out)), as: UTF8.self))
                return
            }
            print("domain:  \(domain)")
            print("policy:  \(decision.mode.rawValue) — \(decision.source)")
            if let rule = decision.rule { print("rule:    \(rule.summary) (on failure: \(decision.action.rawValue))") }
            if routing != "ok" { print("routing: \(routing)") }
            if let p = decision.sts.policy {
                print("mta-sts: id \(decision.sts.id ?? "?") mode \(p.mode.rawValue), max_age \(p.maxAge), mx \(p.mx.joined(separator: " "))"
                      + (decision.sts.cached ? " (cached)" : ""))
            }
            if let f = decision.sts.failure { print("mta-sts problem: \(f.description)") }
            for (target, host) in zip(mx, decision.hosts) {
                print("mx \(target.preference) \(target.host) [\(target.address)]\(target.authenticated ? " (DNSSEC)" : "")")
                print("    tlsa: \(host.tlsaStatus)")
                for record in host.tlsa { print("      \(record)") }
                print("    requires: \(Self.describe(host))")
            }
        }

        static func describe(_ host: TLSPolicyDecision.Host) -> String {
            if let blocked = host.blocked { return "no connection: \(blocked.description)" }
            let r = host.requirement
            guard r.required else { return host.stsTesting ? "opportunistic TLS (MTA-STS testing: failures reported)" : "opportunistic TLS" }
            var parts = ["STARTTLS"]
            if let dane = r.dane { parts.append(dane.isEmpty ? "DANE (no usable TLSA: any certificate)" : "DANE match") }
            if let names = r.verifyNames { parts.append("WebPKI certificate for \(names.joined(separator: ", "))") }
            if let f = r.fingerprints { parts.append("certificate SHA-256 in {\(f.sorted().joined(separator: ", "))}") }
            return parts.joined(separator: " + ")
        }
    }

    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "TLS-RPT reports (RFC 8460) of one UTC day for domains that ask for them; egress-good sends yesterday's once a day.")
        @OptionGroup var connection: Connection
        @OptionGroup var lookup: Lookup
        @Option(name: .long, help: "The UTC day, YYYY-MM-DD (default: yesterday).") var day: String?
        @Flag(name: .long, help: "Print the reports as a JSON list (default without --send).") var json = false
        @Flag(name: .long, help: "Send them now through the pipeline (even when already sent for that day).") var send = false
        @Option(name: .long, help: "The gateway's own domain (From, submitter; default $SMG_NDR_DOMAIN).") var submitter: String?
        @Option(name: .long, help: "organization-name in the report.") var organization = "Secure Mail Gateway"

        func validate() throws {
            if let day, day.count != 10 || ISO8601DateFormatter().date(from: "\(day)T00:00:00Z") == nil {
                throw ValidationError("--day: \"\(day)\" is not YYYY-MM-DD")
            }
        }

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let submitter = self.submitter ?? ProcessInfo.processInfo.environment["SMG_NDR_DOMAIN"] ?? "localhost"
            let day = self.day ?? TLSRPT.day(Date().addingTimeInterval(-86400))
            let sender = TLSReportSender(store: MessageStore(redis: redis, keys: keys), resolver: try lookup.resolver(),
                                         organization: organization, submitter: submitter, site: "smgctl",
                                         instance: "smgctl@\(ProcessInfo.processInfo.hostName)")
            if send {
                for (address, id) in try await sender.send(day: day, force: true) ?? [] { print("sent \(id) to \(address)") }
                if !json { return }
            }
            let built = try await sender.build(day: day)
            print(String(decoding: try TLSCommand.encoder.encode(built.map(\.report)), as: UTF8.self))
        }
    }

    /// A resolver for smgctl: `servers` (host:port, comma-separated), else `$SMG_DNS_SERVERS`,
    /// else /etc/resolv.conf; no cache (an operator asks for what DNS says now).
    static func resolver(servers: String?, trusted: Bool) throws -> DNSResolver {
        var logger = Logger(label: "smgctl.dns")
        logger.logLevel = .warning
        let list = servers ?? ProcessInfo.processInfo.environment["SMG_DNS_SERVERS"] ?? ""
        var configuration: DNSResolverConfiguration
        if list.isEmpty {
            configuration = try DNSResolverConfiguration.fromResolvConf()
        } else {
            var parsed: [DNSResolverConfiguration.Server] = []
            for item in list.split(separator: ",") {
                do { parsed.append(try .init(parsing: item.trimmingCharacters(in: .whitespaces), trusted: trusted)) } catch {
                    throw ValidationError("--dns-server: \(error)")
                }
            }
            configuration = DNSResolverConfiguration(servers: parsed)
        }
        return try DNSResolver(configuration: configuration, cache: nil, logger: logger)
    }

    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
