public import SMGDNS
public import SMGRedis
public import SMGStore
public import NIOCore
public import Logging
import AsyncHTTPClient
import SMGSync
import NIOSSL
import NIOHTTP1
public import Foundation

/// The `_mta-sts.<domain>` TXT record (RFC 8461 §3.1): `v=STSv1; id=<1–32 alphanumerics>`.
public struct MTASTSRecord: Sendable, Hashable {
    public var id: String

    /// The record among a name's TXT records: exactly one must start with `v=STSv1`; more than
    /// one, or an invalid one, means there is no policy (§3.1).
    public static func parse(_ records: [String]) -> MTASTSRecord? {
        let candidates = records.filter { $0.hasPrefix("v=STSv1;") || $0 == "v=STSv1" || $0.hasPrefix("v=STSv1 ") }
        guard candidates.count == 1 else { return nil }
        var id: String?
        for field in candidates[0].split(separator: ";") {
            let parts = field.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            if parts[0] == "v", parts[1] != "STSv1" { return nil }
            if parts[0] == "id" { id = parts[1] }
        }
        guard let id, (1...32).contains(id.count), id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
            return nil
        }
        return MTASTSRecord(id: id)
    }
}

/// An MTA-STS policy (RFC 8461 §3.2).
public struct MTASTSPolicy: Sendable, Hashable, Codable {
    public enum Mode: String, Sendable, Codable { case enforce, testing, none }
    public var mode: Mode
    /// MX patterns: `mx.example.com` or `*.example.com` (one leftmost label).
    public var mx: [String]
    public var maxAge: Int

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    /// The largest `max_age` the RFC allows (§3.2: 31557600, about a year).
    public static let maximumAge = 31_557_600

    /// Parses the policy body: `key: value` lines (CRLF or LF), `version: STSv1`, `mode`,
    /// `max_age`, one `mx` line per pattern (at least one unless mode is none); unknown keys are
    /// ignored, a repeated key other than `mx` keeps the first (§3.2).
    public static func parse(_ text: String) throws -> MTASTSPolicy {
        var version: String?, mode: String?, maxAge: String?
        var mx: [String] = []
        for rawLine in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine[...]
            guard let colon = line.firstIndex(of: ":") else {
                if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
                throw ParseError(description: "line without a colon: \(String(line.prefix(60)))")
            }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch key {
            case "version": version = version ?? value
            case "mode": mode = mode ?? value
            case "max_age": maxAge = maxAge ?? value
            case "mx": mx.append(value.lowercased())
            default: continue
            }
        }
        guard version == "STSv1" else { throw ParseError(description: "version is not STSv1") }
        guard let mode, let m = Mode(rawValue: mode) else { throw ParseError(description: "mode is not enforce, testing or none") }
        guard let maxAge, (1...10).contains(maxAge.count), maxAge.allSatisfy({ $0.isASCII && $0.isNumber }), let age = Int(maxAge) else {
            throw ParseError(description: "max_age is missing or not a number")
        }
        if m != .none && mx.isEmpty { throw ParseError(description: "no mx pattern") }
        for pattern in mx where pattern.isEmpty || pattern.contains(" ") || pattern.dropFirst().contains("*")
            || (pattern.hasPrefix("*") && !pattern.hasPrefix("*.")) {
            throw ParseError(description: "bad mx pattern \"\(pattern)\"")
        }
        return MTASTSPolicy(mode: m, mx: mx, maxAge: min(age, maximumAge))
    }

    /// Whether `host` (an MX name) matches one of the patterns (§4.1: a wildcard covers exactly
    /// the leftmost label).
    public func matches(_ host: String) -> Bool {
        let host = host.lowercased().hasSuffix(".") ? String(host.lowercased().dropLast()) : host.lowercased()
        return mx.contains { pattern in
            let p = pattern.hasSuffix(".") ? String(pattern.dropLast()) : pattern
            if p.hasPrefix("*.") {
                let suffix = p.dropFirst(1)   // ".example.com"
                guard host.hasSuffix(suffix) else { return false }
                let label = host.dropLast(suffix.count)
                return !label.isEmpty && !label.contains(".")
            }
            return host == p
        }
    }
}

/// Fetches policies over HTTPS with async-http-client: `https://mta-sts.<domain>/.well-known/mta-sts.txt`,
/// the host resolved through the gateway's resolver, certificate verified against the WebPKI
/// trust store (plus the configured extra anchors), no redirects, `text/plain`, at most 64 KiB,
/// within the timeout (RFC 8461 §3.3).
public struct MTASTSFetcher: Sendable {
    public let resolver: DNSResolver
    public let caFile: String?
    public let port: Int
    public let timeout: TimeAmount
    public static let maximumSize = 64 * 1024

    public init(resolver: DNSResolver, caFile: String?, port: Int = 443, timeout: TimeAmount = .seconds(20)) {
        self.resolver = resolver
        self.caFile = caFile.flatMap { $0.isEmpty ? nil : $0 }
        self.port = port
        self.timeout = timeout
    }

    public struct FetchError: Error, CustomStringConvertible {
        /// RFC 8460 result type: sts-policy-fetch-error, sts-policy-invalid, sts-webpki-invalid.
        public var type: String
        public var description: String
    }

    /// The policy text of `domain` (not yet parsed).
    public func fetch(domain: String) async throws(FetchError) -> String {
        let host = "mta-sts.\(domain)"
        let addresses: [DNSIPAddress]
        switch (try? await resolver.addresses(of: host)) ?? .servfail {
        case .answer(let list, _, _) where !list.isEmpty: addresses = list
        default: throw FetchError(type: "sts-policy-fetch-error", description: "\(host) does not resolve")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if let caFile { tls.additionalTrustRoots = [.file(caFile)] }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow,
                                                     timeout: .init(connect: timeout, read: timeout))
        configuration.dnsOverride = [host: "\(addresses[0])"]
        // One client per fetch: the address override is per client (fetches are rare: cached for max_age).
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            let text = try await Self.get(client, url: "https://\(host):\(port)/.well-known/mta-sts.txt", host: host,
                                          timeout: timeout)
            try? await client.shutdown()
            return text
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    static func get(_ client: HTTPClient, url: String, host: String, timeout: TimeAmount) async throws(FetchError) -> String {
        let request = HTTPClientRequest(url: url)
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: timeout)
        } catch {
            let text = "\(error)"
            let tlsProblem = text.contains("SSL") || text.contains("certificate") || text.contains("handshake")
            throw FetchError(type: tlsProblem ? "sts-webpki-invalid" : "sts-policy-fetch-error",
                             description: "fetching \(host): \(text.prefix(200))")
        }
        guard response.status == .ok else {
            throw FetchError(type: "sts-policy-fetch-error", description: "\(host) answered HTTP \(response.status.code)")
        }
        let type = response.headers.first(name: "content-type")?.lowercased() ?? ""
        guard type.split(separator: ";").first?.trimmingCharacters(in: .whitespaces) == "text/plain" else {
            throw FetchError(type: "sts-policy-invalid", description: "\(host) served \"\(type)\", not text/plain")
        }
        do {
            let body = try await response.body.collect(upTo: Self.maximumSize)
            return String(buffer: body)
        } catch {
            throw FetchError(type: "sts-policy-fetch-error", description: "policy from \(host) too large or cut short")
        }
    }
}

/// A policy cached for all sites in Redis at `<prefix>tls:sts:<domain>` (JSON: id, policy text,
/// fetched, expires as Unix seconds), expiring with the policy's max_age.
public struct MTASTSCacheEntry: Sendable, Codable, Hashable {
    public var id: String
    public var policy: String
    public var fetched: Int
    public var expires: Int
}

/// What the gateway knows of a domain's MTA-STS policy.
public struct MTASTSLookup: Sendable, Hashable {
    /// The policy in force (nil: none).
    public var policy: MTASTSPolicy?
    public var id: String?
    /// True when it came from the cache without a fetch.
    public var cached: Bool
    /// A failed fetch or a bad policy (RFC 8460 result type and detail), also when a cached policy
    /// stayed in force because of it.
    public var failure: MTASTSFetcher.FetchError?

    public static let none = MTASTSLookup(policy: nil, id: nil, cached: false, failure: nil)
}

extension MTASTSFetcher.FetchError: Hashable {
    public static func == (a: Self, b: Self) -> Bool { a.type == b.type && a.description == b.description }
    public func hash(into h: inout Hasher) { h.combine(type); h.combine(description) }
}

/// RFC 8461 §5 for one domain: TXT, cache, fetch when the id changed or nothing is cached, keep
/// the cached policy when a refresh fails (the cache is what resists a downgrade).
public struct MTASTSPolicySource: Sendable {
    public let fetcher: MTASTSFetcher
    public let redis: RedisClient
    public let keys: Keyspace
    let logger: Logger
    /// The policies this process last saw, used only while Redis cannot be read: a Redis outage
    /// must not turn an enforced domain opportunistic when its policy host is down too.
    let seen = Locked<[String: MTASTSCacheEntry]>([:])
    /// Fetches that failed (domain + TXT id → when): not tried again for `retryFailedFetch`, so a
    /// black-holed policy host does not cost every message to that domain a fetch timeout.
    let failedFetches = Locked<[String: (Date, MTASTSFetcher.FetchError)]>([:])
    /// False for `smgctl tls check`: look, do not write the shared cache.
    let storesPolicies: Bool
    public static let retryFailedFetch: TimeInterval = 600
    /// A cached policy is refetched after this even when its id did not change (RFC 8461 §10.2:
    /// refresh well before max_age runs out, so an attacker blocking one fetch gains nothing).
    public static let refreshAfter: TimeInterval = 86400

    public init(fetcher: MTASTSFetcher, redis: RedisClient, keys: Keyspace, logger: Logger, storesPolicies: Bool = true) {
        self.fetcher = fetcher
        self.redis = redis
        self.keys = keys
        self.logger = logger
        self.storesPolicies = storesPolicies
    }

    public func cached(_ domain: String, now: Date = Date()) async -> MTASTSCacheEntry? {
        let entry: MTASTSCacheEntry?
        do {
            let text = try await redis.command(["GET", .init(keys.mtaSTS(domain))]).string
            entry = text.flatMap { try? JSONDecoder().decode(MTASTSCacheEntry.self, from: Data($0.utf8)) }
        } catch {
            entry = seen.withLock { $0[domain] }
        }
        guard let entry, entry.expires > Int(now.timeIntervalSince1970) else { return nil }
        remember(domain, entry)
        return entry
    }

    func remember(_ domain: String, _ entry: MTASTSCacheEntry) {
        seen.withLock {
            if $0.count >= 10_000 { $0.removeAll() }
            $0[domain] = entry
        }
    }

    public func lookup(_ domain: String, now: Date = Date()) async -> MTASTSLookup {
        let domain = domain.lowercased()
        let cached = await cached(domain, now: now)
        let cachedPolicy = cached.flatMap { try? MTASTSPolicy.parse($0.policy) }
        func fromCache(_ failure: MTASTSFetcher.FetchError?) -> MTASTSLookup {
            guard let cached, let cachedPolicy else { return MTASTSLookup(policy: nil, id: nil, cached: false, failure: failure) }
            return MTASTSLookup(policy: cachedPolicy, id: cached.id, cached: true, failure: failure)
        }
        let txt = (try? await fetcher.resolver.txt("_mta-sts.\(domain)")) ?? .formerr
        guard case .answer(let records, _, _) = txt else {
            // No record (or DNS trouble): a cached policy stays in force until it expires (§5.1).
            return fromCache(nil)
        }
        guard let record = MTASTSRecord.parse(records.map(\.joined)) else { return fromCache(nil) }
        if let cached, cachedPolicy != nil, cached.id == record.id,
           Double(cached.fetched) + Self.refreshAfter > now.timeIntervalSince1970 {
            return fromCache(nil)
        }
        let attempt = "\(domain) \(record.id)"
        if let (at, error) = failedFetches.withLock({ $0[attempt] }), now.timeIntervalSince(at) < Self.retryFailedFetch {
            return fromCache(error)
        }
        let text: String
        let policy: MTASTSPolicy
        do {
            text = try await fetcher.fetch(domain: domain)
            policy = try MTASTSPolicy.parse(text)
        } catch {
            let failure = error as? MTASTSFetcher.FetchError
                ?? MTASTSFetcher.FetchError(type: "sts-policy-invalid", description: "policy of \(domain): \(error)")
            logger.info("MTA-STS policy fetch failed", metadata: ["domain": "\(domain)", "error": "\(failure)"])
            failedFetches.withLock {
                if $0.count >= 10_000 { $0.removeAll() }
                $0[attempt] = (now, failure)
            }
            return fromCache(failure)
        }
        failedFetches.withLock { _ = $0.removeValue(forKey: attempt) }
        let fetched = Int(now.timeIntervalSince1970)
        let entry = MTASTSCacheEntry(id: record.id, policy: text, fetched: fetched, expires: fetched + max(policy.maxAge, 1))
        remember(domain, entry)
        if storesPolicies, let json = try? JSONEncoder().encode(entry) {
            _ = try? await redis.command(["SET", .init(keys.mtaSTS(domain)), .init(String(decoding: json, as: UTF8.self)),
                                          "EX", .init(max(policy.maxAge, 1))])
        }
        return MTASTSLookup(policy: policy, id: record.id, cached: false, failure: nil)
    }
}
