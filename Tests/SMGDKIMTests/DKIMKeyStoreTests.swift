import XCTest
import Foundation
import Logging
import SMGRedis
import SMGStore
import SMGTestSupport
import SMGDKIM
@testable import SMGDKIMKeys

/// Key management against a real Redis: sealed private keys, rotation, the master key file, and
/// what reaches Redis (no private key in clear).
final class DKIMKeyStoreTests: XCTestCase {
    var server: RedisServerFixture!
    var redis: RedisClient!
    var dir: URL!

    override func setUp() async throws {
        server = try RedisServerFixture()
        redis = RedisClient(endpoint: server.endpoint, poolSize: 2, timeout: .seconds(2), logger: Logger(label: "test"))
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-dkimkeys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDown() async throws {
        redis?.close()
        server?.kill()
        try? FileManager.default.removeItem(at: dir)
    }

    func masterKey() throws -> DKIMMasterKey {
        let path = dir.appendingPathComponent("master.key").path
        if !FileManager.default.fileExists(atPath: path) { try DKIMMasterKey.create(path: path) }
        return try DKIMMasterKey.load(path: path)
    }

    func testMasterKeyFileIsPrivateAndNeverOverwritten() throws {
        let path = dir.appendingPathComponent("master.key").path
        try DKIMMasterKey.create(path: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        XCTAssertEqual((attributes[.size] as? NSNumber)?.intValue, 32)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try DKIMMasterKey.create(path: path)) {
            XCTAssertEqual(($0 as? DKIMError)?.code, .masterKey)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
        XCTAssertNoThrow(try DKIMMasterKey.load(path: path))
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        XCTAssertThrowsError(try DKIMMasterKey.load(path: path)) {
            XCTAssertTrue("\($0)".contains("chmod 600"), "\($0)")
        }
        let short = dir.appendingPathComponent("short.key").path
        _ = FileManager.default.createFile(atPath: short, contents: Data(repeating: 1, count: 16),
                                       attributes: [.posixPermissions: 0o600])
        XCTAssertThrowsError(try DKIMMasterKey.load(path: short))
    }

    func testCreateListSignAndNothingSecretInRedis() async throws {
        let store = DKIMKeyStore(redis: redis, keys: Keyspace(prefix: "t:"), masterKey: try masterKey())
        let ed = try await store.create(domain: "Customer.Example", selector: "ed1", algorithm: .ed25519SHA256)
        let rsa = try await store.create(domain: "customer.example", selector: "rsa1", algorithm: .rsaSHA256)
        XCTAssertEqual(ed.domain, "customer.example")
        XCTAssertEqual(rsa.bits, 2048)
        XCTAssertEqual(ed.recordName, "ed1._domainkey.customer.example")
        do {
            try await store.create(domain: "customer.example", selector: "ed1", algorithm: .ed25519SHA256)
            XCTFail("duplicate selector accepted")
        } catch let error as DKIMError {
            XCTAssertEqual(error.code, .exists)
        }

        let listed = try await store.list()
        XCTAssertEqual(Set(listed.map(\.selector)), ["ed1", "rsa1"])
        for record in listed { XCTAssertNil(record.publicSummary["private_enc"]) }

        // What Redis holds: the public key in clear, the private key only sealed.
        let raw = try await redis.command("HGETALL", "t:dkim:customer.example").array ?? []
        let keys = try await store.signingKeys(domain: "customer.example")
        XCTAssertEqual(Set(keys.map(\.selector)), ["ed1", "rsa1"])
        let dump = raw.compactMap(\.bytes).flatMap { $0 }
        for key in keys {
            let secret = key.key.secretBytes
            let b64 = Array(Data(secret).base64EncodedString().utf8)
            XCTAssertFalse(contains(dump, secret), "private key in clear in Redis")
            XCTAssertFalse(contains(dump, b64), "private key (base64) in Redis")
        }
        let domains = try await redis.command("SMEMBERS", "t:dkim:domains").array?.compactMap(\.string)
        XCTAssertEqual(domains, ["customer.example"])

        // Another master key cannot open them.
        let other = DKIMKeyStore(redis: redis, keys: Keyspace(prefix: "t:"), masterKey: try DKIMMasterKey(bytes: Array(repeating: 9, count: 32)))
        do {
            _ = try await other.signingKeys(domain: "customer.example")
            XCTFail("opened with the wrong master key")
        } catch let error as DKIMError {
            XCTAssertEqual(error.code, .decryption)
        }

        // A sealed key moved to another selector's slot does not open (the slot is authenticated).
        let fields = raw.compactMap(\.bytes).map { String(decoding: $0, as: UTF8.self) }
        let edJSON = fields[fields.firstIndex(of: "ed1")! + 1]
        _ = try await redis.command("HSET", "t:dkim:customer.example", "rsa1",
                                    .init(edJSON.replacingOccurrences(of: "\"selector\":\"ed1\"", with: "\"selector\":\"rsa1\"")))
        let fresh = DKIMKeyStore(redis: redis, keys: Keyspace(prefix: "t:"), masterKey: try masterKey())
        do {
            _ = try await fresh.signingKeys(domain: "customer.example")
            XCTFail("a key moved to another slot was accepted")
        } catch let error as DKIMError {
            XCTAssertEqual(error.code, .decryption)
        }
    }

    func testRotateKeepsOldKeyPublishedAsRetiring() async throws {
        let store = DKIMKeyStore(redis: redis, keys: Keyspace(prefix: "t:"), masterKey: try masterKey(), cacheTTL: .seconds(60))
        try await store.create(domain: "example.org", selector: "ed-2025", algorithm: .ed25519SHA256)
        try await store.create(domain: "example.org", selector: "rsa-2025", algorithm: .rsaSHA256)
        let before = try await store.signingKeys(domain: "example.org")
        XCTAssertEqual(before.count, 2)
        let (created, retired) = try await store.rotate(domain: "example.org", newSelector: "ed-2026", algorithm: .ed25519SHA256)
        XCTAssertEqual(created.state, .active)
        XCTAssertEqual(retired.map(\.selector), ["ed-2025"])
        let all = try await store.list(domain: "example.org")
        XCTAssertEqual(all.first { $0.selector == "ed-2025" }?.state, .retiring)
        XCTAssertNotNil(all.first { $0.selector == "ed-2025" }?.retiringSince)
        let after = try await store.signingKeys(domain: "example.org")
        XCTAssertEqual(Set(after.map(\.selector)), ["rsa-2025", "ed-2026"])
        // Without an algorithm: refused while the domain has active keys of both.
        do {
            _ = try await store.rotate(domain: "example.org", newSelector: "x-2027", algorithm: nil)
            XCTFail("rotated without saying which algorithm")
        } catch let error as DKIMError {
            XCTAssertEqual(error.code, .ambiguous)
        }
        try await store.create(domain: "only-ed.example", selector: "a", algorithm: .ed25519SHA256)
        let next = try await store.rotate(domain: "only-ed.example", newSelector: "b", algorithm: nil)
        XCTAssertEqual(next.created.algorithm, .ed25519SHA256)
        XCTAssertEqual(next.retired.map(\.selector), ["a"])
        do {
            _ = try await store.rotate(domain: "nokeys.example", newSelector: "x", algorithm: nil)
            XCTFail("rotated a domain without keys")
        } catch let error as DKIMError {
            XCTAssertEqual(error.code, .notFound)
        }
    }

    func testMessageSignerPicksDomainAndSaysWhyNot() async throws {
        let store = DKIMKeyStore(redis: redis, keys: Keyspace(prefix: "t:"), masterKey: try masterKey())
        try await store.create(domain: "parent.example", selector: "s1", algorithm: .ed25519SHA256)
        let signer = DKIMMessageSigner(store: store, domainMap: ["*.customers.example": "parent.example"])
        let mapped = try await signer.sign(Array("From: a@shop.customers.example\r\nDate: x\r\n\r\nhi\r\n".utf8), time: 1)
        XCTAssertTrue(mapped.signed)
        XCTAssertEqual(mapped.domain, "parent.example")
        XCTAssertEqual(mapped.selectors, ["s1"])
        XCTAssertTrue(mapped.headers.hasPrefix("DKIM-Signature: v=1; a=ed25519-sha256;"))
        let unsigned = try await signer.sign(Array("From: a@other.example\r\n\r\nhi\r\n".utf8), time: 1)
        XCTAssertFalse(unsigned.signed)
        XCTAssertEqual(unsigned.reason, "no key for other.example")
        XCTAssertEqual(unsigned.headers, "")
    }

    func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count, !needle.isEmpty else { return false }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if haystack[i..<(i + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}
