public import NIOCore
internal import NIOPosix
public import Logging

/// The gateway's stub resolver: asks the configured recursive servers, follows CNAMEs,
/// caches, and turns responses into ``DNSResult`` values.
///
/// Owns no sockets between calls (each try opens and closes its own), its configuration is
/// immutable, and the ``DNSCache`` it uses may be shared with other resolvers. `Sendable`:
/// call it from any task concurrently. It never blocks a thread; all I/O runs on `group`.
public final class DNSResolver: Sendable {
    /// What ``query(_:type:)`` got back from a server.
    public struct Response: Sendable {
        public var message: DNSMessage
        public var server: DNSResolverConfiguration.Server
        /// True if the answer came over TCP (after TC, or with `.tcpOnly`).
        public var usedTCP: Bool
        /// AD bit, counted only when `server.trusted`.
        public var authenticated: Bool { server.trusted && message.flags.authenticData }
    }

    public let configuration: DNSResolverConfiguration
    public let cache: DNSCache?
    private let addresses: [SocketAddress]
    private let group: any EventLoopGroup
    /// Internal so the lookups built on top of the resolver (e.g. `mailDestination`) log to the same place.
    let logger: Logger

    /// - Parameters:
    ///   - cache: `DNSCache.shared` by default; nil disables caching.
    ///   - group: where sockets live; nil means NIO's `MultiThreadedEventLoopGroup.singleton`.
    public init(configuration: DNSResolverConfiguration, cache: DNSCache? = DNSCache.shared,
                group: (any EventLoopGroup)? = nil, logger: Logger) throws {
        try configuration.validate()
        self.configuration = configuration
        self.addresses = try configuration.servers.map { try $0.socketAddress() }
        self.cache = cache
        self.group = group ?? MultiThreadedEventLoopGroup.singleton
        self.logger = logger
    }

    // MARK: - Low level

    /// Sends one question, with retries across servers, and returns the first response whose
    /// RCODE is NOERROR or NXDOMAIN; if every server answered otherwise (SERVFAIL, REFUSED,
    /// FORMERR, ...), the last such response. Throws ``DNSError/Code/timeout`` when no server
    /// gave any acceptable response, `CancellationError` when the task is cancelled.
    public func query(_ name: DNSName, type: DNSRecordType) async throws -> Response {
        let question = DNSQuestion(name: name, type: type)
        var lastFailure: Response? = nil
        var answeredBadly = Set<Int>()
        for attempt in 0..<configuration.attempts {
            for (i, server) in configuration.servers.enumerated() where !answeredBadly.contains(i) {
                try Task.checkCancellation()
                do {
                    let r = try await exchange(question, serverIndex: i)
                    switch r.message.responseCode {
                    case .noError, .nxDomain:
                        return r
                    default:
                        logger.debug("dns: server answered \(r.message.responseCode)",
                                     metadata: ["server": "\(server)", "name": "\(name)", "type": "\(type)"])
                        lastFailure = r
                        answeredBadly.insert(i)
                    }
                } catch let e as DNSError {
                    logger.debug("dns: try failed", metadata: ["server": "\(server)", "attempt": "\(attempt)",
                                                                "name": "\(name)", "type": "\(type)", "error": "\(e)"])
                }
            }
            if answeredBadly.count == configuration.servers.count { break }
        }
        if let r = lastFailure { return r }
        throw DNSError(.timeout, "no response for \(name)/\(type) from \(configuration.servers)")
    }

    private func exchange(_ question: DNSQuestion, serverIndex i: Int) async throws -> Response {
        let server = configuration.servers[i], address = addresses[i]
        let edns = DNSEDNS(udpPayloadSize: configuration.udpPayloadSize, dnssecOK: configuration.dnssecOK)
        func send(tcp: Bool, edns: DNSEDNS?) async throws -> DNSMessage {
            let id = UInt16.random(in: 0...UInt16.max)
            let query = try DNSMessageEncoder.encode(.query(id: id, name: question.name, type: question.type, edns: edns))
            if tcp {
                return try await DNSTransportExchange.tcp(query: query, id: id, question: question, server: address,
                                                          timeout: configuration.timeout, group: group, logger: logger)
            }
            return try await DNSTransportExchange.udp(query: query, id: id, question: question, server: address,
                                                      timeout: configuration.timeout, group: group, logger: logger)
        }
        var tcp = configuration.transport == .tcpOnly
        var msg = try await send(tcp: tcp, edns: edns)
        if msg.flags.truncated && !tcp {
            logger.debug("dns: truncated over UDP, retrying over TCP", metadata: ["server": "\(server)", "name": "\(question.name)"])
            tcp = true
            msg = try await send(tcp: true, edns: edns)
        }
        if msg.responseCode == .formErr && msg.edns == nil {
            // A server that does not know EDNS (RFC 6891 §7): ask once more without it.
            msg = try await send(tcp: tcp, edns: nil)
        }
        return Response(message: msg, server: server, usedTCP: tcp)
    }

    // MARK: - Lookup with CNAME following and caching

    /// Looks up `type` records of `name`, following CNAMEs (at most
    /// `configuration.maximumCNAMEChain`; a loop or a longer chain gives `.servfail`).
    /// Answers, NXDOMAIN and NODATA are cached (see ``DNSCache``).
    public func lookup(_ name: DNSName, _ type: DNSRecordType) async -> DNSOutcome {
        let key = DNSCache.Key(name: name, type: type)
        if let cache, let hit = await cache.lookup(key) { return hit }
        let (outcome, ttl) = await resolveUncached(name, type)
        if let cache, let ttl { await cache.store(key, outcome, ttl: ttl) }
        return outcome
    }

    /// As ``lookup(_:_:)-(DNSName,_)``; throws ``DNSError/Code/invalidName`` for a bad name.
    public func lookup(_ name: String, _ type: DNSRecordType) async throws -> DNSOutcome {
        await lookup(try DNSName(name), type)
    }

    /// Returns the outcome and the TTL to cache it for (nil: do not cache).
    private func resolveUncached(_ qname: DNSName, _ type: DNSRecordType) async -> (DNSOutcome, UInt32?) {
        var current = qname
        var seen: Set<DNSName> = [qname]
        var chainTTL = UInt32.max
        var authenticated = true
        var queries = 0
        while true {
            queries += 1
            let response: Response
            do {
                response = try await query(current, type: type)
            } catch {
                return (.timeout, nil)
            }
            let msg = response.message
            authenticated = authenticated && response.authenticated
            switch msg.responseCode {
            case .noError, .nxDomain: break
            case .servFail: return (.servfail, nil)
            case .refused: return (.refused, nil)
            case .formErr: return (.formerr, nil)
            default: return (.servfail, nil)
            }
            // Walk the answer section from `current` along CNAMEs.
            var name = current
            var followedHere = false
            while true {
                let matches = msg.answers.filter { $0.type == type && $0.name == name }
                if !matches.isEmpty {
                    let ttl = min(chainTTL, matches.map(\.ttl).min()!)
                    return (.answer(matches, authenticated: authenticated, ttl: ttl), ttl)
                }
                guard type != .cname,
                      let cname = msg.answers.first(where: { $0.type == .cname && $0.name == name }),
                      case .cname(let target) = cname.data else { break }
                chainTTL = min(chainTTL, cname.ttl)
                guard seen.count <= configuration.maximumCNAMEChain else {
                    logger.debug("dns: CNAME chain too long", metadata: ["name": "\(qname)", "type": "\(type)"])
                    return (.servfail, nil)
                }
                guard seen.insert(target).inserted else {
                    logger.debug("dns: CNAME loop", metadata: ["name": "\(qname)", "type": "\(type)", "at": "\(target)"])
                    return (.servfail, nil)
                }
                name = target
                followedHere = true
            }
            let negativeTTL: UInt32? = msg.authorities.lazy.compactMap { rec -> UInt32? in
                if case .soa(let soa) = rec.data { return min(rec.ttl, soa.minimum) }
                return nil
            }.first.map { min($0, chainTTL) }
            if msg.responseCode == .nxDomain {
                return (.nxdomain(authenticated: authenticated), negativeTTL)
            }
            // NOERROR without the records. If we followed a CNAME that the server did not
            // resolve further (no SOA proving NODATA for the target), ask for the target.
            if followedHere && negativeTTL == nil && queries <= configuration.maximumCNAMEChain {
                current = name
                continue
            }
            return (.nodata(authenticated: authenticated), negativeTTL)
        }
    }

    // MARK: - Convenience

    /// IPv4 addresses of `host`.
    public func a(_ host: String) async throws -> DNSResult<[DNSIPv4Address]> {
        await lookup(try DNSName(host), .a).map { $0.compactMap { if case .a(let v) = $0.data { v } else { nil } } }
    }

    /// IPv6 addresses of `host`.
    public func aaaa(_ host: String) async throws -> DNSResult<[DNSIPv6Address]> {
        await lookup(try DNSName(host), .aaaa).map { $0.compactMap { if case .aaaa(let v) = $0.data { v } else { nil } } }
    }

    /// Mail exchangers of `domain`, sorted by preference, or `.nullMX` (RFC 7505) when the
    /// domain publishes only `0 .`. A `.` listed beside real exchangers is ignored.
    public func mx(_ domain: String) async throws -> DNSResult<DNSMXAnswer> {
        await lookup(try DNSName(domain), .mx).map { records in
            let all = records.compactMap { if case .mx(let m) = $0.data { m } else { nil } }
            let real = all.filter { !$0.exchange.isRoot }
            if real.isEmpty && all.contains(where: \.isNullMX) { return .nullMX }
            return .exchangers(real.enumerated().sorted {
                ($0.element.preference, $0.offset) < ($1.element.preference, $1.offset)
            }.map(\.element))
        }
    }

    /// TXT records of `name`, one ``DNSTXTData`` per record (use `.joined` for SPF/MTA-STS/DNSBL text).
    public func txt(_ name: String) async throws -> DNSResult<[DNSTXTData]> {
        await lookup(try DNSName(name), .txt).map { $0.compactMap { if case .txt(let t) = $0.data { t } else { nil } } }
    }

    /// PTR names for an IPv4 or IPv6 address (in-addr.arpa / ip6.arpa).
    /// Throws ``DNSError/Code/invalidAddress`` if `ip` is not an IP literal.
    public func ptr(for ip: String) async throws -> DNSResult<[DNSName]> {
        await lookup(try DNSReverseName.name(for: ip), .ptr).map { $0.compactMap { if case .ptr(let n) = $0.data { n } else { nil } } }
    }

    /// TLSA records at `_<port>._<proto>.<host>` (RFC 6698 §3). For DANE use only
    /// `.answer(_, authenticated: true, _)`; see ``DNSResult``.
    public func tlsa(port: Int, proto: String = "tcp", host: String) async throws -> DNSResult<[DNSTLSAData]> {
        let name = try DNSName(host).prepending("_\(port)", "_\(proto)")
        return await lookup(name, .tlsa).map { $0.compactMap { if case .tlsa(let t) = $0.data { t } else { nil } } }
    }

    /// A and AAAA of `host`, asked concurrently. An answer to either is an answer (IPv4 first);
    /// otherwise a temporary failure of either wins over a denial (so a 550 is only given when
    /// both are denied), NXDOMAIN wins over NODATA. `authenticated` and `ttl` are the weaker of both.
    public func addresses(of host: String) async throws -> DNSResult<[DNSIPAddress]> {
        let name = try DNSName(host)
        async let v4 = lookup(name, .a)
        async let v6 = lookup(name, .aaaa)
        let (r4, r6) = await (v4, v6)
        var addrs: [DNSIPAddress] = []
        var auth = true, ttl = UInt32.max, any = false
        for r in [r4, r6] {
            if case .answer(let recs, let a, let t) = r {
                any = true; auth = auth && a; ttl = min(ttl, t)
                for rec in recs {
                    switch rec.data {
                    case .a(let v): addrs.append(.v4(v))
                    case .aaaa(let v): addrs.append(.v6(v))
                    default: break
                    }
                }
            }
        }
        if any { return .answer(addrs, authenticated: auth, ttl: ttl) }
        for r in [r4, r6] where r.isTemporaryFailure { return r.map { _ in [] } }
        if case .nxdomain = r4 { return .nxdomain(authenticated: r4.isAuthenticated && r6.isAuthenticated) }
        if case .nxdomain = r6 { return .nxdomain(authenticated: r4.isAuthenticated && r6.isAuthenticated) }
        return .nodata(authenticated: r4.isAuthenticated && r6.isAuthenticated)
    }
}
