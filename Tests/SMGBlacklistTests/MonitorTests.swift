import XCTest
import Logging
import SMGCore
import SMGDNS
import SMGRedis
import SMGStore
import SMGTestSupport
import SMGTestSupportDNS
@testable import SMGBlacklist

/// A whole run against the real DNS fixture (a fake blocklist that lists 127.0.0.2 and 2001:db8::25,
/// one that answers the "refused" code for everything, one whose lookups fail) and a real Redis.
final class MonitorTests: XCTestCase {
    nonisolated(unsafe) static var dns: DNSTestFixture?
    nonisolated(unsafe) static var dnsError = ""
    var server: RedisServerFixture!
    var redis: RedisClient!
    let keys = Keyspace()

    override class func setUp() {
        super.setUp()
        let listing = """
            $ORIGIN dnsbl.test.
            $TTL 60
            @ SOA ns1 hostmaster 1 3600 900 604800 60
            @ NS ns1
            ns1 A 127.0.0.1
            2.0.0.127 A 127.0.0.2
            2.0.0.127 TXT "Listed for spam trap hits, see https://dnsbl.test/lookup?ip=127.0.0.2"
            5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2 A 127.0.0.4
            """
        let refusing = """
            $ORIGIN refusing.test.
            $TTL 60
            @ SOA ns1 hostmaster 1 3600 900 604800 60
            @ NS ns1
            ns1 A 127.0.0.1
            * A 127.255.255.254
            """
        do {
            dns = try DNSTestFixture.start(extraZones: [.init(name: "dnsbl.test", mode: .unsigned, contents: listing),
                                                        .init(name: "refusing.test", mode: .unsigned, contents: refusing)])
        } catch { dnsError = "\(error)" }
    }

    override class func tearDown() {
        dns?.stop()
        super.tearDown()
    }

    override func setUp() async throws {
        server = try RedisServerFixture()
        redis = RedisClient(endpoint: server.endpoint, poolSize: 4, timeout: .seconds(2), logger: Logger(label: "t"))
    }

    override func tearDown() async throws {
        redis?.close()
        server?.kill()
    }

    func monitor(zones: [DNSBLZone], extra: [(lane: String, address: String)], notify: String? = "ops@gateway.test") throws -> BlacklistMonitor {
        let fx = try XCTUnwrap(Self.dns, "DNS fixture: \(Self.dnsError)")
        var c = DNSResolverConfiguration(servers: [try .init(parsing: fx.resolverAddress)])
        c.timeout = .seconds(2)
        let resolver = try DNSResolver(configuration: c, cache: nil, logger: Logger(label: "dns"))
        return BlacklistMonitor(checker: DNSBLChecker(resolver: resolver), zones: zones, store: MessageStore(redis: redis, keys: keys),
                                extra: extra, notify: notify, ownDomain: "gateway.test", site: "s1", instance: "m1",
                                logger: Logger(label: "m"))
    }

    func testAListingIsRecordedDrainedAndNotifiedARefusalAndAFailureAreErrors() async throws {
        let pools = SourcePoolStore(redis: redis, keys: keys)
        try await pools.announce(lane: "good", addresses: [(address: "127.0.0.2", helo: "good-a.test"),
                                                           (address: "127.0.0.4", helo: "good-b.test")])
        try await pools.announce(lane: "bad", addresses: [(address: "2001:db8::25", helo: "bad-a.test")])
        let m = try monitor(zones: [DNSBLZone(zone: "dnsbl.test", delistURL: "https://dnsbl.test/remove"),
                                    DNSBLZone(zone: "refusing.test"), DNSBLZone(zone: "unserved-zone.example")], extra: [])
        let report = try await m.run(kind: "daily")
        XCTAssertEqual(report.results.count, 9)
        XCTAssertEqual(Set(report.listed.map(\.address)), ["127.0.0.2", "2001:db8::25"])
        let good = try XCTUnwrap(report.listed.first { $0.address == "127.0.0.2" })
        XCTAssertEqual(good.state, .open)
        XCTAssertEqual(good.text, "Listed for spam trap hits, see https://dnsbl.test/lookup?ip=127.0.0.2")
        XCTAssertTrue(good.instructions.contains("https://dnsbl.test/remove"))
        XCTAssertEqual(report.failures, 6, "refusing.test and unserved-zone.example fail for all three addresses, never 'listed' or 'clean'")
        let drained = try await pools.drained()
        XCTAssertEqual(drained["127.0.0.2"]?.by, BlacklistMonitor.drainer)
        XCTAssertNil(drained["2001:db8::25"], "a listed bad address keeps sending")
        XCTAssertNil(drained["127.0.0.4"])
        XCTAssertFalse(report.allGoodListed)
        let types = report.events.map(\.type)
        XCTAssertEqual(types.filter { $0 == EventType.blacklistListed }.count, 2)
        XCTAssertEqual(types.filter { $0 == EventType.blacklistCheckFailed }.count, 6)
        XCTAssertEqual(types.filter { $0 == EventType.blacklistDrained }.count, 1)
        // The notice waits in mail.accepted, from the null sender to the operators.
        let pending = try await redis.command(["ZRANGE", .init(keys.pending(Topic.accepted)), "0", "-1"]).array ?? []
        XCTAssertEqual(pending.count, 1)
        let id = try XCTUnwrap(pending.first?.string.flatMap(MessageID.init))
        let notice = try await MessageStore(redis: redis, keys: keys).load(id)
        XCTAssertEqual(notice?.envelope.recipients.map(\.address), ["ops@gateway.test"])
        let body = String(decoding: notice?.body ?? [], as: UTF8.self)
        XCTAssertTrue(body.contains("127.0.0.2 (good pool) on dnsbl.test") && body.contains("drained"), body)

        // The next run finds the same: nothing new, no second notice.
        let again = try await m.run(kind: "recheck", only: ["127.0.0.2"])
        XCTAssertTrue(again.listed.isEmpty && again.cleared.isEmpty)
        let pendingAfter = try await redis.command(["ZCARD", .init(keys.pending(Topic.accepted))]).int
        XCTAssertEqual(pendingAfter, 1)
    }

    func testAClearedListingIsUndrainedOnlyWhenTheMonitorDrainedIt() async throws {
        let pools = SourcePoolStore(redis: redis, keys: keys)
        let store = ListingStore(redis: redis, keys: keys)
        for address in ["127.0.0.8", "127.0.0.9"] {
            try await store.save(Listing(address: address, lane: "good", zone: "dnsbl.test", code: "127.0.0.2", meaning: "listed",
                                         text: nil, delistURL: "", state: .requested, since: 1, checked: 1))
        }
        try await pools.drain("127.0.0.8", reason: "listed", by: BlacklistMonitor.drainer)
        try await pools.drain("127.0.0.9", reason: "maintenance", by: "alice")
        let m = try monitor(zones: [DNSBLZone(zone: "dnsbl.test")], extra: [(lane: "good", address: "127.0.0.8"),
                                                                           (lane: "good", address: "127.0.0.9")])
        let report = try await m.run(kind: "recheck", only: ["127.0.0.8", "127.0.0.9"])
        XCTAssertEqual(Set(report.cleared.map(\.address)), ["127.0.0.8", "127.0.0.9"])
        let drained = try await pools.drained()
        XCTAssertNil(drained["127.0.0.8"], "the monitor's drain is lifted")
        XCTAssertEqual(drained["127.0.0.9"]?.by, "alice", "an operator's drain stays")
        let all = try await store.all()
        XCTAssertTrue(all.allSatisfy { $0.state == .cleared && $0.clearedAt != nil })
        XCTAssertEqual(report.events.filter { $0.type == EventType.blacklistCleared }.count, 2)
        let pending = try await redis.command(["ZCARD", .init(keys.pending(Topic.accepted))]).int
        XCTAssertEqual(pending, 1, "one 'lifted' notice")
    }

    func testEveryGoodAddressListedRaisesTheAlarm() async throws {
        let m = try monitor(zones: [DNSBLZone(zone: "dnsbl.test")], extra: [(lane: "good", address: "127.0.0.2")], notify: nil)
        let report = try await m.run(kind: "daily")
        XCTAssertTrue(report.allGoodListed)
        XCTAssertTrue(report.events.contains { $0.type == EventType.blacklistAllGoodListed })
    }

    func testOneRunAcrossInstancesAndALockThatOutlivesItsHolder() async throws {
        let a = BlacklistRunLock(redis: redis, keys: keys, ttl: .seconds(1))
        let b = BlacklistRunLock(redis: redis, keys: keys, ttl: .seconds(1))
        let counter = Counter()
        async let first = a.once("daily:2026-12-06", owner: "a") { await counter.bump(); try await Task.sleep(for: .milliseconds(300)); return 1 }
        try await Task.sleep(for: .milliseconds(50))
        let second = try await b.once("daily:2026-12-06", owner: "b") { await counter.bump(); return 2 }
        let firstValue = try await first
        XCTAssertEqual(firstValue, 1)
        XCTAssertNil(second, "the lock is held")
        let third = try await b.once("daily:2026-12-06", owner: "b") { await counter.bump(); return 3 }
        XCTAssertNil(third, "the run is done")
        let runs = await counter.value
        XCTAssertEqual(runs, 1)
        // A holder that died: its lock expires and another instance runs.
        _ = try await redis.command(["SET", .init(keys.blacklistLock), "dead-holder", "PX", "500"])
        let blocked = try await b.once("daily:2026-12-07", owner: "b") { 4 }
        XCTAssertNil(blocked)
        try await Task.sleep(for: .milliseconds(700))
        let taken = try await b.once("daily:2026-12-07", owner: "b") { 5 }
        XCTAssertEqual(taken, 5)
    }

    func testTheLastRunOfEachKindIsSharedThroughRedis() async throws {
        let store = ListingStore(redis: redis, keys: keys)
        let none = try await store.lastRuns()
        XCTAssertEqual(none, [:])
        try await store.recordRun(kind: "daily", now: Date(timeIntervalSince1970: 1_800_000_000))
        try await store.recordRun(kind: "recheck", now: Date(timeIntervalSince1970: 1_800_000_100))
        try await store.recordRun(kind: "daily", now: Date(timeIntervalSince1970: 1_800_086_400))
        // Another instance (another client) sees what this one recorded.
        let other = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .seconds(2), logger: Logger(label: "o"))
        defer { other.close() }
        let runs = try await ListingStore(redis: other, keys: keys).lastRuns()
        XCTAssertEqual(runs, ["daily": 1_800_086_400, "recheck": 1_800_000_100])
    }

    actor Counter {
        var value = 0
        func bump() { value += 1 }
    }
}
