// smg-dns-bench: parser throughput and cached-lookup cost of SMGDNS.
// Run: swift run -c release smg-dns-bench [iterations]
import Logging
import SMGDNS

#if canImport(Glibc)
import Glibc
#endif

func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

let iterations = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 200_000 : 200_000

func response(question: DNSQuestion, answers: [DNSRecord], additionals: [DNSRecord] = []) throws -> [UInt8] {
    var f = DNSHeaderFlags(rawValue: 0x8180)
    f.authenticData = true
    return try DNSMessageEncoder.encode(DNSMessage(id: 0x4242, flags: f, questions: [question], answers: answers,
                                                   additionals: additionals, edns: DNSEDNS(udpPayloadSize: 1232, dnssecOK: true)))
}

let zone = try DNSName("example.com")
let mx1 = try zone.prepending("mx1"), mx2 = try zone.prepending("mx2")
let rrsig = DNSRecord(name: zone, type: .rrsig, ttl: 300, data: .unknown(Array(repeating: 0xAB, count: 98)))
// Realistic MX answer: 2 MX + RRSIG, glue A/AAAA for both exchangers, OPT.
let mxWire = try response(
    question: DNSQuestion(name: zone, type: .mx),
    answers: [DNSRecord(name: zone, type: .mx, ttl: 300, data: .mx(DNSMXData(preference: 10, exchange: mx1))),
              DNSRecord(name: zone, type: .mx, ttl: 300, data: .mx(DNSMXData(preference: 20, exchange: mx2))),
              rrsig],
    additionals: [DNSRecord(name: mx1, type: .a, ttl: 300, data: .a(DNSIPv4Address(192, 0, 2, 10))),
                  DNSRecord(name: mx1, type: .aaaa, ttl: 300, data: .aaaa(DNSIPv6Address("2001:db8::10")!)),
                  DNSRecord(name: mx2, type: .a, ttl: 300, data: .a(DNSIPv4Address(192, 0, 2, 20))),
                  DNSRecord(name: mx2, type: .aaaa, ttl: 300, data: .aaaa(DNSIPv6Address("2001:db8::20")!))])
// TLSA answer: one 3 1 1 record + RRSIG.
let tlsaName = try mx1.prepending("_25", "_tcp")
let tlsaWire = try response(
    question: DNSQuestion(name: tlsaName, type: .tlsa),
    answers: [DNSRecord(name: tlsaName, type: .tlsa, ttl: 300,
                        data: .tlsa(DNSTLSAData(usage: 3, selector: 1, matchingType: 1, data: Array(0..<32)))),
              DNSRecord(name: tlsaName, type: .rrsig, ttl: 300, data: .unknown(Array(repeating: 0xCD, count: 98)))])

func benchParse(_ label: String, _ wire: [UInt8]) throws {
    var sink = 0
    for _ in 0..<1000 { sink &+= try DNSMessageParser.parse(wire).answers.count }   // warm-up
    let t0 = now()
    for _ in 0..<iterations { sink &+= try DNSMessageParser.parse(wire).answers.count }
    let ns = Double(now() - t0) / Double(iterations)
    print("parse \(label) (\(wire.count) octets): \(Int(1e9 / ns)) responses/s, \(Int(ns)) ns/response [sink \(sink % 7)]")
}

try benchParse("MX answer", mxWire)
try benchParse("TLSA answer", tlsaWire)

// Cached lookup: the resolver's server (127.0.0.1:9) is never contacted, every lookup is a hit.
let cache = DNSCache(maximumEntries: 10_000)
let mxRecords = try DNSMessageParser.parse(mxWire).answers.filter { $0.type == .mx }
let key = DNSCache.Key(name: zone, type: .mx)
await cache.store(key, .answer(mxRecords, authenticated: false, ttl: 300), ttl: 300)
let logger = Logger(label: "smg-dns-bench", factory: { _ in SwiftLogNoOpLogHandler() })
var config = DNSResolverConfiguration(servers: [.init(host: "127.0.0.1", port: 9)])
config.timeout = .milliseconds(50)
config.attempts = 1
let resolver = try DNSResolver(configuration: config, cache: cache, logger: logger)

// Measured off the main actor, as services call it (from the cooperative pool): a
// main-actor caller would pay two thread hops per await instead.
func benchCached() async throws {
    var hits = 0
    for _ in 0..<1000 { if case .answer = await resolver.lookup(zone, .mx) { hits += 1 } }
    let lookups = iterations * 5
    var t0 = now()
    for _ in 0..<lookups { if case .answer = await resolver.lookup(zone, .mx) { hits += 1 } }
    var ns = Double(now() - t0) / Double(lookups)
    print("cached lookup DNSResolver.lookup(_:_:): \(Int(ns)) ns/lookup (\(Int(1e9 / ns)) lookups/s)")

    t0 = now()
    for _ in 0..<lookups { if await cache.lookup(key) != nil { hits += 1 } }
    ns = Double(now() - t0) / Double(lookups)
    print("cached lookup DNSCache.lookup (actor only): \(Int(ns)) ns/lookup")

    t0 = now()
    for _ in 0..<lookups { if case .answer = try await resolver.mx("example.com") { hits += 1 } }
    ns = Double(now() - t0) / Double(lookups)
    print("cached lookup DNSResolver.mx(\"example.com\") (name parse + sort): \(Int(ns)) ns/lookup")
    precondition(hits == 1000 + 3 * lookups, "every lookup must be a cache hit")
}
try await Task.detached { try await benchCached() }.value
