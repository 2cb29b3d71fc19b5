public import SMGDNS
import NIOCore
import Foundation

/// DNS settings of every process that asks DNS (ingress policies, egress MX/DANE, blacklist
/// monitor): one resolver per process, sharing the process-wide cache.
public enum DNSKeys {
    public static let servers = ConfigKey<String>.string(
        "dns.servers", default: "",
        help: "Recursive resolvers as host:port, comma-separated; empty = /etc/resolv.conf.")
    public static let trusted = ConfigKey<Bool>.bool(
        "dns.trusted", default: false,
        help: "The resolvers validate DNSSEC and the path to them is trusted (a local unbound): believe their AD bit (DANE).")
    public static let timeout = ConfigKey.duration(
        "dns.timeout", default: "2s", min: .milliseconds(10), max: .seconds(60), help: "Per-try DNS timeout.")
    public static let attempts = ConfigKey<Int>.int(
        "dns.attempts", default: 2, range: 1...10, help: "Tries per query (across the servers).")

    public static let all: [AnyConfigKey] = [servers.erased, trusted.erased, timeout.erased, attempts.erased]
}

extension GatewayProcess {
    /// The process's DNS resolver, from `dns.*`.
    /// `cache`: the process-wide cache by default; nil for lookups that must be fresh (blocklists).
    public func makeResolver(cache: DNSCache? = DNSCache.shared) throws -> DNSResolver {
        let list = try config.get(DNSKeys.servers)
        let trusted = try config.get(DNSKeys.trusted)
        var configuration: DNSResolverConfiguration
        if list.isEmpty {
            do { configuration = try DNSResolverConfiguration.fromResolvConf() } catch {
                throw ConfigError(key: DNSKeys.servers.name, source: "/etc/resolv.conf", problem: "\(error)")
            }
        } else {
            var servers: [DNSResolverConfiguration.Server] = []
            for item in list.split(separator: ",") {
                do {
                    servers.append(try .init(parsing: item.trimmingCharacters(in: .whitespaces), trusted: trusted))
                } catch {
                    throw ConfigError(key: DNSKeys.servers.name, source: "config", problem: "\"\(item)\": \(error)")
                }
            }
            configuration = DNSResolverConfiguration(servers: servers)
        }
        configuration.timeout = .milliseconds(Int64(try config.get(DNSKeys.timeout).milliseconds))
        configuration.attempts = try config.get(DNSKeys.attempts)
        return try DNSResolver(configuration: configuration, cache: cache, group: group, logger: logger)
    }
}
