import XCTest
import Logging
import SMGRedis
import SMGStore
import SMGTestSupport
import SMTPClient
@testable import SMGTLSPolicy

/// The decision table without DNS (the DANE and MTA-STS rows run end to end in
/// Tests/Integration/test_tls_policy.py): forced rules from a real Redis, provider rules, and what
/// happens when the rules cannot be read.
final class TLSPolicyEngineTests: XCTestCase {
    var server: RedisServerFixture!
    var redis: RedisClient!

    override func setUp() async throws {
        server = try RedisServerFixture()
        redis = RedisClient(endpoint: server.endpoint, poolSize: 2, timeout: .seconds(2), logger: Logger(label: "t"))
    }

    override func tearDown() async throws {
        redis?.close()
        server?.kill()
    }

    func testRulesTightenAndTheOperatorRuleDecidesTheAction() async throws {
        let store = ForcedTLSRuleStore(redis: redis, keys: Keyspace())
        let pin = String(repeating: "ab", count: 32)
        let r1 = try await store.add(ForcedTLSRule(id: "", recipient: "*.bank.test", level: .encrypt, action: .hold))
        let r2 = try await store.add(ForcedTLSRule(id: "", sender: "shop.test", recipient: "mail.bank.test", level: .fingerprint,
                                                   fingerprints: [pin], action: .reject))
        XCTAssertEqual([r1.id, r2.id], ["r1", "r2"])
        let engine = TLSPolicyEngine(resolver: nil, sts: nil, rules: store)
        let d = await engine.decide(domain: "Mail.Bank.test", senderDomain: "shop.test",
                                    targets: [.init(host: "mx.bank.test", authenticated: false)], viaMX: false)
        XCTAssertEqual(d.mode, .forced)
        XCTAssertEqual(d.rule?.id, "r2", "the strongest level decides")
        XCTAssertEqual(d.action, .reject)
        XCTAssertEqual(d.hosts[0].requirement, TLSRequirement(required: true, fingerprints: [pin]))
        XCTAssertEqual(d.facts, ["mode": "forced", "source": .string("forced TLS rule \(r2.summary)"), "domain": "mail.bank.test",
                                 "rule": "r2", "action": "reject"])
        // Another sender: only r1 (encrypt, hold).
        let other = await engine.decide(domain: "mail.bank.test", senderDomain: "elsewhere.test",
                                        targets: [.init(host: "mx.bank.test", authenticated: false)], viaMX: false)
        XCTAssertEqual(other.rule?.id, "r1")
        XCTAssertEqual(other.action, .hold)
        XCTAssertEqual(other.hosts[0].requirement, TLSRequirement(required: true))
        // Nothing applies: opportunistic, defer.
        let none = await engine.decide(domain: "bank.test", senderDomain: "shop.test",
                                       targets: [.init(host: "mx.bank.test", authenticated: false)], viaMX: false)
        XCTAssertEqual(none.mode, .opportunistic)
        XCTAssertEqual(none.action, .defer)
        XCTAssertFalse(none.hosts[0].requirement.required)
        let removed = try await store.remove("r2")
        let again = try await store.remove("r2")
        XCTAssertTrue(removed)
        XCTAssertFalse(again)
    }

    func testProviderRulesDemandVerifiedTLSAtTheirMXHosts() async {
        let engine = TLSPolicyEngine(resolver: nil, sts: nil, rules: nil)
        let d = await engine.decide(domain: "contoso.example", senderDomain: "shop.test",
                                    targets: [.init(host: "contoso-example.mail.protection.outlook.com", authenticated: false),
                                              .init(host: "backup.contoso.example", authenticated: false)], viaMX: true)
        XCTAssertEqual(d.mode, .forced)
        XCTAssertEqual(d.rule?.id, "provider:microsoft365")
        XCTAssertEqual(d.action, .hold)
        XCTAssertEqual(d.hosts[0].requirement, TLSRequirement(required: true, verifyNames: ["contoso-example.mail.protection.outlook.com"]))
        XCTAssertFalse(d.hosts[1].requirement.required, "the rule is about the provider's hosts only")
        let off = TLSPolicyEngine(resolver: nil, sts: nil, rules: nil, providerRules: false)
        let plain = await off.decide(domain: "contoso.example", senderDomain: "shop.test",
                                     targets: [.init(host: "contoso-example.mail.protection.outlook.com", authenticated: false)],
                                     viaMX: true)
        XCTAssertEqual(plain.mode, .opportunistic)
    }

    func testRulesThatWereNeverReadableBlockEveryHost() async throws {
        let port = try freeTCPPort()
        let dead = RedisClient(endpoint: RedisEndpoint(host: "127.0.0.1", port: port), poolSize: 1, timeout: .milliseconds(300),
                               logger: Logger(label: "t"))
        defer { dead.close() }
        let engine = TLSPolicyEngine(resolver: nil, sts: nil, rules: ForcedTLSRuleStore(redis: dead, keys: Keyspace()))
        let d = await engine.decide(domain: "any.test", senderDomain: "shop.test",
                                    targets: [.init(host: "mx.any.test", authenticated: false)], viaMX: true)
        XCTAssertNotNil(d.hosts[0].blocked, "without the rules nothing may go out: a forced domain would go in plaintext")
    }

    func testLoadedRulesSurviveARedisOutage() async throws {
        let store = ForcedTLSRuleStore(redis: redis, keys: Keyspace(), maxAge: .milliseconds(10))
        _ = try await store.add(ForcedTLSRule(id: "", recipient: "x.test", level: .encrypt, action: .reject))
        let before = await store.current()
        XCTAssertEqual(before?.count, 1)
        server.kill()
        try await Task.sleep(for: .milliseconds(50))
        let after = await store.current()
        XCTAssertEqual(after?.map(\.id), ["r1"], "the last list stays in force")
    }
}
