import XCTest
import Foundation
import Logging
import SMGCore
import SMGRedis
import SMGStore
import SMGTestSupport
@testable import SMGAccounts

final class PasswordHasherTests: XCTestCase {
    func testHashVerifiesOnlyTheRightPasswordAndIsSalted() async throws {
        let hasher = PasswordHasher(logN: 10)
        let a = try hasher.hash("correct horse")
        let b = try hasher.hash("correct horse")
        XCTAssertNotEqual(a, b, "a fresh salt every time")
        XCTAssertTrue(a.hasPrefix("$scrypt$ln=10,r=8,p=1$"))
        let right = await hasher.verify("correct horse", against: a)
        let wrong = await hasher.verify("correct horsf", against: a)
        let garbage = await hasher.verify("x", against: "$scrypt$ln=99$$")
        let empty = await hasher.verify("", against: "")
        XCTAssertTrue(right)
        XCTAssertFalse(wrong)
        XCTAssertFalse(garbage)
        XCTAssertFalse(empty)
        XCTAssertFalse(a.contains("correct"))
    }

    func testDefaultCostIsDeliberatelySlow() throws {
        let started = Date()
        _ = try PasswordHasher().hash("x")
        XCTAssertGreaterThan(Date().timeIntervalSince(started), 0.01, "scrypt N=2^15 must not be instant")
    }
}

final class CustomerTests: XCTestCase {
    func testSenderOwnershipAndValidation() throws {
        let c = Customer(id: "shop", networks: ["192.0.2.0/24", "2001:db8::/32"], domains: ["Shop.Example"])
        XCTAssertTrue(c.ownsSender("a@shop.example"))
        XCTAssertTrue(c.ownsSender("a@mail.shop.example"))
        XCTAssertFalse(c.ownsSender("a@evilshop.example"))
        XCTAssertFalse(c.ownsSender("a@shop.example.evil"))
        XCTAssertFalse(c.ownsSender("nodomain"))
        XCTAssertTrue(c.networkList.contains("192.0.2.77"))
        XCTAssertTrue(c.networkList.contains("2001:db8::5"))
        XCTAssertFalse(c.networkList.contains("198.51.100.1"))
        XCTAssertNoThrow(try c.validate())
        for bad in [Customer(id: "a b"), Customer(id: "x", networks: ["10.0.0.0/33"]),
                    Customer(id: "x", domains: ["a@b"]), Customer(id: "x", rateLimitPerMinute: 0)] {
            XCTAssertThrowsError(try bad.validate())
        }
    }
}

final class RedisPolicyTests: XCTestCase {
    var server: RedisServerFixture!
    var redis: RedisClient!

    override func setUp() async throws {
        server = try RedisServerFixture()
        redis = RedisClient(endpoint: server.endpoint, poolSize: 8, timeout: .seconds(2), logger: Logger(label: "t"))
    }

    override func tearDown() async throws {
        redis?.close()
        server?.kill()
    }

    func testRateLimitAdmitsExactlyTheLimitUnderConcurrencyFromTwoClients() async throws {
        let other = RedisClient(endpoint: server.endpoint, poolSize: 8, timeout: .seconds(2), logger: Logger(label: "t2"))
        defer { other.close() }
        let limiters = [RateLimiter(redis: redis), RateLimiter(redis: other)]
        let admitted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<250 {
                let limiter = limiters[i % 2]
                group.addTask { try await limiter.allow(customer: "c1", perMinute: 100) }
            }
            var count = 0
            for try await ok in group where ok { count += 1 }
            return count
        }
        XCTAssertEqual(admitted, 100)
        let otherCustomer = try await limiters[0].allow(customer: "c2", perMinute: 100)
        XCTAssertTrue(otherCustomer, "budgets are per customer")
    }

    func testAuthThrottleCountsPerIPAndPerLogin() async throws {
        let throttle = AuthThrottle(redis: redis, maxPerIP: 3, maxPerLogin: 5, windowSeconds: 60)
        for _ in 0..<3 { try await throttle.recordFailure(ip: "192.0.2.1", login: "a") }
        let blockedIP = try await throttle.isBlocked(ip: "192.0.2.1", login: "z")
        let otherIP = try await throttle.isBlocked(ip: "192.0.2.2", login: "z")
        XCTAssertTrue(blockedIP)
        XCTAssertFalse(otherIP)
        for i in 0..<2 { try await throttle.recordFailure(ip: "198.51.100.\(i)", login: "A") }
        let blockedLogin = try await throttle.isBlocked(ip: "203.0.113.9", login: "a")
        XCTAssertTrue(blockedLogin, "logins are case-insensitive and counted across IPs")
    }

    func testAccountsRoundTripWithoutPlainPasswords() async throws {
        let store = AccountStore(redis: redis)
        try await store.saveCustomer(Customer(id: "shop", networks: ["127.0.0.0/8"], domains: ["shop.example"]))
        let hash = try PasswordHasher(logN: 10).hash("s3cret-password")
        try await store.saveAccount(Account(login: "Shop-App", customer: "shop", passwordHash: hash))
        let account = try await store.account("shop-app")
        XCTAssertEqual(account?.customer, "shop")
        let logins = try await store.logins(of: "shop")
        XCTAssertEqual(logins, ["shop-app"])
        let raw = try await redis.command("GET", "smg:account:shop-app").string ?? ""
        XCTAssertFalse(raw.contains("s3cret"))
        do {
            try await store.saveAccount(Account(login: "x", customer: "nobody", passwordHash: hash))
            XCTFail("an account needs an existing customer")
        } catch {}
        let removed = try await store.deleteAccount("shop-app")
        let gone = try await store.account("shop-app")
        XCTAssertTrue(removed)
        XCTAssertNil(gone)
    }
}
