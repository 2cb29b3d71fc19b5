import Logging
import NIOCore
import XCTest
import SMGDNS

/// Resolver behaviour against a scripted server on 127.0.0.1 (fault injection): hostile and
/// mismatched responses, timeouts, TC → TCP, CNAME loops, caching with a manual clock.
final class DNSResolverCraftedTests: XCTestCase {
    let logger = Logger(label: "test.dns")
    let good = DNSIPv4Address(127, 0, 0, 1)
    let evil = DNSIPv4Address(127, 0, 0, 66)

    func resolver(_ server: CraftedDNSServer, trusted: Bool = false, timeoutMs: Int64 = 300, attempts: Int = 1,
                  cache: DNSCache? = nil, configure: (inout DNSResolverConfiguration) -> Void = { _ in }) throws -> DNSResolver {
        var c = DNSResolverConfiguration(servers: [.init(host: "127.0.0.1", port: server.port, trusted: trusted)])
        c.timeout = .milliseconds(timeoutMs)
        c.attempts = attempts
        configure(&c)
        return try DNSResolver(configuration: c, cache: cache, logger: logger)
    }

    /// Sends `bad` replies first, then (if `thenGood`) the right answer.
    func server(bad: @escaping @Sendable (DNSMessage) -> [CraftedDNSServer.Reply], thenGood: Bool) async throws -> CraftedDNSServer {
        let goodIP = good, evilIP = evil
        _ = evilIP
        return try await CraftedDNSServer.start { q, _ in
            var replies = bad(q)
            if thenGood {
                replies.append(.init(bytes: makeResponse(to: q, answers: [aRecord(q.questions[0].name, goodIP)])))
            }
            return replies
        }
    }

    func testSpoofedIdWrongQuestionWrongPortAndGarbageAreDropped() async throws {
        let evil = self.evil
        let cases: [(String, @Sendable (DNSMessage) -> [CraftedDNSServer.Reply])] = [
            ("wrong id", { q in [.init(bytes: makeResponse(to: q, answers: [aRecord(q.questions[0].name, evil)], id: q.id &+ 1))] }),
            ("wrong question name", { q in
                let other = n("other.example.test")
                return [.init(bytes: makeResponse(to: q, answers: [aRecord(other, evil)], question: DNSQuestion(name: other, type: .a)))]
            }),
            ("wrong question type", { q in
                [.init(bytes: makeResponse(to: q, answers: [aRecord(q.questions[0].name, evil)],
                                           question: DNSQuestion(name: q.questions[0].name, type: .aaaa)))]
            }),
            ("from wrong port", { q in [.init(bytes: makeResponse(to: q, answers: [aRecord(q.questions[0].name, evil)]), fromOtherPort: true)] }),
            ("not a response (QR=0)", { q in
                var b = makeResponse(to: q, answers: [aRecord(q.questions[0].name, evil)]); b[2] &= 0x7F
                return [.init(bytes: b)]
            }),
            ("garbage", { q in [.init(bytes: [UInt8(q.id >> 8), UInt8(q.id & 0xFF), 0x81, 0x80, 0, 1, 0, 1, 0xC0, 0xC0])] }),
            ("compression loop", { q in
                var b = makeResponse(to: q, answers: [aRecord(q.questions[0].name, evil)])
                // owner name of the answer (a pointer to the question at 12) now points at itself
                let at = 12 + q.questions[0].name.wire.count + 4
                b[at] = 0xC0; b[at + 1] = UInt8(at)
                return [.init(bytes: b)]
            }),
        ]
        for (label, bad) in cases {
            // Bad reply alone: dropped, so the lookup times out.
            let s1 = try await server(bad: bad, thenGood: false)
            let r1 = try resolver(s1)
            let out1 = try await r1.lookup("host.example.test", .a)
            XCTAssertEqual(out1, .timeout, label)
            XCTAssertEqual(s1.queries.count, 1, label)
            await s1.stop()
            // Bad reply, then the right one: the right one is taken.
            let s2 = try await server(bad: bad, thenGood: true)
            let r2 = try resolver(s2)
            let out2 = try await r2.a("host.example.test")
            XCTAssertEqual(out2.value, [good], label)
            await s2.stop()
        }
    }

    func testTimeoutFromSilentServerAndRetriesAcrossServers() async throws {
        let silent = try await CraftedDNSServer.start { _, _ in [] }
        let answering = try await server(bad: { _ in [] }, thenGood: true)
        defer { Task { await silent.stop(); await answering.stop() } }

        let r = try resolver(silent, timeoutMs: 200, attempts: 2)
        let clock = ContinuousClock()
        let start = clock.now
        let out = try await r.lookup("host.example.test", .a)
        let elapsed = clock.now - start
        XCTAssertEqual(out, .timeout)
        XCTAssertEqual(silent.queries.count, 2, "one try per attempt")
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(390))
        XCTAssertLessThan(elapsed, .seconds(2))

        var c = DNSResolverConfiguration(servers: [.init(host: "127.0.0.1", port: silent.port),
                                                   .init(host: "127.0.0.1", port: answering.port)])
        c.timeout = .milliseconds(200)
        c.attempts = 1
        let both = try DNSResolver(configuration: c, cache: nil, logger: logger)
        let out2 = try await both.a("host.example.test")
        XCTAssertEqual(out2.value, [good], "second server answers after the first timed out")
        XCTAssertEqual(answering.queries.count, 1)
    }

    func testQueriesUseRandomIdsPortsEDNSDO() async throws {
        let s = try await server(bad: { _ in [] }, thenGood: true)
        let r = try resolver(s)
        for i in 0..<8 { _ = try await r.a("h\(i).example.test") }
        let seen = s.queries
        XCTAssertEqual(seen.count, 8)
        XCTAssertGreaterThan(Set(seen.map(\.message.id)).count, 4, "ids vary")
        XCTAssertGreaterThan(Set(seen.map { $0.from.port! }).count, 4, "source ports vary")
        XCTAssertTrue(seen.allSatisfy { $0.from.ipAddress == "127.0.0.1" })
        for q in seen {
            XCTAssertEqual(q.message.edns?.udpPayloadSize, 1232)
            XCTAssertEqual(q.message.edns?.dnssecOK, true)
            XCTAssertTrue(q.message.flags.recursionDesired)
        }
        await s.stop()
    }

    func testTruncatedUDPAnswerIsRepeatedOverTCP() async throws {
        let name = n("big.example.test")
        let records = (0..<40).map { DNSRecord(name: name, type: .txt, ttl: 60, data: .txt(DNSTXTData([String(repeating: "t", count: 100) + "\($0)"]))) }
        let s = try await CraftedDNSServer.start { q, via in
            via == .udp ? [.init(bytes: makeResponse(to: q, tc: true))] : [.init(bytes: makeResponse(to: q, answers: records))]
        }
        let r = try resolver(s)
        let resp = try await r.query(name, type: .txt)
        XCTAssertTrue(resp.usedTCP)
        XCTAssertEqual(resp.message.answers.count, 40)
        XCTAssertEqual(s.queries.map(\.via), [.udp, .tcp])
        let txt = try await r.txt("big.example.test")
        XCTAssertEqual(txt.value?.count, 40)

        let tcpOnly = try resolver(s) { $0.transport = .tcpOnly }
        let before = s.queries.count
        let resp2 = try await tcpOnly.query(name, type: .txt)
        XCTAssertTrue(resp2.usedTCP)
        XCTAssertEqual(s.queries.dropFirst(before).map(\.via), [.tcp])
        await s.stop()
    }

    func testADTrustedOnlyFromTrustedServers() async throws {
        let goodIP = good
        let s = try await CraftedDNSServer.start { q, _ in [.init(bytes: makeResponse(to: q, answers: [aRecord(q.questions[0].name, goodIP)], ad: true))] }
        let untrusted = try await resolver(s, trusted: false).lookup("host.example.test", .a)
        let trusted = try await resolver(s, trusted: true).lookup("host.example.test", .a)
        XCTAssertEqual(untrusted.isAuthenticated, false)
        XCTAssertEqual(trusted.isAuthenticated, true)
        XCTAssertNotNil(untrusted.value)
        await s.stop()
    }

    func testRcodesMapToOutcomes() async throws {
        let zone = n("example.test")
        let s = try await CraftedDNSServer.start { q, _ in
            let l = q.questions[0].name.labels.first.map { String(decoding: $0, as: UTF8.self) } ?? ""
            switch l {
            case "nx": return [.init(bytes: makeResponse(to: q, rcode: .nxDomain, authorities: [soaRecord(zone, ttl: 300, minimum: 30)]))]
            case "nodata": return [.init(bytes: makeResponse(to: q, authorities: [soaRecord(zone, ttl: 300, minimum: 30)]))]
            case "sf": return [.init(bytes: makeResponse(to: q, rcode: .servFail))]
            case "ref": return [.init(bytes: makeResponse(to: q, rcode: .refused))]
            default: return []
            }
        }
        let r = try resolver(s)
        let nx = try await r.lookup("nx.example.test", .a)
        let nd = try await r.lookup("nodata.example.test", .a)
        let sf = try await r.lookup("sf.example.test", .a)
        let ref = try await r.lookup("ref.example.test", .a)
        let to = try await r.lookup("silent.example.test", .a)
        XCTAssertEqual(nx, .nxdomain(authenticated: false))
        XCTAssertEqual(nd, .nodata(authenticated: false))
        XCTAssertEqual(sf, .servfail)
        XCTAssertEqual(ref, .refused)
        XCTAssertEqual(to, .timeout)
        XCTAssertTrue(nx.isDenial && nd.isDenial)
        XCTAssertTrue(sf.isTemporaryFailure && to.isTemporaryFailure && ref.isTemporaryFailure)
        // A TLSA lookup that fails without proven denial must not look like "no TLSA".
        let tl = try await r.tlsa(port: 25, host: "sf.example.test")
        XCTAssertFalse(tl.isDenial)
        XCTAssertTrue(tl.isTemporaryFailure)
        await s.stop()
    }

    func testCNAMELoopAndEndlessChainsAreBounded() async throws {
        // In-answer loop: a -> b -> a.
        let s = try await CraftedDNSServer.start { q, _ in
            let a = n("a.example.test"), b = n("b.example.test")
            return [.init(bytes: makeResponse(to: q, answers: [
                DNSRecord(name: a, type: .cname, ttl: 60, data: .cname(b)),
                DNSRecord(name: b, type: .cname, ttl: 60, data: .cname(a)),
            ]))]
        }
        let out = try await resolver(s).lookup("a.example.test", .a)
        XCTAssertEqual(out, .servfail)
        XCTAssertEqual(s.queries.count, 1)
        await s.stop()

        // A server that always answers "CNAME to a new name" without SOA: the resolver re-asks,
        // but at most maximumCNAMEChain times.
        let endless = try await CraftedDNSServer.start { q, _ in
            let qn = q.questions[0].name
            return [.init(bytes: makeResponse(to: q, answers: [
                DNSRecord(name: qn, type: .cname, ttl: 60, data: .cname(try! qn.prepending("x"))),
            ]))]
        }
        let clock = ContinuousClock(), t0 = clock.now
        let out2 = try await resolver(endless) { $0.maximumCNAMEChain = 5 }.lookup("e.example.test", .a)
        XCTAssertEqual(out2, .servfail)
        XCTAssertLessThanOrEqual(endless.queries.count, 6)
        XCTAssertLessThan(clock.now - t0, .seconds(3))
        await endless.stop()
    }

    func testCacheHonoursTTLAndNegativeTTLWithManualClock() async throws {
        let zone = n("example.test")
        let goodIP = good
        let s = try await CraftedDNSServer.start { q, _ in
            let qn = q.questions[0].name
            switch qn.labels.first.map({ String(decoding: $0, as: UTF8.self) }) {
            case "host": return [.init(bytes: makeResponse(to: q, answers: [aRecord(qn, goodIP, ttl: 60)]))]
            // RFC 2308: negative TTL = min(SOA TTL 300, SOA MINIMUM 10) = 10
            case "nx": return [.init(bytes: makeResponse(to: q, rcode: .nxDomain, authorities: [soaRecord(zone, ttl: 300, minimum: 10)]))]
            case "nosoa": return [.init(bytes: makeResponse(to: q, rcode: .nxDomain))]
            default: return [.init(bytes: makeResponse(to: q, rcode: .servFail))]
            }
        }
        let clock = ManualClock()
        let cache = DNSCache(maximumEntries: 100, clock: clock)
        let r = try resolver(s, cache: cache)
        func count(_ prefix: String) -> Int { s.queries.filter { $0.message.questions[0].name.description.hasPrefix(prefix) }.count }

        let first = try await r.lookup("host.example.test", .a)
        guard case .answer(_, _, let ttl1) = first else { return XCTFail("\(first)") }
        XCTAssertEqual(ttl1, 60)
        clock.advance(seconds: 30)
        let second = try await r.lookup("HOST.example.test", .a)
        guard case .answer(let recs, _, let ttl2) = second else { return XCTFail("\(second)") }
        XCTAssertEqual(ttl2, 30, "remaining TTL")
        XCTAssertEqual(recs.first?.data, .a(good))
        XCTAssertEqual(count("host"), 1, "served from cache")
        clock.advance(seconds: 31)
        _ = try await r.lookup("host.example.test", .a)
        XCTAssertEqual(count("host"), 2, "expired after 60 s")

        _ = try await r.lookup("nx.example.test", .a)
        clock.advance(seconds: 9)
        let nx2 = try await r.lookup("nx.example.test", .a)
        XCTAssertEqual(nx2, .nxdomain(authenticated: false))
        XCTAssertEqual(count("nx"), 1, "negative answer cached")
        clock.advance(seconds: 2)
        _ = try await r.lookup("nx.example.test", .a)
        XCTAssertEqual(count("nx"), 2, "negative TTL is the SOA minimum (10 s), not the SOA TTL")

        _ = try await r.lookup("nosoa.example.test", .a)
        _ = try await r.lookup("nosoa.example.test", .a)
        XCTAssertEqual(count("nosoa"), 2, "no SOA, no negative caching")
        _ = try await r.lookup("fail.example.test", .a)
        _ = try await r.lookup("fail.example.test", .a)
        XCTAssertEqual(count("fail"), 2, "SERVFAIL is not cached")
        await s.stop()
    }

    func testCacheIsBoundedAndEvictsExpiredFirst() async {
        let clock = ManualClock()
        let cache = DNSCache(maximumEntries: 10, clock: clock)
        let rec = aRecord(n("x.example.test"), good)
        for i in 0..<5 {
            await cache.store(.init(name: n("short\(i).example.test"), type: .a), .answer([rec], authenticated: false, ttl: 5), ttl: 5)
        }
        for i in 0..<5 {
            await cache.store(.init(name: n("long\(i).example.test"), type: .a), .answer([rec], authenticated: false, ttl: 500), ttl: 500)
        }
        clock.advance(seconds: 10)
        for i in 0..<5 {
            await cache.store(.init(name: n("new\(i).example.test"), type: .a), .answer([rec], authenticated: false, ttl: 500), ttl: 500)
        }
        let afterExpiry = await cache.count
        XCTAssertEqual(afterExpiry, 10)
        for i in 0..<5 {
            let hit = await cache.lookup(.init(name: n("long\(i).example.test"), type: .a))
            XCTAssertNotNil(hit, "live entries survive while expired ones can go")
        }
        for i in 0..<100 {
            await cache.store(.init(name: n("bulk\(i).example.test"), type: .a), .answer([rec], authenticated: false, ttl: 500), ttl: 500)
        }
        let final = await cache.count
        let evictions = await cache.evictions
        XCTAssertLessThanOrEqual(final, 10)
        XCTAssertGreaterThan(evictions, 90)
        // Non-cacheable outcomes are ignored.
        await cache.store(.init(name: n("sf.example.test"), type: .a), .servfail, ttl: 100)
        let sf = await cache.lookup(.init(name: n("sf.example.test"), type: .a))
        XCTAssertNil(sf)
    }
}
