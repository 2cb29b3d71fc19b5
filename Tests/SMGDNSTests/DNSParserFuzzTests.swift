import XCTest
import SMGDNS

/// Property test: the parser turns every input into a message or a DNSError — never a trap,
/// never a hang — and whatever it accepts re-encodes and re-parses to the same message.
final class DNSParserFuzzTests: XCTestCase {
    /// Deterministic PRNG (SplitMix64) so a failure can be replayed from the seed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func seeds() throws -> [[UInt8]] {
        let zone = try DNSName("example.test")
        let mx1 = try zone.prepending("mx1"), mx2 = try zone.prepending("mx2")
        var f = DNSHeaderFlags(rawValue: 0x8180)
        f.authenticData = true
        let q = DNSQuestion(name: zone, type: .mx)
        let mx = DNSMessage(id: 1, flags: f, questions: [q], answers: [
            DNSRecord(name: zone, type: .mx, ttl: 300, data: .mx(DNSMXData(preference: 10, exchange: mx1))),
            DNSRecord(name: zone, type: .mx, ttl: 300, data: .mx(DNSMXData(preference: 20, exchange: mx2))),
            DNSRecord(name: zone, type: .rrsig, ttl: 300, data: .unknown(Array(repeating: 7, count: 90))),
        ], additionals: [aRecord(mx1, DNSIPv4Address(127, 0, 0, 1)),
                         DNSRecord(name: mx2, type: .aaaa, ttl: 300, data: .aaaa(DNSIPv6Address("::1")!))],
        edns: DNSEDNS())
        let tname = try mx1.prepending("_25", "_tcp")
        let tlsa = DNSMessage(id: 2, flags: f, questions: [DNSQuestion(name: tname, type: .tlsa)], answers: [
            DNSRecord(name: tname, type: .tlsa, ttl: 300, data: .tlsa(DNSTLSAData(usage: 3, selector: 1, matchingType: 1, data: Array(0..<32)))),
        ], edns: DNSEDNS())
        let cname = DNSMessage(id: 3, flags: f, questions: [DNSQuestion(name: try zone.prepending("www"), type: .a)], answers: [
            DNSRecord(name: try zone.prepending("www"), type: .cname, ttl: 60, data: .cname(try zone.prepending("alias"))),
            DNSRecord(name: try zone.prepending("alias"), type: .cname, ttl: 60, data: .cname(mx1)),
            aRecord(mx1, DNSIPv4Address(127, 0, 0, 1)),
        ])
        var nf = f; nf.rcodeLow = 3
        let nx = DNSMessage(id: 4, flags: nf, questions: [DNSQuestion(name: try zone.prepending("nope"), type: .a)],
                            authorities: [soaRecord(zone, ttl: 300, minimum: 60)], edns: DNSEDNS())
        let txt = DNSMessage(id: 5, flags: f, questions: [DNSQuestion(name: zone, type: .txt)], answers: [
            DNSRecord(name: zone, type: .txt, ttl: 60, data: .txt(DNSTXTData(["v=spf1 ip4:127.0.0.1 -all", "x"]))),
            DNSRecord(name: try DNSReverseName.name(for: "127.0.0.1"), type: .ptr, ttl: 60, data: .ptr(mx1)),
        ])
        return try [mx, tlsa, cname, nx, txt].map { try DNSMessageEncoder.encode($0) }
    }

    func testParserSurvivesMutatedAndRandomInput() throws {
        let seeds = try Self.seeds()
        for s in seeds { XCTAssertNoThrow(try DNSMessageParser.parse(s)) }
        // SMG_DNS_FUZZ_ITERATIONS overrides the count for longer runs (at least 200 000 always).
        let iterations = max(220_000, Int(ProcessInfo.processInfo.environment["SMG_DNS_FUZZ_ITERATIONS"] ?? "") ?? 0)
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SplitMix(state: seed)
        var accepted = 0, rejected = 0
        var worst: Duration = .zero
        let clock = ContinuousClock()
        let start = clock.now
        for i in 0..<iterations {
            var b = seeds[Int(rng.next() % UInt64(seeds.count))]
            switch i % 9 {
            case 0: // bit flips
                for _ in 0..<(1 + Int(rng.next() % 8)) {
                    let p = Int(rng.next() % UInt64(b.count)); b[p] ^= UInt8(1 << (rng.next() % 8))
                }
            case 1: // truncation
                b = Array(b.prefix(Int(rng.next() % UInt64(b.count + 1))))
            case 2: // compression pointer edits (backward, forward, self, out of range)
                for _ in 0..<(1 + Int(rng.next() % 3)) where b.count > 14 {
                    let p = 12 + Int(rng.next() % UInt64(b.count - 13))
                    b[p] = 0xC0 | UInt8(rng.next() % 2)
                    b[p + 1] = UInt8(truncatingIfNeeded: rng.next())
                }
            case 3: // counts
                let p = 4 + Int(rng.next() % 8); b[p] = UInt8(truncatingIfNeeded: rng.next())
            case 4: // label length bytes: > 63, extended types
                let p = 12 + Int(rng.next() % UInt64(b.count - 12)); b[p] = UInt8(0x3F + rng.next() % 0xC1)
            case 5: // insert / delete runs
                let p = Int(rng.next() % UInt64(b.count))
                if rng.next() % 2 == 0 {
                    b.insert(contentsOf: (0..<(1 + rng.next() % 16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: p)
                } else {
                    b.removeSubrange(p..<min(b.count, p + 1 + Int(rng.next() % 16)))
                }
            case 6: // splice two messages
                let o = seeds[Int(rng.next() % UInt64(seeds.count))]
                b = Array(b.prefix(Int(rng.next() % UInt64(b.count)))) + Array(o.suffix(Int(rng.next() % UInt64(o.count))))
            case 7: // RDLENGTH-ish 16-bit edits
                if b.count > 2 { let p = Int(rng.next() % UInt64(b.count - 1)); b[p] = 0; b[p + 1] = UInt8(truncatingIfNeeded: rng.next()) }
            default: // pure random, random length, valid-looking header
                b = (0..<Int(rng.next() % 600)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                if b.count >= 12 && rng.next() % 2 == 0 { b[4] = 0; b[5] = 1; b[6] = 0; b[7] = UInt8(rng.next() % 4) }
            }
            let t0 = clock.now
            do {
                let m = try DNSMessageParser.parse(b, allowTruncatedSections: i % 2 == 0)
                accepted += 1
                // Property: what we accept re-encodes to something that parses back identically.
                if let again = try? DNSMessageEncoder.encode(m) {
                    XCTAssertEqual(try DNSMessageParser.parse(again, allowTruncatedSections: true), m, "seed \(seed) iteration \(i)")
                }
            } catch is DNSError {
                rejected += 1
            } catch {
                XCTFail("non-DNSError \(error) seed \(seed) iteration \(i)")
            }
            worst = max(worst, clock.now - t0)
        }
        let total = clock.now - start
        print("fuzz: seed \(seed), \(iterations) inputs, \(accepted) accepted, \(rejected) rejected, worst \(worst), total \(total)")
        XCTAssertEqual(accepted + rejected, iterations)
        XCTAssertGreaterThan(rejected, iterations / 4, "mutations really produced invalid input")
        XCTAssertGreaterThan(accepted, 1000, "mutations also produced valid input")
        XCTAssertLessThan(worst, .milliseconds(250), "one parse took too long (a hang or super-linear case; normal is < 1 ms)")
        XCTAssertLessThan(total, .seconds(240 * max(1, iterations / 220_000)))
    }

    /// Worst-case inputs for time: long pointer chains and many small records.
    func testAdversarialInputsAreFast() throws {
        // A chain of 127 backward pointers... each name points at the previous one.
        var b: [UInt8] = [0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 0, 0, 1, 0, 1]
        var prev = 12
        var rrs = 0
        while b.count < 65000 {
            let here = b.count
            b += [1, 0x62, 0xC0 | UInt8(prev >> 8), UInt8(prev & 0xFF), 0, 1, 0, 1, 0, 0, 0, 1, 0, 0]
            prev = here
            rrs += 1
        }
        b[6] = UInt8(min(rrs, 0xFFFF) >> 8); b[7] = UInt8(min(rrs, 0xFFFF) & 0xFF)
        let clock = ContinuousClock()
        let t = clock.measure { _ = try? DNSMessageParser.parse(b) }
        XCTAssertLessThan(t, .seconds(2))
        XCTAssertThrowsError(try DNSMessageParser.parse(b)) // names grow past 255 octets
    }
}
