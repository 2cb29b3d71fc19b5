#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 address from an A record (value type, network byte order in `octets`).
public struct DNSIPv4Address: Hashable, Sendable, CustomStringConvertible {
    /// The address as a big-endian integer (127.0.0.1 is 0x7F000001).
    public var value: UInt32
    public init(value: UInt32) { self.value = value }
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }
    /// Parses dotted-quad notation; nil if it is not an IPv4 literal.
    public init?(_ string: String) {
        var addr = in_addr()
        guard inet_pton(AF_INET, string, &addr) == 1 else { return nil }
        value = UInt32(bigEndian: addr.s_addr)
    }
    public var octets: [UInt8] { [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
    public var description: String { octets.map(String.init).joined(separator: ".") }
}

/// An IPv6 address from an AAAA record (value type).
public struct DNSIPv6Address: Hashable, Sendable, CustomStringConvertible {
    /// The 16 octets in network order.
    public let octets: [UInt8]
    /// `octets` must have exactly 16 elements; otherwise nil.
    public init?(octets: [UInt8]) {
        guard octets.count == 16 else { return nil }
        self.octets = octets
    }
    /// Parses any RFC 4291 text form (including `::` and embedded IPv4); nil if not IPv6.
    public init?(_ string: String) {
        var addr = in6_addr()
        guard inet_pton(AF_INET6, string, &addr) == 1 else { return nil }
        octets = withUnsafeBytes(of: &addr) { Array($0) }
    }
    /// RFC 5952 text form.
    public var description: String {
        var addr = in6_addr()
        withUnsafeMutableBytes(of: &addr) { raw in for i in 0..<16 { raw[i] = octets[i] } }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count)) != nil else { return "?" }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Reverse-lookup names (RFC 1035 §3.5 in-addr.arpa, RFC 3596 §2.5 ip6.arpa).
public enum DNSReverseName {
    /// `"192.0.2.1"` → `1.2.0.192.in-addr.arpa`, `"2001:db8::1"` → nibble form under ip6.arpa.
    /// Throws ``DNSError/Code/invalidAddress`` for anything that is not an IP literal.
    public static func name(for ip: String) throws -> DNSName {
        let (labels, v6) = try reversedLabels(ip)
        return try DNSName(labels + (v6 ? ".ip6.arpa" : ".in-addr.arpa"))
    }

    /// The same reversed form under another zone, as DNS blocklists are asked (RFC 5782 §2.1,
    /// §2.4): `"192.0.2.1"` in `zen.example` → `1.2.0.192.zen.example`; IPv6 in nibble form.
    public static func name(for ip: String, in zone: String) throws -> DNSName {
        try DNSName(try reversedLabels(ip).labels + "." + zone)
    }

    /// Reversed octets (IPv4) or nibbles (IPv6), dot-separated, and whether it was IPv6.
    static func reversedLabels(_ ip: String) throws -> (labels: String, v6: Bool) {
        if let v4 = DNSIPv4Address(ip) {
            return (v4.octets.reversed().map(String.init).joined(separator: "."), false)
        }
        if let v6 = DNSIPv6Address(ip) {
            let hex = Array("0123456789abcdef")
            var nibbles: [String] = []
            for b in v6.octets.reversed() {
                nibbles.append(String(hex[Int(b & 0xF)]))
                nibbles.append(String(hex[Int(b >> 4)]))
            }
            return (nibbles.joined(separator: "."), true)
        }
        throw DNSError(.invalidAddress, "not an IP address: \(ip)")
    }
}

/// Either kind of address, as returned by ``DNSResolver/addresses(of:)``.
public enum DNSIPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(DNSIPv4Address)
    case v6(DNSIPv6Address)
    public var description: String {
        switch self {
        case .v4(let a): a.description
        case .v6(let a): a.description
        }
    }
}
