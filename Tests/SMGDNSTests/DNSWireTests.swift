import XCTest
import SMGDNS

final class DNSWireTests: XCTestCase {
    func testNameParsingAndBounds() throws {
        XCTAssertEqual(try DNSName("Mx1.Example.TEST.").description, "Mx1.Example.TEST")
        XCTAssertEqual(try DNSName("mx1.example.test"), try DNSName("MX1.EXAMPLE.TEST."))
        XCTAssertEqual(Set([try DNSName("a.b"), try DNSName("A.B")]).count, 1)
        XCTAssertTrue(try DNSName(".").isRoot)
        XCTAssertThrowsError(try DNSName("")) { XCTAssertEqual(($0 as? DNSError)?.code, .invalidName) }
        XCTAssertThrowsError(try DNSName("a..b"))
        XCTAssertThrowsError(try DNSName(String(repeating: "x", count: 64) + ".test"))
        XCTAssertNoThrow(try DNSName(String(repeating: "x", count: 63) + ".test"))
        // 4 * (1 + 62) + 1 = 253 octets is fine; 256 is not.
        let l62 = String(repeating: "y", count: 62)
        XCTAssertNoThrow(try DNSName([l62, l62, l62, l62].joined(separator: ".")))
        XCTAssertThrowsError(try DNSName([l62, l62, l62, l62, "zz"].joined(separator: ".")))
        XCTAssertEqual(try DNSName("mx1.example.test").prepending("_25", "_tcp").description, "_25._tcp.mx1.example.test")
    }

    func testReverseNames() throws {
        XCTAssertEqual(try DNSReverseName.name(for: "192.0.2.1").description, "1.2.0.192.in-addr.arpa")
        XCTAssertEqual(try DNSReverseName.name(for: "2001:db8::1").description,
                       "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa")
        XCTAssertThrowsError(try DNSReverseName.name(for: "mail.example.test")) {
            XCTAssertEqual(($0 as? DNSError)?.code, .invalidAddress)
        }
    }

    /// Every record type survives encode → parse, with compression.
    func testRoundTripAllTypes() throws {
        let zone = try DNSName("example.test")
        let mx1 = try zone.prepending("mx1")
        let records: [DNSRecord] = [
            DNSRecord(name: zone, type: .a, ttl: 1, data: .a(DNSIPv4Address(127, 0, 0, 1))),
            DNSRecord(name: zone, type: .aaaa, ttl: 2, data: .aaaa(DNSIPv6Address("::1")!)),
            DNSRecord(name: zone, type: .mx, ttl: 3, data: .mx(DNSMXData(preference: 10, exchange: mx1))),
            DNSRecord(name: zone, type: .mx, ttl: 3, data: .mx(DNSMXData(preference: 0, exchange: .root))),
            DNSRecord(name: zone, type: .txt, ttl: 4, data: .txt(DNSTXTData(["v=spf1 -all", "", "second"]))),
            DNSRecord(name: try DNSReverseName.name(for: "127.0.0.1"), type: .ptr, ttl: 5, data: .ptr(mx1)),
            DNSRecord(name: try mx1.prepending("_25", "_tcp"), type: .tlsa, ttl: 6,
                      data: .tlsa(DNSTLSAData(usage: 3, selector: 1, matchingType: 1, data: Array(0..<32)))),
            DNSRecord(name: try zone.prepending("www"), type: .cname, ttl: 7, data: .cname(mx1)),
            DNSRecord(name: zone, type: .ns, ttl: 8, data: .ns(try zone.prepending("ns1"))),
            DNSRecord(name: zone, type: .rrsig, ttl: 9, data: .unknown([1, 2, 3, 4, 5])),
        ]
        var f = DNSHeaderFlags(rawValue: 0)
        f.isResponse = true; f.authenticData = true; f.rcodeLow = 3
        let msg = DNSMessage(id: 0xBEEF, flags: f, questions: [DNSQuestion(name: zone, type: .mx)],
                             answers: records, authorities: [soaRecord(zone, ttl: 300, minimum: 60)],
                             additionals: [aRecord(mx1, DNSIPv4Address(127, 0, 0, 2))],
                             edns: DNSEDNS(udpPayloadSize: 1232, extendedRCode: 1, dnssecOK: true))
        let wire = try DNSMessageEncoder.encode(msg)
        let uncompressed = try DNSMessageEncoder.encode(msg, compress: false)
        XCTAssertLessThan(wire.count, uncompressed.count, "compression used")
        let parsed = try DNSMessageParser.parse(wire)
        XCTAssertEqual(parsed, msg)
        XCTAssertEqual(try DNSMessageParser.parse(uncompressed), msg)
        XCTAssertEqual(parsed.responseCode.rawValue, 0x13)
        XCTAssertTrue(parsed.flags.authenticData)
        XCTAssertEqual(parsed.edns?.dnssecOK, true)
        if case .mx(let m) = parsed.answers[3].data { XCTAssertTrue(m.isNullMX) } else { XCTFail() }
        if case .txt(let t) = parsed.answers[4].data { XCTAssertEqual(t.joined, "v=spf1 -allsecond") } else { XCTFail() }
        if case .tlsa(let t) = parsed.answers[6].data { XCTAssertEqual(t.hexData.prefix(6), "000102") } else { XCTFail() }
    }

    func testQueryHasEDNSWithDOAndAD() throws {
        let q = try DNSMessageEncoder.encode(.query(id: 7, name: n("example.test"), type: .tlsa))
        let p = try DNSMessageParser.parse(q)
        XCTAssertEqual(p.edns?.udpPayloadSize, 1232)
        XCTAssertEqual(p.edns?.dnssecOK, true)
        XCTAssertTrue(p.flags.recursionDesired)
        XCTAssertTrue(p.flags.authenticData)
        XCTAssertFalse(p.flags.isResponse)
    }

    /// Table of hostile inputs, each with the exact error it must produce.
    func testHostileMessagesTable() {
        let header: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]
        let q: [UInt8] = [3, 0x77, 0x77, 0x77, 0, 0, 1, 0, 1]    // www. A IN at offset 12
        func rr(_ name: [UInt8], type: UInt16 = 1, rdata: [UInt8]) -> [UInt8] {
            name + [UInt8(type >> 8), UInt8(type & 0xFF), 0, 1, 0, 0, 0, 60, UInt8(rdata.count >> 8), UInt8(rdata.count & 0xFF)] + rdata
        }
        let longName: [UInt8] = Array((0..<5).map { _ in [UInt8(60)] + [UInt8](repeating: 0x61, count: 60) }.joined()) + [0]
        let cases: [(String, [UInt8], DNSError.Code)] = [
            ("empty", [], .truncated),
            ("short header", [0x12, 0x34, 0x81], .truncated),
            ("compression loop (self)", header + q + rr([0xC0, 21], rdata: [1, 2, 3, 4]), .pointerNotBackward),
            ("pointer forward", header + [0xC0, 14, 0, 1, 0, 1] + rr([0], rdata: [1, 2, 3, 4]), .pointerNotBackward),
            ("pointer out of range", header + q + rr([0xFF, 0xFF], rdata: [1, 2, 3, 4]), .pointerOutOfRange),
            ("two-pointer loop", header + [0xC0, 12 + 2, 0xC0, 12, 0, 1, 0, 1] + rr([0], rdata: [1, 2, 3, 4]), .pointerNotBackward),
            ("label 64", header + [64] + [UInt8](repeating: 0x61, count: 64) + [0, 0, 1, 0, 1] + rr([0], rdata: [1, 2, 3, 4]), .badLabel),
            ("extended label type 0x80", header + [0x80, 0, 0, 1, 0, 1] + rr([0], rdata: [1, 2, 3, 4]), .badLabel),
            ("name > 255", header + longName + [0, 1, 0, 1] + rr([0], rdata: [1, 2, 3, 4]), .nameTooLong),
            ("truncated record", header + q + [0xC0, 12, 0, 1, 0, 1, 0, 0], .truncated),
            ("rdlength beyond end", header + q + rr([0xC0, 12], rdata: [1, 2, 3, 4]).dropLast(2), .truncated),
            ("A with 5 octets", header + q + rr([0xC0, 12], rdata: [1, 2, 3, 4, 5]), .badRData),
            ("TXT string overruns", header + q + rr([0xC0, 12], type: 16, rdata: [9, 0x61]), .badRData),
            ("MX name overruns rdlength", header + q + rr([0xC0, 12], type: 15, rdata: [0, 10, 3, 0x61, 0x61, 0x61, 0, 0]), .badRData),
            ("TLSA too short", header + q + rr([0xC0, 12], type: 52, rdata: [3, 1]), .badRData),
            ("oversized counts", [0x12, 0x34, 0x81, 0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] + q, .badCounts),
            ("answer count too large", [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 9, 0, 0, 0, 0] + q + rr([0xC0, 12], rdata: [1, 2, 3, 4]), .badCounts),
            ("trailing bytes", header + q + rr([0xC0, 12], rdata: [1, 2, 3, 4]) + [0], .trailingBytes),
            ("too large", [UInt8](repeating: 0, count: 65536), .messageTooLarge),
        ]
        for (label, bytes, code) in cases {
            XCTAssertThrowsError(try DNSMessageParser.parse(bytes), label) { error in
                XCTAssertEqual((error as? DNSError)?.code, code, label)
            }
        }
        // And the well-formed base message parses.
        XCTAssertNoThrow(try DNSMessageParser.parse(header + q + rr([0xC0, 12], rdata: [127, 0, 0, 1])))
    }

    func testTruncatedSectionsTolerratedOnlyWithTC() throws {
        var f = DNSHeaderFlags(rawValue: 0x8180)
        f.truncated = true
        let msg = DNSMessage(id: 1, flags: f, questions: [DNSQuestion(name: n("big.example.test"), type: .txt)],
                             answers: (0..<5).map { DNSRecord(name: n("big.example.test"), type: .txt, ttl: 1, data: .txt(DNSTXTData(["x\($0)"]))) })
        let wire = try DNSMessageEncoder.encode(msg)
        let cut = Array(wire.prefix(wire.count - 10))
        XCTAssertThrowsError(try DNSMessageParser.parse(cut))
        let p = try DNSMessageParser.parse(cut, allowTruncatedSections: true)
        XCTAssertTrue(p.flags.truncated)
        XCTAssertEqual(p.questions.first?.name, n("big.example.test"))
        XCTAssertLessThan(p.answers.count, 5)
    }

    func testResolvConfAndServerParsing() throws {
        let c = try DNSResolverConfiguration.parseResolvConf("""
            # comment
            search example.test
            nameserver 127.0.0.1
            nameserver ::1 ; v6
            nameserver not-an-ip
            options timeout:3 attempts:4 use-vc trust-ad
            """)
        XCTAssertEqual(c.servers.map(\.host), ["127.0.0.1", "::1"])
        XCTAssertTrue(c.servers.allSatisfy(\.trusted))
        XCTAssertEqual(c.timeout, .seconds(3))
        XCTAssertEqual(c.attempts, 4)
        XCTAssertEqual(c.transport, .tcpOnly)
        let d = try DNSResolverConfiguration.parseResolvConf("nameserver 10.0.0.1\n")
        XCTAssertFalse(d.servers[0].trusted, "AD is not trusted without trust-ad")
        XCTAssertEqual(try DNSResolverConfiguration.parseResolvConf("").servers.map(\.host), ["127.0.0.1"])

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("resolv-\(UInt32.random(in: 0...UInt32.max)).conf").path
        try "nameserver 127.0.0.1\noptions trust-ad\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fromFile = try DNSResolverConfiguration.fromResolvConf(path: path)
        XCTAssertEqual(fromFile.servers, [.init(host: "127.0.0.1", port: 53, trusted: true)])
        XCTAssertThrowsError(try DNSResolverConfiguration.fromResolvConf(path: path + ".missing"))

        let s = try DNSResolverConfiguration.Server(parsing: "127.0.0.1:5353", trusted: true)
        XCTAssertEqual(s.port, 5353); XCTAssertTrue(s.trusted)
        XCTAssertEqual(try DNSResolverConfiguration.Server(parsing: "[::1]:53").host, "::1")
        XCTAssertEqual(try DNSResolverConfiguration.Server(parsing: "::1").port, 53)
        XCTAssertThrowsError(try DNSResolverConfiguration.Server(parsing: "dns.example.test:53"))
        XCTAssertThrowsError(try DNSResolverConfiguration.Server(parsing: "127.0.0.1:99999"))
        var bad = DNSResolverConfiguration(servers: [])
        XCTAssertThrowsError(try bad.validate())
        bad.servers = [s]; bad.attempts = 0
        XCTAssertThrowsError(try bad.validate())
    }
}
