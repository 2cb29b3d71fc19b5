import XCTest
import Foundation
import Logging
import SMGRedis
import SMGTestSupport
@testable import SMGAccounts

/// The compromised-account brake against a real Redis, with simulated time.
final class BrakeTests: XCTestCase {
    var server: RedisServerFixture!
    var redis: RedisClient!
    var brakes: BrakeStore!

    override func setUp() async throws {
        server = try RedisServerFixture()
        redis = RedisClient(endpoint: server.endpoint, poolSize: 4, timeout: .seconds(2), logger: Logger(label: "t"))
        brakes = BrakeStore(redis: redis)
    }

    override func tearDown() async throws {
        redis?.close()
        server?.kill()
    }

    let login = BrakeStore.loginSubject("Shop-Mailer")
    let day0 = Date(timeIntervalSince1970: Double(1_796_000_000 - 1_796_000_000 % 86400))  // a midnight UTC

    func send(_ n: Int, at start: Date, spread: TimeInterval = 3000, limits: BrakeLimits = BrakeLimits(),
              domains: (Int) -> Set<String> = { _ in ["partner.example"] }, bad: (Int) -> Bool = { _ in false })
        async throws -> [BrakeStore.Observation]
    {
        var out: [BrakeStore.Observation] = []
        for i in 0..<n {
            let at = start.addingTimeInterval(spread * Double(i) / Double(max(1, n)))
            out += try await brakes.observe(subjects: [(login, limits)], recipientDomains: domains(i), badVerdict: bad(i), now: at)
        }
        return out
    }

    func testANormalDailyPeakPassesAndATakeoverBurstBrakes() async throws {
        // A week of a shop's normal sending: a newsletter morning of 250 messages at 08:00, a trickle otherwise.
        for day in 1...7 {
            let morning = day0.addingTimeInterval(Double(day - 8) * 86400 + 8 * 3600)
            let seen = try await send(250, at: morning, domains: { i in ["d\(i % 40).example"] })
            XCTAssertTrue(seen.allSatisfy { $0 == .fine }, "day \(day): \(seen.filter { $0 != .fine }.prefix(1))")
            _ = try await send(20, at: morning.addingTimeInterval(5 * 3600))
        }
        // Today's peak is a bit higher than usual: still no brake (limit 5 × 250 = 1250).
        let today = day0.addingTimeInterval(8 * 3600)
        let peak = try await send(400, at: today, domains: { i in ["d\(i % 60).example"] })
        XCTAssertTrue(peak.allSatisfy { $0 == .fine })

        // The account is taken over at 14:00: 1,400 messages in under an hour to random domains.
        let burst = try await send(1400, at: day0.addingTimeInterval(14 * 3600), spread: 3000, domains: { i in ["r\(i).example"] })
        guard let trip = burst.firstIndex(where: { if case .tripped = $0 { return true }; return false }) else {
            return XCTFail("the burst did not trip the brake")
        }
        if case .tripped(let reason, let action) = burst[trip] {
            XCTAssertTrue(reason.contains("recipient domains") || reason.contains("messages this hour"), reason)
            XCTAssertEqual(action, .refuse)
        }
        XCTAssertTrue(burst[(trip + 1)...].allSatisfy { $0 == .braked(.refuse) }, "tripped once, braked after")
        let active = try await brakes.active([login, BrakeStore.customerSubject("shop")])
        XCTAssertEqual(active.map(\.subject), [login])
        let r1 = try await brakes.all()
        XCTAssertEqual(r1.map(\.subject), [login])

        let lifted = try await brakes.release(login, now: day0.addingTimeInterval(14 * 3600 + 3000))
        XCTAssertNotNil(lifted)
        let after = try await brakes.active([login])
        XCTAssertTrue(after.isEmpty)
        let again = try await brakes.release(login)
        XCTAssertNil(again)
    }

    func testMostlySpamVerdictsBrake() async throws {
        var limits = BrakeLimits()
        limits.action = .hold
        let seen = try await send(40, at: day0, limits: limits, bad: { $0 % 4 != 0 })
        guard let trip = seen.firstIndex(where: { if case .tripped = $0 { return true }; return false }) else {
            return XCTFail("no brake")
        }
        XCTAssertGreaterThanOrEqual(trip, 19, "not before brake.min_verdicts messages")
        if case .tripped(let reason, let action) = seen[trip] {
            XCTAssertTrue(reason.contains("classified spam or suspect"), reason)
            XCTAssertEqual(action, .hold)
        }
    }

    /// Listing prunes index entries whose brake is gone, but never one that tripped again after
    /// it was read as stale (the prune runs against the brake as it is then).
    func testListingPrunesGoneBrakesButNotOneTrippedMeanwhile() async throws {
        let gone = BrakeStore.loginSubject("gone"), again = BrakeStore.loginSubject("again")
        _ = try await redis.command("SADD", .init(brakes.brakeIndex), .init(gone), .init(again))
        let listed = try await brakes.all()
        XCTAssertEqual(listed.map(\.subject), [], "neither has a brake yet")
        let index = try await redis.command("SMEMBERS", .init(brakes.brakeIndex)).array ?? []
        XCTAssertEqual(index, [], "both pruned")

        // `again` is read as stale, then trips before the prune runs.
        _ = try await redis.command("SADD", .init(brakes.brakeIndex), .init(gone), .init(again))
        _ = try await redis.command("HSET", .init(brakes.brakeKey(again)), "reason", "burst", "since", "now", "action", "refuse")
        try await brakes.prune([gone, again])
        let left = (try await redis.command("SMEMBERS", .init(brakes.brakeIndex)).array ?? []).compactMap(\.string)
        XCTAssertEqual(left, [again], "a brake in force stays listed")
        let all = try await brakes.all()
        XCTAssertEqual(all.map(\.subject), [again])
    }

    func testBouncesBrake() async throws {
        _ = try await send(50, at: day0, spread: 100)
        try await brakes.recordBounces(subjects: [login], count: 29, now: day0.addingTimeInterval(200))
        let r2 = try await send(1, at: day0.addingTimeInterval(300))
        XCTAssertEqual(r2, [.fine])
        try await brakes.recordBounces(subjects: [login], count: 1, now: day0.addingTimeInterval(400))
        let seen = try await send(1, at: day0.addingTimeInterval(500))
        guard case .tripped(let reason, _) = seen.first else { return XCTFail("\(seen)") }
        XCTAssertTrue(reason.contains("bounced"), reason)
    }

    func testLimitsAreValidatedByName() {
        var l = BrakeLimits()
        l.badShare = 1.5
        XCTAssertThrowsError(try l.validate()) { XCTAssertTrue("\($0)".contains("brake.bad_share"), "\($0)") }
    }
}
