import XCTest
import Logging
import SMGRedis
import SMGStore
import SMGTestSupport
@testable import SMGSpam

/// The shared model in a real Redis: training, relabelling, replacing, seeding, and the classifier's cache.
final class ModelStoreTests: XCTestCase {
    var server: RedisServerFixture!
    var redis: RedisClient!

    override func setUp() async throws {
        server = try RedisServerFixture()
        redis = RedisClient(endpoint: server.endpoint, poolSize: 4, timeout: .seconds(2), logger: Logger(label: "t"))
    }

    override func tearDown() async throws {
        redis?.close()
        server?.kill()
    }

    /// A message about a product nobody has seen: its words are unknown to the shipped model.
    static func novel(_ n: Int) -> [UInt8] {
        SpamEngineTests.message(subject: "zorblax quuxifier \(n)", body: """
            The zorblax quuxifier frobnicates your wibblewobble. Get the zorblax quuxifier today,
            frobnicate every wibblewobble you own. Zorblax! Number \(n).
            """)
    }

    func testTrainingChangesTheVerdict() async throws {
        let store = SpamModelStore(redis: redis)
        try await store.replace(with: SpamEngineTests.shipped)
        let engine = SpamEngine()
        let before = engine.classify(Self.novel(0), model: try await store.load()!.model)
        XCTAssertNotEqual(before.category, .spam, "\(before.score) \(before.reasons)")

        let results = try await store.trainMany((1...8).map { (Self.novel($0), .spam) })
        XCTAssertEqual(results, Array(repeating: .learned, count: 8))
        let (model, _) = try await store.load()!
        let after = engine.classify(Self.novel(0), model: model)
        XCTAssertEqual(after.category, .spam, "\(after.score) \(after.reasons)")
        XCTAssertGreaterThan(after.score, before.score)
        XCTAssertTrue(after.reasons.contains { $0.contains("zorblax") || $0.contains("frobnicate") || $0.contains("wibblewobble") },
                      "\(after.reasons)")
    }

    func testTrainingTwiceChangesNothingAndRelabellingMovesTheCounts() async throws {
        let store = SpamModelStore(redis: redis)
        var base = BayesModel()
        base.learn(["seed"], spam: true)
        base.learn(["seed"], spam: false)
        try await store.replace(with: base)
        let raw = Self.novel(1)
        let v0 = try await store.version()!
        let r1 = try await store.train(raw, as: .spam)
        XCTAssertEqual(r1, .learned)
        let r2 = try await store.train(raw, as: .spam)
        XCTAssertEqual(r2, .unchanged)
        let (m1, v1) = try await store.load()!
        XCTAssertEqual(v1, v0 + 1)
        XCTAssertEqual(m1.spamMessages, 2)
        XCTAssertEqual(m1.tokens["zorblax"], TokenCounts(spam: 1, ham: 0))

        let r3 = try await store.train(raw, as: .ham)
        XCTAssertEqual(r3, .relabelled)
        let (m2, _) = try await store.load()!
        XCTAssertEqual(m2.spamMessages, 1)
        XCTAssertEqual(m2.hamMessages, 2)
        XCTAssertEqual(m2.tokens["zorblax"], TokenCounts(spam: 0, ham: 1))
        let r4 = try await store.trainedLabel(of: raw)
        XCTAssertEqual(r4, .ham)
    }

    /// After a Redis failover the new primary may hold this process's seeding lock but not the
    /// model (replication had not carried all of it): seeding again must not wait for the lock to
    /// expire; another process's lock still keeps this one out.
    func testALostSeedingIsRedoneByTheLockOwnerAtOnce() async throws {
        let store = SpamModelStore(redis: redis)
        var seed = BayesModel()
        seed.learn(["cheap", "pills"], spam: true, count: 5)
        _ = try await redis.command("SET", .init(store.seedLockKey), "classifier-1", "EX", "120")
        let other = try await store.seedIfEmpty(with: seed, owner: "classifier-2")
        XCTAssertFalse(other, "another owner's lock keeps the seeding to that owner")
        let again = try await store.seedIfEmpty(with: seed, owner: "classifier-1")
        XCTAssertTrue(again, "the owner of a lock without a model seeds at once")
        let version = try await store.version()
        XCTAssertNotNil(version)
        let lock = try await redis.command("EXISTS", .init(store.seedLockKey)).int
        XCTAssertEqual(lock, 0, "the lock is released after seeding")
    }

    func testSeedingHappensOnceAndTheCacheFollowsTheVersion() async throws {
        let store = SpamModelStore(redis: redis)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-model-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var seed = BayesModel()
        seed.learn(["cheap", "pills"], spam: true, count: 20)
        seed.learn(["meeting", "agenda"], spam: false, count: 20)
        let path = dir.appendingPathComponent("model.txt").path
        try SpamModelFile.encode(seed).write(toFile: path, atomically: true, encoding: .utf8)

        // No model and no file: fail closed.
        let empty = SpamModelCache(store: store, refresh: .milliseconds(100), seedFile: nil, owner: "t", logger: Logger(label: "t"))
        do { _ = try await empty.current(); XCTFail("expected Unavailable") } catch is SpamModelCache.Unavailable {}

        let cache = SpamModelCache(store: store, refresh: .milliseconds(100), seedFile: path, owner: "t", logger: Logger(label: "t"))
        let first = try await cache.current()
        XCTAssertEqual(first.tokens.count, 4)
        let r5 = try await store.seedIfEmpty(with: seed, owner: "other")
        XCTAssertFalse(r5, "a second seeding must not replace the model")

        _ = try await store.train(Self.novel(2), as: .spam)
        try await Task.sleep(for: .milliseconds(150))
        let second = try await cache.current()
        XCTAssertNotNil(second.tokens["zorblax"], "the cache reloads after the version changed")

        // Redis gone: the copy in memory keeps serving.
        server.kill()
        try await Task.sleep(for: .milliseconds(150))
        let third = try await cache.current()
        XCTAssertNotNil(third.tokens["zorblax"])
    }

    /// Many messages at once on a fresh installation (the stage runs several): the shipped model is
    /// seeded once and whole. Before, a message arriving mid-seeding seeded again under the same
    /// process's lock and the two imports mixed into a partial shared model.
    func testConcurrentFirstMessagesSeedTheWholeModelOnce() async throws {
        let store = SpamModelStore(redis: redis)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.appendingPathComponent("deploy/spam/model.txt").path
        let file = try SpamModelFile.read(path: path)
        XCTAssertGreaterThan(file.tokens.count, 5_000, "seeding takes several batches")
        let cache = SpamModelCache(store: store, refresh: .seconds(60), seedFile: path, owner: "classifier-1", logger: Logger(label: "t"))
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<20 { group.addTask { try await cache.current().tokens.count } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        XCTAssertEqual(counts, Array(repeating: file.tokens.count, count: 20))
        let (stored, version) = try await store.load()!
        XCTAssertEqual(stored.tokens.count, file.tokens.count)
        XCTAssertEqual(stored.tokens, file.tokens)
        XCTAssertEqual(version, 1, "seeded once")
    }
}
