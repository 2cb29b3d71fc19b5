import XCTest
import Glibc
import Logging
import SMGDNS
@testable import SMGBlacklist

/// RFC 5782 query names and return codes, the zone list, and the daily schedule across the
/// daylight-saving changes of Europe/Berlin.
final class DNSBLTests: XCTestCase {
    func testQueryNamesIPv4ReversedAndIPv6Nibbles() throws {
        XCTAssertEqual(try DNSReverseName.name(for: "192.0.2.99", in: "zen.example").description, "99.2.0.192.zen.example")
        XCTAssertEqual(try DNSReverseName.name(for: "2001:db8:1:2::25", in: "bl.example").description,
                       "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example")
        XCTAssertThrowsError(try DNSReverseName.name(for: "mx.example", in: "bl.example"))
        XCTAssertEqual(try DNSReverseName.name(for: "192.0.2.99").description, "99.2.0.192.in-addr.arpa")
    }

    func testReturnCodes() {
        let zen = DNSBLZone.defaults.first { $0.zone == "zen.spamhaus.org" }!
        XCTAssertEqual(zen.interpret(DNSIPv4Address(127, 0, 0, 2)), .listed(code: "127.0.0.2", meaning: "SBL: Spamhaus spam source"))
        XCTAssertEqual(zen.interpret(DNSIPv4Address(127, 0, 0, 42)), .listed(code: "127.0.0.42", meaning: "listed"))
        guard case .error(let why) = zen.interpret(DNSIPv4Address(127, 255, 255, 254)) else { return XCTFail("a refusal is no listing") }
        XCTAssertTrue(why.contains("public"), why)
        guard case .error = DNSBLZone(zone: "x.test").interpret(DNSIPv4Address(127, 255, 255, 255)) else { return XCTFail() }
        guard case .error = DNSBLZone(zone: "x.test").interpret(DNSIPv4Address(198, 51, 100, 7)) else {
            return XCTFail("an answer outside 127/8 (a resolver rewriting NXDOMAIN) is an error")
        }
        guard case .error = DNSBLZone(zone: "x.test").interpret(DNSIPv4Address(127, 0, 0, 1)) else { return XCTFail() }
    }

    func testZoneListParsing() throws {
        let zones = try DNSBLZone.parse("zen.spamhaus.org, bl.example.net|https://bl.example.net/remove ,")
        XCTAssertEqual(zones.map(\.zone), ["zen.spamhaus.org", "bl.example.net"])
        XCTAssertEqual(zones[0].delistURL, "https://check.spamhaus.org/")
        XCTAssertFalse(zones[0].codes.isEmpty)
        XCTAssertEqual(zones[1].delistURL, "https://bl.example.net/remove")
        XCTAssertThrowsError(try DNSBLZone.parse("not a zone"))
        XCTAssertThrowsError(try DNSBLZone.parse("localhost"))
    }

    func testAZoneThatTimesOutIsAFailedCheckNeverClean() async throws {
        // A DNS server that never answers: a bound UDP socket on loopback nobody reads.
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        XCTAssertTrue(bound)
        var c = DNSResolverConfiguration(servers: [.init(host: "127.0.0.1", port: Int(UInt16(bigEndian: address.sin_port)))])
        c.timeout = .milliseconds(200)
        c.attempts = 1
        let resolver = try DNSResolver(configuration: c, cache: nil, logger: Logger(label: "t"))
        let result = await DNSBLChecker(resolver: resolver).check("127.0.0.2", in: DNSBLZone(zone: "dnsbl.test"))
        guard case .failed(let why) = result else { return XCTFail("a silent zone is no verdict: \(result)") }
        XCTAssertTrue(why.contains("timeout"), why)
    }

    let berlin = try! DailySchedule(at: "05:00", zone: "Europe/Berlin")

    func utc(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }

    func testDailyRunAtLocalTimeAcrossDaylightSaving() throws {
        // Winter (UTC+1), the spring-forward day (29 March 2026, 02:00 → 03:00), summer (UTC+2),
        // the fall-back day (25 October 2026, 03:00 → 02:00), winter again.
        XCTAssertEqual(berlin.next(after: utc("2026-03-27T12:00:00Z")), utc("2026-03-28T04:00:00Z"))
        XCTAssertEqual(berlin.next(after: utc("2026-03-28T04:00:00Z")), utc("2026-03-29T03:00:00Z"))
        XCTAssertEqual(berlin.next(after: utc("2026-03-29T03:00:00Z")), utc("2026-03-30T03:00:00Z"))
        XCTAssertEqual(berlin.next(after: utc("2026-10-24T03:00:00Z")), utc("2026-10-25T04:00:00Z"))
        XCTAssertEqual(berlin.next(after: utc("2026-10-25T04:00:00Z")), utc("2026-10-26T04:00:00Z"))
        XCTAssertEqual(berlin.localDay(utc("2026-10-25T22:30:00Z")), "2026-10-25")
        XCTAssertEqual(berlin.localDay(utc("2026-10-25T23:30:00Z")), "2026-10-26")
    }

    func testTimesInsideTheGapAndTheOverlap() throws {
        let gap = try DailySchedule(at: "02:30", zone: "Europe/Berlin")
        // 02:30 does not exist on 29 March: the first instant after the gap, 03:00 CEST = 01:00Z.
        XCTAssertEqual(gap.run(onDayOf: utc("2026-03-29T10:00:00Z")), utc("2026-03-29T01:00:00Z"))
        XCTAssertEqual(gap.run(onDayOf: utc("2026-03-30T10:00:00Z")), utc("2026-03-30T00:30:00Z"))
        // 02:30 exists twice on 25 October: once, at the first (CEST, 00:30Z).
        XCTAssertEqual(gap.run(onDayOf: utc("2026-10-25T10:00:00Z")), utc("2026-10-25T00:30:00Z"))
        XCTAssertEqual(gap.next(after: utc("2026-10-25T00:30:00Z")), utc("2026-10-26T01:30:00Z"), "not again at the second 02:30")
    }

    func testScheduleErrorsNameTheProblem() {
        XCTAssertThrowsError(try DailySchedule(at: "25:00", zone: "Europe/Berlin"))
        XCTAssertThrowsError(try DailySchedule(at: "5", zone: "Europe/Berlin"))
        XCTAssertThrowsError(try DailySchedule(at: "05:00", zone: "Mars/Olympus")) { error in
            XCTAssertTrue("\(error)".contains("time zone"))
        }
    }
}
