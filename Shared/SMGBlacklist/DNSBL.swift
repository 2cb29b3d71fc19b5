public import SMGDNS
import Foundation

/// One DNS blocklist (RFC 5782): its zone, where its operator delists addresses, and what its
/// answers mean.
public struct DNSBLZone: Sendable, Hashable, Codable {
    public var zone: String
    public var delistURL: String
    /// Return code (`127.0.0.2`) → meaning. Codes not here in 127.0.0.2–127.0.0.254 still mean
    /// "listed" (RFC 5782 §2.1); 127.255.255.x and anything outside 127/8 are errors of the check.
    public var codes: [String: String]

    public init(zone: String, delistURL: String = "", codes: [String: String] = [:]) {
        self.zone = zone.lowercased()
        self.delistURL = delistURL
        self.codes = codes
    }

    /// What an A answer of this zone means.
    public enum Verdict: Sendable, Hashable {
        case listed(code: String, meaning: String)
        /// The zone refused to answer (rate limit, public resolver blocked, typo): not a listing.
        case error(String)
    }

    public func interpret(_ answer: DNSIPv4Address) -> Verdict {
        let o = answer.octets
        let code = answer.description
        if o[0] == 127, o[1] == 255, o[2] == 255 {
            return .error(codes[code] ?? "the list refused the query (\(code)): e.g. a public resolver, or too many queries")
        }
        guard o[0] == 127, o[1] == 0, o[2] == 0, o[3] >= 2, o[3] != 255 else {
            return .error("unexpected answer \(code) (not a listing code of RFC 5782: a resolver rewriting NXDOMAIN?)")
        }
        return .listed(code: code, meaning: codes[code] ?? "listed")
    }

    /// The shipped list: large, widely used lists whose listings do hurt delivery, each with its
    /// delisting page. Spamhaus, Barracuda and UCEPROTECT need a registered (non-public) resolver
    /// or a data-feed key for production volumes — a refusal shows as an error, not as clean.
    public static let defaults: [DNSBLZone] = [
        DNSBLZone(zone: "zen.spamhaus.org", delistURL: "https://check.spamhaus.org/", codes: [
            "127.0.0.2": "SBL: Spamhaus spam source", "127.0.0.3": "SBL CSS: snowshoe spam",
            "127.0.0.4": "XBL: exploited host", "127.0.0.5": "XBL: exploited host", "127.0.0.6": "XBL: exploited host",
            "127.0.0.7": "XBL: exploited host", "127.0.0.9": "SBL DROP: hijacked netblock",
            "127.0.0.10": "PBL: end-user range (ISP)", "127.0.0.11": "PBL: end-user range (Spamhaus)",
            "127.255.255.252": "typing error in the DNSBL name", "127.255.255.254": "query through a public or open resolver (refused)",
            "127.255.255.255": "excessive number of queries (refused)",
        ]),
        DNSBLZone(zone: "b.barracudacentral.org", delistURL: "https://www.barracudacentral.org/rbl/removal-request",
                  codes: ["127.0.0.2": "Barracuda Reputation Block List"]),
        DNSBLZone(zone: "bl.spamcop.net", delistURL: "https://www.spamcop.net/bl.shtml",
                  codes: ["127.0.0.2": "SpamCop: reported by spam recipients (expires by itself)"]),
        DNSBLZone(zone: "psbl.surriel.com", delistURL: "https://psbl.org/remove", codes: ["127.0.0.2": "PSBL: spam trap hits"]),
        DNSBLZone(zone: "bl.mailspike.net", delistURL: "https://mailspike.org/iplookup.html",
                  codes: ["127.0.0.2": "Mailspike: poor reputation"]),
        DNSBLZone(zone: "dnsbl-1.uceprotect.net", delistURL: "https://www.uceprotect.net/en/rblcheck.php",
                  codes: ["127.0.0.2": "UCEPROTECT level 1: this address sent to spam traps"]),
    ]

    /// Parses `blacklist.zones`: comma-separated `zone` or `zone|delisting URL`; a known zone keeps
    /// its codes. Throws a description of the bad entry.
    public static func parse(_ text: String) throws -> [DNSBLZone] {
        var out: [DNSBLZone] = []
        for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
            let parts = item.split(separator: "|", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            let zone = parts[0].lowercased().hasSuffix(".") ? String(parts[0].lowercased().dropLast()) : parts[0].lowercased()
            guard (try? DNSName(zone)) != nil, zone.contains(".") else { throw ParseError(entry: item) }
            var z = defaults.first { $0.zone == zone } ?? DNSBLZone(zone: zone)
            if parts.count == 2 { z.delistURL = parts[1] }
            out.append(z)
        }
        return out
    }

    public struct ParseError: Error, CustomStringConvertible {
        public var entry: String
        public var description: String { "\"\(entry)\" is not a DNS zone (zone or zone|delisting-url)" }
    }
}

/// The outcome of asking one zone about one address.
public enum DNSBLResult: Sendable, Hashable {
    case clean
    case listed(code: String, meaning: String, text: String?)
    /// The lookup failed or the zone refused: reported, never taken as clean.
    case failed(String)
}

/// Asks DNS blocklists through `SMGDNS`.
public struct DNSBLChecker: Sendable {
    public let resolver: DNSResolver

    public init(resolver: DNSResolver) { self.resolver = resolver }

    public func check(_ address: String, in zone: DNSBLZone) async -> DNSBLResult {
        let name: DNSName
        do { name = try DNSReverseName.name(for: address, in: zone.zone) } catch { return .failed("\(error)") }
        let answer = await resolver.lookup(name, .a)
        switch answer {
        case .nxdomain, .nodata: return .clean
        case .servfail, .timeout, .refused, .formerr: return .failed("DNS lookup of \(name) failed: \(answer)")
        case .answer(let records, _, _):
            let codes = records.compactMap { if case .a(let a) = $0.data { a } else { nil } }
            guard !codes.isEmpty else { return .failed("no A record in the answer for \(name)") }
            var listed: (String, String)? = nil
            for code in codes.sorted(by: { $0.value < $1.value }) {
                switch zone.interpret(code) {
                case .error(let why): return .failed(why)
                case .listed(let c, let meaning): listed = listed ?? (c, meaning)
                }
            }
            let txt = await resolver.lookup(name, .txt)
            let text = txt.value?.compactMap { if case .txt(let t) = $0.data { t.joined } else { nil } }.joined(separator: " ")
            return .listed(code: listed!.0, meaning: listed!.1, text: text.flatMap { $0.isEmpty ? nil : String($0.prefix(500)) })
        }
    }
}
