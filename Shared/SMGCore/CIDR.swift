import Foundation

/// An IPv4 or IPv6 network in CIDR notation (`192.0.2.0/24`, `2001:db8::/32`, or a single
/// address). Used for listener allowlists and customers' allowed source networks (R2).
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    public let address: [UInt8]     // 4 or 16 bytes
    public let prefixLength: Int

    public struct ParseError: Error, CustomStringConvertible {
        public var text: String
        public var description: String { "not a CIDR network: \"\(text)\"" }
    }

    public init(_ text: String) throws {
        let t = text.trimmingCharacters(in: .whitespaces)
        let parts = t.split(separator: "/", maxSplits: 1).map(String.init)
        guard let first = parts.first, let bytes = CIDR.parseAddress(first) else { throw ParseError(text: text) }
        let maxBits = bytes.count * 8
        var length = maxBits
        if parts.count == 2 {
            guard let l = Int(parts[1]), (0...maxBits).contains(l) else { throw ParseError(text: text) }
            length = l
        }
        address = CIDR.mask(bytes, length)
        prefixLength = length
    }

    public func contains(_ ip: String) -> Bool {
        guard var bytes = CIDR.parseAddress(ip) else { return false }
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) matches IPv4 networks.
        if bytes.count == 16, address.count == 4, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF,
           bytes[11] == 0xFF {
            bytes = Array(bytes[12...])
        }
        guard bytes.count == address.count else { return false }
        return CIDR.mask(bytes, prefixLength) == address
    }

    public var description: String {
        if address.count == 4 { return address.map(String.init).joined(separator: ".") + "/\(prefixLength)" }
        var groups: [String] = []
        for i in stride(from: 0, to: 16, by: 2) { groups.append(String(UInt16(address[i]) << 8 | UInt16(address[i + 1]), radix: 16)) }
        return groups.joined(separator: ":") + "/\(prefixLength)"
    }

    static func mask(_ bytes: [UInt8], _ length: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let bits = length - index * 8
            if bits >= 8 { return byte }
            if bits <= 0 { return 0 }
            return byte & UInt8(0xFF << (8 - bits) & 0xFF)
        }
    }

    /// Parses an IPv4 or IPv6 address (with optional `%zone`) into 4 or 16 bytes.
    public static func parseAddress(_ text: String) -> [UInt8]? {
        var t = text
        if let pct = t.firstIndex(of: "%") { t = String(t[..<pct]) }
        if t.hasPrefix("[") && t.hasSuffix("]") { t = String(t.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, t, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, t, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}

/// A list of networks; empty means nothing matches.
public struct NetworkList: Sendable, Hashable {
    public let networks: [CIDR]
    public init(_ networks: [CIDR]) { self.networks = networks }
    /// Parses a comma- or space-separated list.
    public init(parsing text: String) throws {
        networks = try text.split(whereSeparator: { $0 == "," || $0 == " " }).map { try CIDR(String($0)) }
    }
    public func contains(_ ip: String) -> Bool { networks.contains { $0.contains(ip) } }
}
