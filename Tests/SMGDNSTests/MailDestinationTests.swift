import Logging
import SMGTestSupportDNS
import XCTest
import SMGDNS

/// A seeded generator (SplitMix64), so shuffles are deterministic in tests.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// `DNSResolver.mailDestination` against the real fixture (knotd + validating unbound on
/// 127.0.0.1, zone `mx.test` in Tests/Fixtures/dns/zones), and the pure parts
/// (`MailDestination.plan`, `orderExchangers`, `isPublic`) without DNS.
final class MailDestinationTests: XCTestCase {
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

    let logger = Logger(label: "test.dns.mx")
    /// The fixture's hosts are all on loopback, so most tests allow non-public addresses.
    let open = MailDestinationPolicy(allowNonPublic: true)

    func resolver(trusted: Bool = true, cache: DNSCache? = nil) throws -> DNSResolver {
        let fx = try XCTUnwrap(Self.fixture, "DNS fixture did not start: \(Self.startError)")
        var c = DNSResolverConfiguration(servers: [try .init(parsing: fx.resolverAddress, trusted: trusted)])
        c.timeout = .seconds(3)
        c.attempts = 2
        return try DNSResolver(configuration: c, cache: cache, logger: logger)
    }

    func destination(_ domain: String, _ policy: MailDestinationPolicy? = nil, seed: UInt64 = 1,
                     resolver r: DNSResolver? = nil) async throws -> MailDestination {
        let r = try r ?? resolver()
        var rng = SeededGenerator(seed: seed)
        return await r.mailDestination(for: domain, policy: policy ?? open, using: &rng)
    }

    func targets(_ d: MailDestination, file: StaticString = #filePath, line: UInt = #line) -> [MailTarget] {
        guard case .targets(let t) = d else { XCTFail("expected targets, got \(d)", file: file, line: line); return [] }
        return t
    }

    func names(_ d: MailDestination, file: StaticString = #filePath, line: UInt = #line) -> [String] {
        targets(d, file: file, line: line).map(\.description)
    }

    func expectNames(_ domain: String, _ expected: [String], _ message: String = "",
                     file: StaticString = #filePath, line: UInt = #line) async throws {
        try await expectNames(domain, open, expected, message, file: file, line: line)
    }

    func expectNames(_ domain: String, _ policy: MailDestinationPolicy, _ expected: [String], _ message: String = "",
                     file: StaticString = #filePath, line: UInt = #line) async throws {
        let d = try await destination(domain, policy)
        XCTAssertEqual(names(d, file: file, line: line), expected, message, file: file, line: line)
    }

    func assertPermanent(_ d: MailDestination, _ status: String, contains text: String = "",
                         file: StaticString = #filePath, line: UInt = #line) {
        guard case .permanentFailure(let s, let reason) = d else {
            return XCTFail("expected permanent \(status), got \(d)", file: file, line: line)
        }
        XCTAssertEqual(s, status, reason, file: file, line: line)
        XCTAssertTrue(text.isEmpty || reason.contains(text), "\(reason) does not contain \(text)", file: file, line: line)
    }

    func assertTemporary(_ d: MailDestination, _ status: String, file: StaticString = #filePath, line: UInt = #line) {
        guard case .temporaryFailure(let s, let reason) = d else {
            return XCTFail("expected temporary \(status), got \(d)", file: file, line: line)
        }
        XCTAssertEqual(s, status, reason, file: file, line: line)
    }

    // MARK: - Against the fixture

    func testPreferenceOrder() async throws {
        let d = try await destination("pref.mx.test")
        XCTAssertEqual(names(d), ["h1.mx.test[127.0.0.1]", "h2.mx.test[127.0.0.2]", "h3.mx.test[127.0.0.3]"])
        let t = targets(d)
        XCTAssertEqual(t.map(\.preference), [10, 20, 30])
        XCTAssertFalse(t.contains { $0.implicitMX || $0.authenticated }, "unsigned zone")
        // Trailing dot and case do not matter.
        let again = try await destination("PREF.mx.test.")
        XCTAssertEqual(names(again), names(d))
    }

    func testEqualPreferenceIsShuffledButDeterministicForASeed() async throws {
        let r = try resolver()
        var rng = SeededGenerator(seed: 42)
        var orders: [[String]] = []
        for _ in 0..<40 {
            orders.append(targets(await r.mailDestination(for: "equal.mx.test", policy: open, using: &rng)).map(\.host))
        }
        XCTAssertEqual(Set(orders), [["h1.mx.test", "h2.mx.test"], ["h2.mx.test", "h1.mx.test"]])
        var rng2 = SeededGenerator(seed: 42)
        var again: [[String]] = []
        for _ in 0..<40 {
            again.append(targets(await r.mailDestination(for: "equal.mx.test", policy: open, using: &rng2)).map(\.host))
        }
        XCTAssertEqual(again, orders, "same seed, same sequence")
        // The unseeded variant works too.
        let sys = await r.mailDestination(for: "equal.mx.test", policy: open)
        XCTAssertEqual(Set(targets(sys).map(\.host)), ["h1.mx.test", "h2.mx.test"])
    }

    func testImplicitMX() async throws {
        let d = try await destination("implicit.mx.test")
        XCTAssertEqual(names(d), ["implicit.mx.test[127.0.0.20]", "implicit.mx.test[::1]"])
        XCTAssertTrue(targets(d).allSatisfy { $0.implicitMX && $0.preference == 0 })
        assertPermanent(try await destination("nomx-noaddr.mx.test"), "5.1.2", contains: "no MX and no address")
        // Only an A record, but IPv4 is disabled: nothing of the families in use.
        var v6 = open; v6.families = .ipv6
        assertPermanent(try await destination("aonly.plain.test", v6), "5.1.2", contains: "no MX and no address")
    }

    func testNullMX() async throws {
        let d = try await destination("null.mx.test")
        XCTAssertEqual(d, .nullMX)
        let plain = try await destination("nullmx.plain.test")
        XCTAssertEqual(plain, .nullMX, "an A record beside the null MX changes nothing")
    }

    func testNXDOMAINAndInvalidName() async throws {
        assertPermanent(try await destination("nope.mx.test"), "5.1.2", contains: "does not exist")
        assertPermanent(try await destination("a..b.test"), "5.1.2", contains: "invalid")
        assertPermanent(try await destination(""), "5.1.2", contains: "invalid")
        assertPermanent(try await destination("."), "5.1.2", contains: "invalid")
    }

    func testUnresolvableExchangerBesideAResolvableOne() async throws {
        try await expectNames("broken.mx.test", ["h2.mx.test[127.0.0.2]"])
        assertPermanent(try await destination("allbroken.mx.test"), "5.4.4", contains: "no usable mail exchanger")
    }

    func testExchangerThatIsACNAMEIsFollowed() async throws {
        let d = try await destination("cname.mx.test")
        XCTAssertEqual(names(d), ["alias.mx.test[127.0.0.2]"], "host stays the MX name; address from the CNAME target")
    }

    func testExchangerThatIsAnIPLiteralIsSkipped() async throws {
        try await expectNames("literal.mx.test", ["h2.mx.test[127.0.0.2]"])
        assertPermanent(try await destination("literalonly.mx.test"), "5.4.4", contains: "no usable mail exchanger")
    }

    func testLoopDetection() async throws {
        // We are the 20 backup (by address): only the more preferred 10 remains.
        var us = open; us.localAddresses = ["127.0.0.2"]
        try await expectNames("backup.mx.test", us, ["h1.mx.test[127.0.0.1]"])
        us.localAddresses = ["::ffff:127.0.0.2"]
        try await expectNames("backup.mx.test", us, ["h1.mx.test[127.0.0.1]"],
                       "an IPv4-mapped local address matches the IPv4 address")
        // We are the primary: nothing more preferred, so the mail loops.
        us.localAddresses = ["127.0.0.1"]
        assertPermanent(try await destination("backup.mx.test", us), "5.4.6", contains: "loops back to myself")
        // By name (case and trailing dot ignored).
        var byName = open; byName.localNames = ["GATEWAY.mx.test."]
        try await expectNames("byname.mx.test", byName, ["h1.mx.test[127.0.0.1]"])
        assertPermanent(try await destination("onlyus.mx.test", byName), "5.4.6", contains: "mail for onlyus.mx.test")
        // More preferred exchanger does not resolve and the rest is us: defer, do not bounce (Postfix 4.4.4).
        assertTemporary(try await destination("primary-gone.mx.test", byName), "4.4.4")
        // An implicit MX that is us.
        var self20 = open; self20.localAddresses = ["127.0.0.20"]
        assertPermanent(try await destination("implicit.mx.test", self20), "5.4.6")
    }

    func testNonPublicFiltering() async throws {
        let strict = MailDestinationPolicy()
        XCTAssertFalse(strict.allowNonPublic, "the default is the production rule")
        try await expectNames("mixed.mx.test", strict,
                       ["pub.mx.test[8.8.8.8]", "pub.mx.test[2001:4860:4860::8888]"])
        try await expectNames("mixed.mx.test", open,
                       ["h1.mx.test[127.0.0.1]", "pub.mx.test[8.8.8.8]", "pub.mx.test[2001:4860:4860::8888]"])
        assertPermanent(try await destination("pref.mx.test", strict), "5.4.4", contains: "only to non-public addresses")
        assertPermanent(try await destination("implicit.mx.test", strict), "5.4.4", contains: "only to non-public addresses")
    }

    func testFamiliesAndPreferenceWithDualStackHosts() async throws {
        try await expectNames("families.mx.test", [
            "dual.mx.test[127.0.0.10]", "dual.mx.test[::1]", "dual-b.mx.test[127.0.0.11]", "dual-b.mx.test[2001:db8::11]",
        ], "default: IPv4 first within each host, hosts in preference order")
        var p = open; p.preference = .ipv6
        try await expectNames("families.mx.test", p, [
            "dual.mx.test[::1]", "dual.mx.test[127.0.0.10]", "dual-b.mx.test[2001:db8::11]", "dual-b.mx.test[127.0.0.11]",
        ])
        p = open; p.families = .ipv4
        try await expectNames("families.mx.test", p,
                       ["dual.mx.test[127.0.0.10]", "dual-b.mx.test[127.0.0.11]"])
        p.preference = .ipv6
        try await expectNames("families.mx.test", p,
                       ["dual.mx.test[127.0.0.10]", "dual-b.mx.test[127.0.0.11]"], "preference cannot add a disabled family")
        p = open; p.families = .ipv6
        try await expectNames("families.mx.test", p, ["dual.mx.test[::1]", "dual-b.mx.test[2001:db8::11]"])
        // A v6-only exchanger with IPv4 only: skipped like a host that does not resolve.
        p = open; p.families = .ipv4
        try await expectNames("v6first.mx.test", p, ["h1.mx.test[127.0.0.1]"])
        try await expectNames("v6first.mx.test", open, ["v6only.mx.test[::1]", "h1.mx.test[127.0.0.1]"])

        // .any: random per host, hosts still grouped and in preference order.
        let r = try resolver()
        p = open; p.preference = .any
        var rng = SeededGenerator(seed: 7)
        var firsts = Set<String>()
        for _ in 0..<30 {
            let t = targets(await r.mailDestination(for: "families.mx.test", policy: p, using: &rng))
            XCTAssertEqual(t.map(\.host), ["dual.mx.test", "dual.mx.test", "dual-b.mx.test", "dual-b.mx.test"])
            firsts.insert(t[0].address.description)
        }
        XCTAssertEqual(firsts, ["127.0.0.10", "::1"])
    }

    func testMaxAddressesBoundsResultAndLookups() async throws {
        let cache = DNSCache(maximumEntries: 1000)
        let r = try resolver(cache: cache)
        func looked(_ host: String) async throws -> Bool {
            await cache.lookup(DNSCache.Key(name: try DNSName(host), type: .a)) != nil
        }
        let five = targets(try await destination("bounded.mx.test", open, resolver: r))
        XCTAssertEqual(five.count, 5, "default smtp_mx_address_limit")
        XCTAssertEqual(Set(five.prefix(4).map(\.description)),
                       Set((1...4).map { "many1.mx.test[127.0.1.\($0)]" }), "addresses of one host shuffled, all first")
        XCTAssertEqual(five[4].host, "many2.mx.test")
        let many2 = try await looked("many2.mx.test"), many3 = try await looked("many3.mx.test")
        XCTAssertTrue(many2)
        XCTAssertFalse(many3, "five addresses were found before the 30 exchanger")

        var unlimited = open; unlimited.maxAddresses = 0
        let all = try await destination("bounded.mx.test", unlimited)
        XCTAssertEqual(targets(all).count, 8)

        // The whole equal-preference group is resolved (its order is random), nothing beyond it.
        var two = open; two.maxAddresses = 2
        let t = targets(try await destination("bounded-eq.mx.test", two, resolver: r))
        XCTAssertEqual(t.count, 2)
        XCTAssertEqual(Set(t.map(\.host)).count, 1)
        let a = try await looked("samepref-a.mx.test"), b = try await looked("samepref-b.mx.test")
        let c = try await looked("samepref-c.mx.test")
        XCTAssertTrue(a && b)
        XCTAssertFalse(c)
    }

    func testTemporaryFailures() async throws {
        assertTemporary(try await destination("example.com"), "4.4.3")  // MX SERVFAIL: outside the fixture
        assertTemporary(try await destination("temp.mx.test"), "4.4.3")  // the only exchanger's A/AAAA SERVFAIL
        try await expectNames("temp-and-ok.mx.test", ["h2.mx.test[127.0.0.2]"])
        assertTemporary(try await destination("temp-and-nx.mx.test"), "4.4.3")
        // A temporary failure beside only non-public addresses is still temporary.
        var rng = SeededGenerator(seed: 5)
        let d = MailDestination.plan(domain: "x.test", hosts: [
            .init(host: "a.x.test", preference: 10, ipv4: .servfail, ipv6: .servfail),
            .init(host: "b.x.test", preference: 20, ipv4: .answer([DNSIPv4Address(10, 0, 0, 1)], authenticated: false, ttl: 1)),
        ], policy: MailDestinationPolicy(), using: &rng)
        assertTemporary(d, "4.4.3")
    }

    func testAddressLiteralDomains() async throws {
        try await expectNames("[127.0.0.1]", ["127.0.0.1[127.0.0.1]"])
        let v6 = targets(try await destination("[IPv6:::1]"))
        XCTAssertEqual(v6.map(\.description), ["::1[::1]"])
        XCTAssertTrue(v6.allSatisfy { $0.implicitMX && !$0.authenticated && $0.preference == 0 })
        let strict = MailDestinationPolicy()
        try await expectNames("[8.8.8.8]", strict, ["8.8.8.8[8.8.8.8]"])
        try await expectNames("[ipv6:2001:4860:4860:0:0:0:0:8888]", strict,
                       ["2001:4860:4860::8888[2001:4860:4860::8888]"], "tag case-insensitive; canonical text")
        assertPermanent(try await destination("[192.0.2.1]", strict), "5.4.4", contains: "non-public")
        assertPermanent(try await destination("[IPv6:2001:db8::1]", strict), "5.4.4", contains: "non-public")
        for bad in ["[2001:db8::1]", "[mail.example.com]", "[300.1.1.1]", "[127.0.0.1", "[]", "[IPv6:127.0.0.1]"] {
            assertPermanent(try await destination(bad), "5.1.2", contains: "invalid address literal")
        }
        var us = open; us.localAddresses = ["127.0.0.1"]
        assertPermanent(try await destination("[127.0.0.1]", us), "5.4.6")
        var v4only = open; v4only.families = .ipv4
        assertPermanent(try await destination("[IPv6:::1]", v4only), "5.4.4", contains: "IPv6 is disabled")
    }

    func testAuthenticatedOnlyWhenMXAndAddressesAre() async throws {
        let signed = targets(try await destination("signed.test"))
        XCTAssertEqual(signed.map(\.description), ["mx1.signed.test[127.0.0.1]", "mx1.signed.test[::1]"])
        XCTAssertTrue(signed.allSatisfy(\.authenticated))
        let implicit = targets(try await destination("aonly.signed.test"))
        XCTAssertEqual(implicit.map(\.description), ["aonly.signed.test[127.0.0.1]"])
        XCTAssertTrue(implicit.allSatisfy { $0.authenticated && $0.implicitMX }, "secure NODATA for MX plus secure A")
        let plain = targets(try await destination("plain.test"))
        XCTAssertEqual(plain.map(\.description), ["mx0.plain.test[127.0.0.1]", "mx1.plain.test[::1]"],
                       "127.0.0.1 of mx1 and mx2 is already listed for mx0")
        XCTAssertFalse(plain.contains(where: \.authenticated))
        let untrusted = targets(try await destination("signed.test", resolver: try resolver(trusted: false)))
        XCTAssertFalse(untrusted.contains(where: \.authenticated))
    }

    func testDuplicateExchangersAndAddressesAreKeptOnce() async throws {
        try await expectNames("dup.mx.test", ["h1.mx.test[127.0.0.1]", "alias.mx.test[127.0.0.2]"])
    }

    // MARK: - Pure: no DNS

    var rngForPlan = SeededGenerator(seed: 3)

    func a(_ s: String) -> DNSIPv4Address { DNSIPv4Address(s)! }
    func aaaa(_ s: String) -> DNSIPv6Address { DNSIPv6Address(s)! }
    func v4(_ list: String...) -> DNSResult<[DNSIPv4Address]> { .answer(list.map(a), authenticated: false, ttl: 60) }

    func testPlanLoopRuleAndStatuses() {
        let hosts: [MailDestination.HostLookup] = [
            .init(host: "p.x.test", preference: 10, ipv4: v4("192.0.2.10")),
            .init(host: "q.x.test", preference: 10, ipv4: v4("192.0.2.11")),
            .init(host: "r.x.test", preference: 20, ipv4: v4("192.0.2.20")),
            .init(host: "s.x.test", preference: 30, ipv4: v4("192.0.2.30")),
        ]
        var p = MailDestinationPolicy(allowNonPublic: true)
        p.localAddresses = ["192.0.2.20"]
        let d = MailDestination.plan(domain: "x.test", hosts: hosts, policy: p, using: &rngForPlan)
        XCTAssertEqual(Set(targets(d).map(\.host)), ["p.x.test", "q.x.test"])
        // "us" at 10 beside another 10: all of preference ≥ 10 go.
        p.localAddresses = ["192.0.2.11"]
        assertPermanent(MailDestination.plan(domain: "x.test", hosts: hosts, policy: p, using: &rngForPlan), "5.4.6")
        // An unresolvable primary ahead of us: 4.4.4 whether it was a denial or a temporary failure.
        for failure: DNSResult<[DNSIPv4Address]> in [.nxdomain(authenticated: false), .timeout] {
            let h: [MailDestination.HostLookup] = [
                .init(host: "gone.x.test", preference: 5, ipv4: failure),
                .init(host: "me.x.test", preference: 10, ipv4: v4("192.0.2.1")),
            ]
            var me = MailDestinationPolicy(allowNonPublic: true); me.localNames = ["me.x.test"]
            assertTemporary(MailDestination.plan(domain: "x.test", hosts: h, policy: me, using: &rngForPlan), "4.4.4")
        }
        // No hosts at all (every exchange was an IP literal).
        assertPermanent(MailDestination.plan(domain: "x.test", hosts: [], policy: p, using: &rngForPlan), "5.4.4")
        // All denials vs one temporary.
        let denied: [MailDestination.HostLookup] = [.init(host: "a.x.test", preference: 1, ipv4: .nodata(authenticated: false))]
        assertPermanent(MailDestination.plan(domain: "x.test", hosts: denied, policy: p, using: &rngForPlan), "5.4.4")
        let implicitDenied: [MailDestination.HostLookup] = [
            .init(host: "x.test", preference: 0, implicitMX: true, ipv4: .nodata(authenticated: false), ipv6: .nodata(authenticated: false)),
        ]
        assertPermanent(MailDestination.plan(domain: "x.test", hosts: implicitDenied, policy: p, using: &rngForPlan), "5.1.2")
        let temp = denied + [.init(host: "b.x.test", preference: 2, ipv4: .nodata(authenticated: false), ipv6: .refused)]
        assertTemporary(MailDestination.plan(domain: "x.test", hosts: temp, policy: p, using: &rngForPlan), "4.4.3")
    }

    func testPlanAddressOrderAuthenticationAndBound() {
        let hosts: [MailDestination.HostLookup] = [
            .init(host: "a.x.test", preference: 10, mxAuthenticated: true,
                  ipv4: .answer([a("8.8.8.8")], authenticated: true, ttl: 60),
                  ipv6: .answer([aaaa("2001:4860::1")], authenticated: false, ttl: 60)),
            .init(host: "b.x.test", preference: 20, mxAuthenticated: true,
                  ipv4: .answer([a("8.8.4.4"), a("9.9.9.9")], authenticated: true, ttl: 60), ipv6: .servfail),
        ]
        var p = MailDestinationPolicy()
        let t = targets(MailDestination.plan(domain: "x.test", hosts: hosts, policy: p, using: &rngForPlan))
        XCTAssertEqual(t.prefix(2).map(\.description), ["a.x.test[8.8.8.8]", "a.x.test[2001:4860::1]"])
        XCTAssertEqual(t.prefix(2).map(\.authenticated), [true, false], "per address family")
        XCTAssertEqual(Set(t.suffix(2).map(\.description)), ["b.x.test[8.8.4.4]", "b.x.test[9.9.9.9]"],
                       "an AAAA failure beside an A answer: the A answer is used")
        p.maxAddresses = 3
        XCTAssertEqual(targets(MailDestination.plan(domain: "x.test", hosts: hosts, policy: p, using: &rngForPlan)).count, 3)
        p.preference = .ipv6
        XCTAssertEqual(targets(MailDestination.plan(domain: "x.test", hosts: hosts, policy: p, using: &rngForPlan))[0].description,
                       "a.x.test[2001:4860::1]")
        // A result for a disabled family is ignored even if the caller passes one.
        p.families = .ipv4
        XCTAssertFalse(targets(MailDestination.plan(domain: "x.test", hosts: hosts, policy: p, using: &rngForPlan))
            .contains { if case .v6 = $0.address { true } else { false } })
    }

    func testOrderExchangers() throws {
        func mx(_ p: UInt16, _ n: String) throws -> DNSMXData { DNSMXData(preference: p, exchange: try DNSName(n)) }
        let list = [try mx(20, "c.x.test"), try mx(10, "a.x.test"), try mx(10, "b.x.test"), try mx(5, "192.0.2.1."),
                    try mx(30, "a.x.test"), try mx(40, "."), try mx(15, "2001:db8::1")]
        var rng = SeededGenerator(seed: 11)
        var seen = Set<[String]>()
        for _ in 0..<30 {
            let o = MailDestination.orderExchangers(list, using: &rng)
            XCTAssertEqual(o.map(\.preference), [10, 10, 20])
            seen.insert(o.map(\.exchange.description))
        }
        XCTAssertEqual(seen, [["a.x.test", "b.x.test", "c.x.test"], ["b.x.test", "a.x.test", "c.x.test"]])
        XCTAssertTrue(MailDestination.isIPLiteralName(try DNSName("192.0.2.1.")))
        XCTAssertFalse(MailDestination.isIPLiteralName(try DNSName("192.0.2.1.in-addr.arpa")))
        let big = try (0..<200).map { try mx(UInt16($0), "h\($0).x.test") }
        XCTAssertEqual(MailDestination.orderExchangers(big, using: &rng).count, MailDestination.maximumExchangers)
    }

    func testIsPublicTable() {
        let table: [(String, Bool)] = [
            ("8.8.8.8", true), ("1.1.1.1", true), ("193.0.0.1", true), ("100.63.255.255", true), ("100.128.0.0", true),
            ("172.15.255.255", true), ("172.32.0.0", true), ("198.17.255.255", true), ("198.20.0.0", true),
            ("192.0.1.255", true), ("192.0.3.0", true), ("223.255.255.255", true),
            ("0.0.0.0", false), ("0.1.2.3", false), ("10.0.0.1", false), ("100.64.0.1", false), ("100.127.255.255", false),
            ("127.0.0.1", false), ("127.255.255.254", false), ("169.254.1.1", false), ("172.16.0.1", false),
            ("172.31.255.255", false), ("192.0.0.8", false), ("192.0.2.1", false), ("192.88.99.1", false),
            ("192.168.1.1", false), ("198.18.0.1", false), ("198.19.255.255", false), ("198.51.100.7", false),
            ("203.0.113.9", false), ("224.0.0.1", false), ("239.255.255.255", false), ("240.0.0.1", false),
            ("255.255.255.255", false),
            ("2001:4860:4860::8888", true), ("2a00:1450::1", true), ("2606:4700::1111", true),
            ("2001:1::1", true), ("2001:3::1", true), ("2002:808:808::1", true), ("::ffff:8.8.8.8", true),
            ("64:ff9b::808:808", true),
            ("::", false), ("::1", false), ("::127.0.0.1", false), ("::ffff:127.0.0.1", false), ("::ffff:10.1.2.3", false),
            ("64:ff9b::a00:1", false), ("64:ff9b:1::1", false), ("100::1", false), ("2001::1", false), ("2001:2::1", false),
            ("2001:10::1", false), ("2001:20::1", false), ("2001:db8::1", false), ("2001:db8:ffff::1", false),
            ("2002:a00:1::1", false), ("2002:7f00:1::1", false), ("3fff::1", false), ("3fff:fff::1", false),
            ("5f00::1", false), ("fc00::1", false), ("fd12:3456::1", false), ("fe80::1", false), ("febf::1", false),
            ("fec0::1", false), ("ff02::1", false), ("4000::1", false), ("1fff::1", false),
        ]
        for (text, expected) in table {
            guard let addr = DNSIPAddress(parsing: text) else { XCTFail("does not parse: \(text)"); continue }
            XCTAssertEqual(addr.isPublic, expected, text)
        }
        XCTAssertNil(DNSIPAddress(parsing: ""))
        XCTAssertNil(DNSIPAddress(parsing: "1.2.3"))
        XCTAssertNil(DNSIPAddress(parsing: "1.2.3.4\u{0}"))
        XCTAssertNil(DNSIPAddress(parsing: "[::1]"))
        XCTAssertNil(DNSIPAddress(parsing: "example.test"))
        XCTAssertEqual(DNSIPAddress(parsing: "2001:DB8:0::1")?.description, "2001:db8::1")
        XCTAssertEqual(DNSIPAddress(parsing: "::ffff:127.0.0.1").map { if case .v6 = $0 { true } else { false } }, true)
    }
}
