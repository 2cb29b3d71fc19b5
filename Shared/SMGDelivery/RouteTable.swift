/// Static next hops, like Postfix's transport maps: `domain` → `host:port`.
///
/// Lookup order for a recipient domain `a.b.example`: the exact domain, then parent domains
/// written with a leading dot (`.b.example`, `.example`), then `*`. No match → nil (the caller
/// then uses MX routing, once DNS is in; until then the recipient is deferred).
public struct RouteTable: Sendable, Equatable {
    public struct NextHop: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public private(set) var entries: [String: NextHop] = [:]

    public struct ParseError: Error, CustomStringConvertible {
        public var entry: String
        public var problem: String
        public var description: String { "route \"\(entry)\": \(problem)" }
    }

    /// Parses `domain → host:port` entries; `[host]:port` and `[v6]:port` are accepted,
    /// the port defaults to `defaultPort`.
    public init(_ map: [String: String], defaultPort: Int = 25) throws {
        for (domain, target) in map {
            let key = domain.lowercased().trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty else { throw ParseError(entry: domain, problem: "empty domain") }
            entries[key] = try Self.parseHop(target, defaultPort: defaultPort, entry: domain)
        }
    }

    static func parseHop(_ text: String, defaultPort: Int, entry: String) throws -> NextHop {
        var t = text.trimmingCharacters(in: .whitespaces)
        var port = defaultPort
        if t.hasPrefix("[") {
            guard let close = t.firstIndex(of: "]") else { throw ParseError(entry: entry, problem: "unclosed [") }
            let rest = t[t.index(after: close)...]
            if rest.hasPrefix(":") {
                guard let p = Int(rest.dropFirst()), (1...65535).contains(p) else {
                    throw ParseError(entry: entry, problem: "bad port in \"\(text)\"")
                }
                port = p
            } else if !rest.isEmpty { throw ParseError(entry: entry, problem: "junk after ] in \"\(text)\"") }
            t = String(t[t.index(after: t.startIndex)..<close])
        } else if let colon = t.lastIndex(of: ":"), t.firstIndex(of: ":") == colon {
            guard let p = Int(t[t.index(after: colon)...]), (1...65535).contains(p) else {
                throw ParseError(entry: entry, problem: "bad port in \"\(text)\"")
            }
            port = p
            t = String(t[..<colon])
        }
        guard !t.isEmpty, !t.contains(" ") else { throw ParseError(entry: entry, problem: "bad host in \"\(text)\"") }
        return NextHop(host: t, port: port)
    }

    public func lookup(domain: String) -> NextHop? {
        let d = domain.lowercased()
        if let hop = entries[d] { return hop }
        var rest = Substring(d)
        while let dot = rest.firstIndex(of: ".") {
            rest = rest[rest.index(after: dot)...]
            if let hop = entries["." + rest] { return hop }
        }
        return entries["*"]
    }
}
