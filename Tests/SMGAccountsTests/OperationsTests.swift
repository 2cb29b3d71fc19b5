import XCTest
import Foundation
import Logging
import SMGRedis
import SMGTestSupport
@testable import SMGAccounts

/// The customer and login operations smgctl and smg-admin share, against a real Redis.
final class OperationsTests: XCTestCase {
    var server: RedisServerFixture!
    var redis: RedisClient!
    var store: AccountStore!
    let hasher = PasswordHasher(logN: 10)

    override func setUp() async throws {
        server = try RedisServerFixture()
        redis = RedisClient(endpoint: server.endpoint, poolSize: 2, timeout: .seconds(2), logger: Logger(label: "t"))
        store = AccountStore(redis: redis)
    }

    override func tearDown() async throws {
        redis?.close()
        server?.kill()
    }

    func testCreateRefusesAnExistingCustomerAndUpdateKeepsWhatIsNotGiven() async throws {
        var shop = Customer(id: "shop", networks: ["10.0.0.0/8"], domains: ["Shop.Example"], rateLimitPerMinute: 100, requireTLS: true)
        var limits = BrakeLimits()
        limits.minBurst = 8
        shop.brake = limits
        let created = try await store.createCustomer(shop)
        XCTAssertEqual(created.domains, ["shop.example"])
        do {
            _ = try await store.createCustomer(Customer(id: "shop", networks: ["192.0.2.0/24"]))
            XCTFail("a second create replaced the customer")
        } catch let error as AccountError {
            XCTAssertEqual(error.code, .exists)
            XCTAssertEqual(error.field, "id")
        }
        let (before, after) = try await store.updateCustomer("shop", CustomerUpdate(name: "Shop Ltd", rateLimitPerMinute: .some(nil)))
        XCTAssertEqual(before.rateLimitPerMinute, 100)
        XCTAssertNil(after.rateLimitPerMinute)
        XCTAssertEqual(after.name, "Shop Ltd")
        XCTAssertEqual(after.networks, ["10.0.0.0/8"])
        XCTAssertTrue(after.requireTLS)
        XCTAssertEqual(after.brake?.minBurst, 8)
        let stored = try await store.customer("shop")
        XCTAssertEqual(stored, after)
        do {
            _ = try await store.updateCustomer("shop", CustomerUpdate(networks: ["300.1.0.0/16"]))
            XCTFail("an invalid network was saved")
        } catch let error as AccountError {
            XCTAssertEqual(error.field, "networks")
        }
        let unchanged = try await store.customer("shop")
        XCTAssertEqual(unchanged?.networks, ["10.0.0.0/8"])
    }

    func testLoginsGetAGeneratedPasswordOnceAndFollowThePasswordRules() async throws {
        _ = try await store.createCustomer(Customer(id: "shop", networks: ["10.0.0.0/8"], domains: ["shop.example"]))
        let created = try await store.createLogin("App", customer: "shop", password: nil, hasher: hasher)
        let password = try XCTUnwrap(created.password)
        XCTAssertGreaterThanOrEqual(password.count, PasswordRules.minimumLength)
        XCTAssertFalse(created.account.passwordHash.contains(password))
        let verified = await hasher.verify(password, against: created.account.passwordHash)
        XCTAssertTrue(verified)
        do {
            _ = try await store.createLogin("app", customer: "shop", password: nil, hasher: hasher)
            XCTFail("a login was created twice")
        } catch let error as AccountError { XCTAssertEqual(error.code, .exists) }
        do {
            _ = try await store.createLogin("other", customer: "shop", password: "short", hasher: hasher)
            XCTFail("a short password was accepted")
        } catch let error as AccountError { XCTAssertEqual(error.field, "password") }
        do {
            _ = try await store.createLogin("other", customer: "nobody", password: nil, hasher: hasher)
            XCTFail("a login of a missing customer was created")
        } catch let error as AccountError { XCTAssertEqual(error.code, .notFound) }

        let given = try await store.resetPassword("app", password: "a long enough password", hasher: hasher)
        XCTAssertNil(given.password, "a given password is not echoed back")
        let (_, disabled) = try await store.setLoginDisabled("app", true)
        XCTAssertTrue(disabled.disabled)
        let reread = try await store.account("APP")
        XCTAssertEqual(reread?.disabled, true)
        let newVerified = await hasher.verify("a long enough password", against: reread?.passwordHash ?? "")
        XCTAssertTrue(newVerified)
    }
}
