public import NIOCore

/// Configuration of a ``DNSResolver``: which upstream servers, how long to wait, how often to
/// retry. A value type; all bounds are stated here and printable via `description`.
public struct DNSResolverConfiguration: Sendable, CustomStringConvertible {
    /// One upstream recursive server.
    public struct Server: Sendable, Hashable, CustomStringConvertible {
        /// IP literal (IPv4 or IPv6). Host names are not accepted: the resolver cannot resolve
        /// the names of its own servers.
        public var host: String
        public var port: Int
        /// Trust the AD bit from this server (it validates DNSSEC and the path to it is
        /// trusted, e.g. a local unbound): Postfix's `smtp_tls_dane` / glibc `trust-ad` model.
        /// When false, every result from this server has `authenticated == false`.
        public var trusted: Bool

        public init(host: String, port: Int = 53, trusted: Bool = false) {
            self.host = host; self.port = port; self.trusted = trusted
        }

        /// Parses `"127.0.0.1:5353"`, `"[::1]:53"`, `"127.0.0.1"` or `"::1"` (port 53 by default).
        public init(parsing hostPort: String, trusted: Bool = false) throws {
            var host = hostPort, port = 53
            if hostPort.hasPrefix("[") {
                guard let close = hostPort.firstIndex(of: "]") else {
                    throw DNSError(.invalidConfiguration, "bad server \(hostPort)")
                }
                host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
                let rest = hostPort[hostPort.index(after: close)...]
                if !rest.isEmpty {
                    guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()) else {
                        throw DNSError(.invalidConfiguration, "bad port in \(hostPort)")
                    }
                    port = p
                }
            } else if hostPort.filter({ $0 == ":" }).count == 1, let colon = hostPort.firstIndex(of: ":") {
                host = String(hostPort[..<colon])
                guard let p = Int(hostPort[hostPort.index(after: colon)...]) else {
                    throw DNSError(.invalidConfiguration, "bad port in \(hostPort)")
                }
                port = p
            }
            guard (1...65535).contains(port) else { throw DNSError(.invalidConfiguration, "port out of range in \(hostPort)") }
            guard DNSIPv4Address(host) != nil || DNSIPv6Address(host) != nil else {
                throw DNSError(.invalidConfiguration, "server must be an IP literal: \(hostPort)")
            }
            self.init(host: host, port: port, trusted: trusted)
        }

        func socketAddress() throws -> SocketAddress {
            do { return try SocketAddress(ipAddress: host, port: port) } catch {
                throw DNSError(.invalidConfiguration, "bad server address \(host):\(port)")
            }
        }

        public var description: String {
            (host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)") + (trusted ? " (trusted)" : "")
        }
    }

    /// How queries travel.
    public enum Transport: Sendable, Hashable {
        /// UDP, repeated over TCP when the answer has TC set (RFC 7766).
        case udpWithTCPFallback
        /// TCP only (glibc `options use-vc`).
        case tcpOnly
    }

    /// Servers in order of preference. Must not be empty.
    public var servers: [Server]
    /// Wait per try (one query to one server). Default 2 s. Bounds: 10 ms ... 60 s.
    public var timeout: TimeAmount = .seconds(2)
    /// Rounds over all servers. Default 2. Bounds: 1 ... 10.
    public var attempts: Int = 2
    public var transport: Transport = .udpWithTCPFallback
    /// EDNS(0) UDP payload size advertised (default 1232, the DNS Flag Day 2020 value).
    public var udpPayloadSize: UInt16 = 1232
    /// Set the DO bit (RFC 3225). Needed for the AD bit to be meaningful.
    public var dnssecOK: Bool = true
    /// Maximum CNAME records followed for one lookup (default 8).
    public var maximumCNAMEChain: Int = 8

    public init(servers: [Server]) {
        self.servers = servers
    }

    /// Checks the bounds above; throws ``DNSError/Code/invalidConfiguration``.
    public func validate() throws {
        guard !servers.isEmpty else { throw DNSError(.invalidConfiguration, "no DNS servers") }
        guard timeout >= .milliseconds(10), timeout <= .seconds(60) else {
            throw DNSError(.invalidConfiguration, "timeout out of 10ms...60s")
        }
        guard (1...10).contains(attempts) else { throw DNSError(.invalidConfiguration, "attempts out of 1...10") }
        guard udpPayloadSize >= 512 else { throw DNSError(.invalidConfiguration, "udpPayloadSize < 512") }
        guard (0...32).contains(maximumCNAMEChain) else { throw DNSError(.invalidConfiguration, "maximumCNAMEChain out of 0...32") }
        for s in servers { _ = try s.socketAddress() }
    }

    /// Reads `nameserver` lines and `options timeout:N attempts:N use-vc trust-ad` from a
    /// resolv.conf (at most 64 KiB are read). `trust-ad` marks every server as trusted, as glibc does.
    public static func fromResolvConf(path: String = "/etc/resolv.conf") throws -> DNSResolverConfiguration {
        guard let text = readSmallFile(path, maximum: 65536) else {
            throw DNSError(.invalidConfiguration, "cannot read \(path)")
        }
        return try parseResolvConf(text)
    }

    /// Parses resolv.conf text (see ``fromResolvConf(path:)``).
    public static func parseResolvConf(_ text: String) throws -> DNSResolverConfiguration {
        var hosts: [String] = []
        var config = DNSResolverConfiguration(servers: [])
        var trustAD = false
        for rawLine in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let line = rawLine.split(whereSeparator: { $0 == "#" || $0 == ";" }).first ?? ""
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let key = f.first else { continue }
            switch key {
            case "nameserver" where f.count >= 2:
                // glibc uses at most 3 (MAXNS); a zone id (%eth0) is dropped.
                let host = String(f[1].split(separator: "%").first ?? "")
                if hosts.count < 3, DNSIPv4Address(host) != nil || DNSIPv6Address(host) != nil { hosts.append(host) }
            case "options":
                for opt in f.dropFirst() {
                    if opt.hasPrefix("timeout:"), let n = Int(opt.dropFirst(8)) {
                        config.timeout = .seconds(Int64(min(max(n, 1), 30)))
                    } else if opt.hasPrefix("attempts:"), let n = Int(opt.dropFirst(9)) {
                        config.attempts = min(max(n, 1), 5)
                    } else if opt == "use-vc" {
                        config.transport = .tcpOnly
                    } else if opt == "trust-ad" {
                        trustAD = true
                    }
                }
            default: continue
            }
        }
        if hosts.isEmpty { hosts = ["127.0.0.1"] }   // resolv.conf(5): default is the local machine
        config.servers = hosts.map { Server(host: $0, port: 53, trusted: trustAD) }
        return config
    }

    public var description: String {
        "servers=\(servers) timeout=\(timeout.nanoseconds / 1_000_000)ms attempts=\(attempts) transport=\(transport) "
            + "udpPayloadSize=\(udpPayloadSize) dnssecOK=\(dnssecOK) maximumCNAMEChain=\(maximumCNAMEChain)"
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a small file with plain POSIX calls (resolv.conf is local and tiny; called once at setup).
func readSmallFile(_ path: String, maximum: Int) -> String? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 4096)
    while out.count < maximum {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
        if n <= 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return String(decoding: out.prefix(maximum), as: UTF8.self)
}
