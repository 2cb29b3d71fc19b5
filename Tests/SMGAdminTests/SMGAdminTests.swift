import XCTest
import Foundation
import Logging
import SMGRedis
import SMGStore
import SMGAccounts
import SMGTestSupport
@testable import SMGAdmin

/// Operators, tokens, sessions and the login throttle of smg-admin, against a real Redis.
final class SMGAdminTests: XCTestCase {
    var server: RedisServerFixture!
    var redis: RedisClient!
    var operators: OperatorStore!
    let hasher = PasswordHasher(logN: 10)
    let keys = Keyspace()

    override func setUp() async throws {
        server = try RedisServerFixture()
        redis = RedisClient(endpoint: server.endpoint, poolSize: 2, timeout: .seconds(2), logger: Logger(label: "t"))
        operators = OperatorStore(redis: redis, keys: keys)
    }

    override func tearDown() async throws {
        redis?.close()
        server?.kill()
    }

    func testOperatorsHaveHashedPasswordsAndTokensAreStoredAsDigestsOnly() async throws {
        let (account, generated) = try await operators.add("Alice", role: .admin, password: nil, hasher: hasher)
        let password = try XCTUnwrap(generated)
        XCTAssertEqual(account.name, "alice")
        let verified = await hasher.verify(password, against: account.passwordHash)
        XCTAssertTrue(verified)
        do {
            _ = try await operators.add("alice", role: .viewer, password: nil, hasher: hasher)
            XCTFail("an operator was created twice")
        } catch let error as AdminError { XCTAssertEqual(error.field, "name") }
        do {
            _ = try await operators.add("bob", role: .viewer, password: "short", hasher: hasher)
            XCTFail("a short password was accepted")
        } catch let error as AdminError { XCTAssertEqual(error.field, "password") }

        let token = try await operators.makeToken(for: "alice", label: "ci")
        let stored = try await redis.command("HGETALL", .init(keys.adminTokens)).fieldPairs
        XCTAssertEqual(stored.count, 1)
        XCTAssertFalse(stored[0].field.contains(token) || (stored[0].value.string ?? "").contains(token))
        let principal = try await operators.principal(forToken: token)
        XCTAssertEqual(principal?.name, "alice")
        XCTAssertNil(principal?.csrf, "API tokens need no CSRF token")
        let wrong = try await operators.principal(forToken: "smg_" + String(repeating: "0", count: 64))
        XCTAssertNil(wrong)

        let alice = try await operators.get("alice")
        var disabled = try XCTUnwrap(alice)
        disabled.disabled = true
        try await operators.save(disabled)
        let refused = try await operators.principal(forToken: token)
        XCTAssertNil(refused, "a disabled operator's token stops working")
        let removed = try await operators.remove("alice")
        XCTAssertTrue(removed)
        let tokensLeft = try await operators.tokens()
        XCTAssertTrue(tokensLeft.isEmpty)
    }

    func testSessionsExpireWhenIdleAndAtTheirMaximumAndCarryACSRFToken() async throws {
        let (account, _) = try await operators.add("ops", role: .viewer, password: "a long enough password", hasher: hasher)
        let sessions = SessionStore(redis: redis, keys: keys, idle: .milliseconds(600), maximum: .seconds(60))
        let cookie = try await sessions.open(for: account)
        let first = try await sessions.principal(forCookie: cookie, operators: operators)
        XCTAssertEqual(first?.role, .viewer)
        XCTAssertEqual(first?.canChange, false)
        XCTAssertEqual(first?.csrf?.count, 64)
        // Requests within the idle time keep it alive.
        for _ in 0..<3 {
            try await Task.sleep(for: .milliseconds(300))
            let alive = try await sessions.principal(forCookie: cookie, operators: operators)
            XCTAssertNotNil(alive)
        }
        try await Task.sleep(for: .milliseconds(900))
        let idle = try await sessions.principal(forCookie: cookie, operators: operators)
        XCTAssertNil(idle, "an idle session expired")

        let short = SessionStore(redis: redis, keys: keys, idle: .seconds(60), maximum: .milliseconds(500))
        let other = try await short.open(for: account)
        let fresh = try await short.principal(forCookie: other, operators: operators)
        XCTAssertNotNil(fresh)
        try await Task.sleep(for: .milliseconds(700))
        let expired = try await short.principal(forCookie: other, operators: operators)
        XCTAssertNil(expired, "a session ends at its maximum age even while in use")
        let garbage = try await short.principal(forCookie: "not-a-token", operators: operators)
        XCTAssertNil(garbage)
    }

    func testTheLoginThrottleCountsPerIPAndPerName() async throws {
        let throttle = LoginThrottle(redis: redis, keys: keys, limit: 3, window: .seconds(60))
        for _ in 0..<3 { try await throttle.recordFailure(ip: "192.0.2.1", name: "ops") }
        let byName = try await throttle.isBlocked(ip: "198.51.100.7", name: "OPS")
        XCTAssertTrue(byName, "the name is blocked from any address")
        let byIP = try await throttle.isBlocked(ip: "192.0.2.1", name: "other")
        XCTAssertTrue(byIP, "the address is blocked for any name")
        let neither = try await throttle.isBlocked(ip: "198.51.100.7", name: "other")
        XCTAssertFalse(neither)
        try await throttle.clear(ip: "192.0.2.1", name: "ops")
        let cleared = try await throttle.isBlocked(ip: "192.0.2.1", name: "ops")
        XCTAssertFalse(cleared)
    }
}
