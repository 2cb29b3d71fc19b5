/// A domain name, stored in uncompressed wire form (length-prefixed labels ending with a zero byte).
///
/// Value type, immutable, `Sendable`. Equality and hashing are ASCII case-insensitive, as DNS
/// requires (RFC 4343). Bounds: labels 1...63 octets, the whole wire form at most 255 octets.
public struct DNSName: Hashable, Sendable, CustomStringConvertible {
    /// Uncompressed wire form, including the terminating root label (a single zero byte).
    public let wire: [UInt8]

    /// The root name ".".
    public static let root = DNSName(uncheckedWire: [0])

    /// Maximum length of a name in wire form (RFC 1035 §2.3.4).
    public static let maximumWireLength = 255
    /// Maximum length of a label (RFC 1035 §2.3.4).
    public static let maximumLabelLength = 63

    init(uncheckedWire: [UInt8]) { self.wire = uncheckedWire }

    /// Parses a name in presentation form ("mx1.example.test" or "mx1.example.test.").
    /// Backslash escapes are not interpreted. Throws ``DNSError/Code/invalidName``.
    public init(_ string: String) throws {
        if string == "." { self = .root; return }
        var s = Substring(string)
        if s.hasSuffix(".") { s = s.dropLast() }
        guard !s.isEmpty else { throw DNSError(.invalidName, "empty name") }
        var wire: [UInt8] = []
        wire.reserveCapacity(s.utf8.count + 2)
        for label in s.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            guard !label.isEmpty else { throw DNSError(.invalidName, "empty label in \(string)") }
            guard label.count <= Self.maximumLabelLength else {
                throw DNSError(.invalidName, "label longer than 63 octets in \(string)")
            }
            wire.append(UInt8(label.count))
            wire.append(contentsOf: label)
        }
        wire.append(0)
        guard wire.count <= Self.maximumWireLength else { throw DNSError(.invalidName, "name longer than 255 octets") }
        self.wire = wire
    }

    /// The labels, leftmost first, as raw octets.
    public var labels: [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        var i = 0
        while i < wire.count, wire[i] != 0 {
            let n = Int(wire[i])
            out.append(wire[(i + 1)..<(i + 1 + n)])
            i += 1 + n
        }
        return out
    }

    public var labelCount: Int { labels.count }
    public var isRoot: Bool { wire.count == 1 }

    /// Prepends labels: `DNSName("example.test").prepending("_25", "_tcp")` is `_25._tcp.example.test`.
    public func prepending(_ newLabels: String...) throws -> DNSName {
        try prepending(labels: newLabels)
    }

    public func prepending(labels newLabels: [String]) throws -> DNSName {
        var w: [UInt8] = []
        for l in newLabels {
            let u = Array(l.utf8)
            guard !u.isEmpty, u.count <= Self.maximumLabelLength, !u.contains(UInt8(ascii: ".")) else {
                throw DNSError(.invalidName, "bad label \(l)")
            }
            w.append(UInt8(u.count))
            w.append(contentsOf: u)
        }
        w.append(contentsOf: wire)
        guard w.count <= Self.maximumWireLength else { throw DNSError(.invalidName, "name longer than 255 octets") }
        return DNSName(uncheckedWire: w)
    }

    /// Presentation form without the trailing dot ("." for the root). Dots and backslashes
    /// inside labels and non-printable octets are escaped as `\.`, `\\` and `\DDD`.
    public var description: String {
        if isRoot { return "." }
        var out = ""
        var first = true
        for label in labels {
            if !first { out.append(".") }
            first = false
            for b in label {
                switch b {
                case UInt8(ascii: "."), UInt8(ascii: "\\"):
                    out.append("\\"); out.append(Character(UnicodeScalar(b)))
                case 0x21...0x7E:
                    out.append(Character(UnicodeScalar(b)))
                default:
                    let d = String(b)
                    out.append("\\" + String(repeating: "0", count: 3 - d.count) + d)
                }
            }
        }
        return out
    }

    public static func == (lhs: DNSName, rhs: DNSName) -> Bool {
        let a = lhs.wire, b = rhs.wire
        guard a.count == b.count else { return false }
        for i in 0..<a.count where asciiLower(a[i]) != asciiLower(b[i]) { return false }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        for b in wire { hasher.combine(asciiLower(b)) }
    }
}

@inline(__always)
func asciiLower(_ b: UInt8) -> UInt8 {
    (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b
}
