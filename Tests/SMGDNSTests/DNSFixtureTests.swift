import Logging
import NIOCore
import SMGTestSupportDNS
import XCTest
import SMGDNS

/// End-to-end against real servers: knotd (authoritative for the fixture zones) and a
/// validating unbound with local trust anchors, both on 127.0.0.1 (Tests/Fixtures/dns).
final class DNSFixtureTests: XCTestCase {
    nonisolated(unsafe) static var fixture: DNSTestFixture?
    nonisolated(unsafe) static var startError: String = ""

    override class func setUp() {
        super.setUp()
        do { fixture = try DNSTestFixture.start() } catch { startError = "\(error)" }
    }

    override class func tearDown() {
        fixture?.stop()
        fixture = nil
        super.tearDown()
    }

    let logger = Logger(label: "test.dns.fixture")

    func resolver(trusted: Bool = true, configure: (inout DNSResolverConfiguration) -> Void = { _ in }) throws -> DNSResolver {
        let fx = try XCTUnwrap(Self.fixture, "DNS fixture did not start: \(Self.startError)")
        var c = DNSResolverConfiguration(servers: [try .init(parsing: fx.resolverAddress, trusted: trusted)])
        c.timeout = .seconds(3)
        c.attempts = 2
        configure(&c)
        return try DNSResolver(configuration: c, cache: nil, logger: logger)
    }

    func testAAndAAAA() async throws {
        let r = try resolver()
        let a = try await r.a("mx1.plain.test")
        XCTAssertEqual(a, .answer([DNSIPv4Address(127, 0, 0, 1)], authenticated: false, ttl: 300))
        let aaaa = try await r.aaaa("mx1.plain.test")
        XCTAssertEqual(aaaa.value?.map(\.description), ["::1"])
        let both = try await r.addresses(of: "mx1.plain.test")
        XCTAssertEqual(Set(both.value?.map(\.description) ?? []), ["127.0.0.1", "::1"])
        let v4only = try await r.addresses(of: "aonly.plain.test")
        XCTAssertEqual(v4only.value?.map(\.description), ["127.0.0.1"])
        let none = try await r.addresses(of: "nope.plain.test")
        XCTAssertEqual(none, .nxdomain(authenticated: false))
    }

    func testMXSortedAndNullMX() async throws {
        let r = try resolver()
        let mx = try await r.mx("plain.test")
        guard case .answer(.exchangers(let list), false, _) = mx else { return XCTFail("\(mx)") }
        XCTAssertEqual(list.map(\.preference), [5, 10, 20])
        XCTAssertEqual(list.map(\.exchange.description), ["mx0.plain.test", "mx1.plain.test", "mx2.plain.test"])
        let null = try await r.mx("nullmx.plain.test")
        XCTAssertEqual(null.value, .nullMX)
        // A domain with only A: MX is NODATA (the sender check then falls back to A).
        let aonly = try await r.mx("aonly.plain.test")
        XCTAssertEqual(aonly, .nodata(authenticated: false))
    }

    func testTXTWithMultipleStringsAndRecords() async throws {
        let r = try resolver()
        let txt = try await r.txt("multi.plain.test")
        let records = try XCTUnwrap(txt.value)
        XCTAssertEqual(Set(records.map(\.joined)), ["first string second string", "another record"])
        XCTAssertTrue(records.contains { $0.strings.count == 2 })
        let spf = try await r.txt("plain.test")
        XCTAssertEqual(spf.value?.first?.joined, "v=spf1 ip4:127.0.0.1 -all")
    }

    func testPTRv4AndV6() async throws {
        let r = try resolver()
        let v4 = try await r.ptr(for: "127.0.0.1")
        XCTAssertEqual(v4.value?.map(\.description), ["client.plain.test"])
        let v6 = try await r.ptr(for: "2001:db8::1")
        XCTAssertEqual(v6.value?.map(\.description), ["v6host.plain.test"])
        let none = try await r.ptr(for: "127.0.0.99")
        XCTAssertEqual(none, .nxdomain(authenticated: false))
    }

    func testTLSAFromSignedZoneIsAuthenticated() async throws {
        let r = try resolver()
        let t = try await r.tlsa(port: 25, host: "mx1.signed.test")
        guard case .answer(let recs, true, _) = t else { return XCTFail("expected authenticated answer, got \(t)") }
        XCTAssertEqual(recs.count, 1)
        XCTAssertEqual([recs[0].usage, recs[0].selector, recs[0].matchingType], [3, 1, 1])
        XCTAssertEqual(recs[0].hexData, "791ced87b43a8d59acd574dfce3943774cc86ac3a85a48812ed08f5c45a5e028")
        let unsigned = try await r.tlsa(port: 25, host: "mx1.plain.test")
        guard case .answer(_, false, _) = unsigned else { return XCTFail("unsigned TLSA must not be authenticated: \(unsigned)") }
    }

    func testADPresentForSignedAbsentForUnsigned() async throws {
        let r = try resolver()
        let signed = try await r.mx("signed.test")
        XCTAssertTrue(signed.isAuthenticated)
        XCTAssertNotNil(signed.value)
        let sts = try await r.txt("_mta-sts.signed.test")
        XCTAssertTrue(sts.isAuthenticated)
        XCTAssertEqual(sts.value?.first?.joined, "v=STSv1; id=20240501T000000;")
        let plain = try await r.mx("plain.test")
        XCTAssertFalse(plain.isAuthenticated)
        XCTAssertNotNil(plain.value)
        // Proven denials in the signed zone are authenticated too.
        let nx = try await r.a("nope.signed.test")
        XCTAssertEqual(nx, .nxdomain(authenticated: true))
        let nodata = try await r.mx("aonly.signed.test")
        XCTAssertEqual(nodata, .nodata(authenticated: true))
    }

    func testADFromUntrustedServerIsIgnored() async throws {
        let r = try resolver(trusted: false)
        let resp = try await r.query(try DNSName("signed.test"), type: .mx)
        XCTAssertTrue(resp.message.flags.authenticData, "the server did set AD")
        XCTAssertFalse(resp.authenticated)
        let mx = try await r.mx("signed.test")
        XCTAssertFalse(mx.isAuthenticated)
        let t = try await r.tlsa(port: 25, host: "mx1.signed.test")
        XCTAssertFalse(t.isAuthenticated)
    }

    func testBogusSignatureIsServfail() async throws {
        let r = try resolver()
        let txt = try await r.txt("broken.bogus.test")
        XCTAssertEqual(txt, .servfail)
        let tlsa = try await r.tlsa(port: 25, host: "mx1.bogus.test")
        XCTAssertEqual(tlsa, .servfail)
        XCTAssertFalse(tlsa.isDenial, "DANE must not downgrade: no proven denial")
        let fine = try await r.txt("fine.bogus.test")
        XCTAssertTrue(fine.isAuthenticated, "the rest of the zone validates, so the failure is the signature")
    }

    func testNXDOMAINvsNODATAvsSERVFAIL() async throws {
        let r = try resolver()
        let nx = try await r.a("nope.plain.test")
        XCTAssertEqual(nx, .nxdomain(authenticated: false))
        let nodata = try await r.txt("aonly.plain.test")
        XCTAssertEqual(nodata, .nodata(authenticated: false))
        let ent = try await r.a("ent.plain.test")
        XCTAssertEqual(ent, .nodata(authenticated: false), "empty non-terminal")
        let outside = try await r.a("mail.example.com")
        XCTAssertEqual(outside, .servfail, "the fixture resolver resolves nothing outside its zones")
    }

    func testCNAMEChainFollowedAndBounded() async throws {
        let r = try resolver()
        let out = try await r.lookup("alias1.plain.test", .a)
        guard case .answer(let recs, _, _) = out else { return XCTFail("\(out)") }
        XCTAssertEqual(recs.map(\.name.description), ["mx1.plain.test"])
        XCTAssertEqual(recs.map(\.data), [.a(DNSIPv4Address(127, 0, 0, 1))])
        let cname = try await r.lookup("alias1.plain.test", .cname)
        XCTAssertEqual(cname.value?.first?.data, .cname(try DNSName("alias2.plain.test")))
        let nodata = try await r.lookup("alias-nodata.plain.test", .aaaa)
        XCTAssertEqual(nodata, .nodata(authenticated: false))

        let loop = try await r.lookup("loop1.plain.test", .a)
        XCTAssertEqual(loop, .servfail)
        let tooLong = try await r.lookup("chain1.plain.test", .a)
        XCTAssertEqual(tooLong, .servfail, "10 CNAMEs exceed the default bound of 8")
        let longer = try resolver { $0.maximumCNAMEChain = 12 }
        let ok = try await longer.a("chain1.plain.test")
        XCTAssertEqual(ok.value, [DNSIPv4Address(127, 0, 0, 1)])
    }

    func testTruncationFallsBackToTCP() async throws {
        let r = try resolver()
        let resp = try await r.query(try DNSName("big.plain.test"), type: .txt)
        XCTAssertTrue(resp.usedTCP, "unbound set TC for a 1232-octet EDNS size")
        XCTAssertEqual(resp.message.answers.count, 30)
        let txt = try await r.txt("big.plain.test")
        XCTAssertEqual(txt.value?.count, 30)
        let small = try await r.query(try DNSName("plain.test"), type: .mx)
        XCTAssertFalse(small.usedTCP)
        let tcpOnly = try resolver { $0.transport = .tcpOnly }
        let viaTCP = try await tcpOnly.query(try DNSName("plain.test"), type: .mx)
        XCTAssertTrue(viaTCP.usedTCP)
        XCTAssertEqual(viaTCP.message.answers.count, 3)
    }

    func testNegativeAnswerCachedForSOAMinimum() async throws {
        let fx = try XCTUnwrap(Self.fixture, Self.startError)
        let clock = ManualClock()
        let cache = DNSCache(maximumEntries: 100, clock: clock)
        let r = try DNSResolver(configuration: .init(servers: [try .init(parsing: fx.resolverAddress, trusted: true)]),
                                cache: cache, logger: logger)
        // A name unbound has not cached yet, so its negative TTL is the full SOA minimum (60 s).
        let name = "never-asked-\(UInt32.random(in: 0...UInt32.max)).plain.test"
        let first = try await r.a(name)
        XCTAssertEqual(first, .nxdomain(authenticated: false))
        let key = DNSCache.Key(name: try DNSName(name), type: .a)
        clock.advance(seconds: 30)
        let cached = await cache.lookup(key)
        XCTAssertEqual(cached, .nxdomain(authenticated: false))
        clock.advance(seconds: 31)
        let expired = await cache.lookup(key)
        XCTAssertNil(expired, "plain.test SOA minimum is 60 s")
    }

    func testExtraZonesExtendTheFixture() throws {
        // Later tests add their own zones; this checks the mechanism with a second fixture.
        let fx = try DNSTestFixture.start(extraZones: [
            .init(name: "extra.test", mode: .signed, contents: """
                $ORIGIN extra.test.
                $TTL 300
                @ SOA ns1 hostmaster 1 3600 900 604800 60
                @ NS ns1
                ns1 A 127.0.0.1
                @ MX 10 mx.extra.test.
                """),
        ])
        defer { fx.stop() }
        let exp = expectation(description: "lookup")
        let logger = self.logger
        Task {
            let r = try DNSResolver(configuration: .init(servers: [try .init(parsing: fx.resolverAddress, trusted: true)]),
                                    cache: nil, logger: logger)
            let mx = try await r.mx("extra.test")
            XCTAssertTrue(mx.isAuthenticated)
            XCTAssertEqual(mx.value, .exchangers([DNSMXData(preference: 10, exchange: try DNSName("mx.extra.test"))]))
            let builtIn = try await r.mx("plain.test")
            XCTAssertNotNil(builtIn.value)
            exp.fulfill()
        }
        wait(for: [exp], timeout: 20)
    }
}
