import XCTest
import Foundation
import Logging
import SMGCore
import SMGRedis
import SMGTestSupport
@testable import SMGStore

/// The stage transitions against a real redis-server: what the durability and "processed once"
/// invariants rest on.
final class MessageStoreTests: XCTestCase {
    var server: RedisServerFixture!
    var redis: RedisClient!
    var store: MessageStore!

    override func setUp() async throws {
        server = try RedisServerFixture()
        redis = RedisClient(endpoint: server.endpoint, poolSize: 2, timeout: .seconds(2), logger: Logger(label: "test"))
        store = MessageStore(redis: redis, keys: Keyspace(prefix: "t:"), retentionSeconds: 100, bodyRetentionSeconds: 10)
    }

    override func tearDown() async throws {
        redis?.close()
        server?.kill()
    }

    func makeMessage(_ id: MessageID = MessageID.make()) -> (MessageID, Envelope, [UInt8], Event) {
        let facts = SubmissionFacts(clientAddress: "127.0.0.1", heloName: "h", tls: false, authenticatedAs: nil,
                                    site: "eu-de-01", ingress: "test",
                                    receivedAt: Date(timeIntervalSince1970: 1_790_000_000), size: 5)
        let env = Envelope(customer: nil, sender: "a@b.example",
                           recipients: [Recipient(address: "x@y.example"), Recipient(address: "z@y.example")],
                           submission: facts)
        let body: [UInt8] = Array("Subject: t\r\n\r\nbin\0ary\r\n.\r\n".utf8)
        return (id, env, body, Event(type: "accepted", id: id, site: "eu-de-01", process: "test"))
    }

    func accept() async throws -> MessageID {
        let (id, env, body, event) = makeMessage()
        let stored = try await store.accept(id: id, envelope: env, body: body, event: event, topic: "mail.accepted",
                                            redriveAfterMilliseconds: 60_000)
        XCTAssertTrue(stored)
        return id
    }

    func testAcceptStoresRecordBodyEventAndPendingEntryAtomically() async throws {
        let (id, env, body, event) = makeMessage()
        let v1 = try await store.accept(id: id, envelope: env, body: body, event: event, topic: "mail.accepted",
                                             redriveAfterMilliseconds: 60_000)
        XCTAssertTrue(v1)
        let v2 = try await store.accept(id: id, envelope: env, body: body, event: event, topic: "mail.accepted",
                                              redriveAfterMilliseconds: 60_000)
        XCTAssertFalse(v2, "the same id is stored once")
        let loaded = try await store.load(id)
        XCTAssertEqual(loaded?.envelope, env)
        XCTAssertEqual(loaded?.body, body, "bodies are binary-safe")
        let v3 = try await store.events(of: id).map(\.type)
        XCTAssertEqual(v3, ["accepted"])
        let v4 = try await store.pendingCount("mail.accepted")
        XCTAssertEqual(v4, 1)
        let nothing = try await store.load(MessageID.make())
        XCTAssertNil(nothing)
    }

    func testMessageIsClaimedByOneOwnerOnly() async throws {
        let id = try await accept()
        let a = try await store.claim(id, topic: "mail.accepted", owner: "A", leaseMilliseconds: 60_000)
        let b = try await store.claim(id, topic: "mail.accepted", owner: "B", leaseMilliseconds: 60_000)
        XCTAssertTrue(a)
        XCTAssertFalse(b, "a live lease keeps others out")
        // Also the holder itself: a stage's receive and redrive loops share an owner name, and a
        // frame arriving while the redrive loop works on the message must not start a second run.
        let again = try await store.claim(id, topic: "mail.accepted", owner: "A", leaseMilliseconds: 60_000)
        XCTAssertFalse(again, "a live lease is not taken twice by the same owner")
        if case .notYours = try await store.claimAndLoad(id, topic: "mail.accepted", owner: "A", leaseMilliseconds: 60_000) {
        } else { XCTFail("claimAndLoad must not re-take a live lease") }
        // B cannot commit; A can, once.
        let event = Event(type: "scanned.clean", id: id, site: "s", process: "B")
        let v5 = try await store.commit(id, topic: "mail.accepted", owner: "B", events: [event],
                                              transition: .forward(topic: "mail.scanned", redriveAfterMilliseconds: 1000))
        XCTAssertFalse(v5)
        let v6 = try await store.commit(id, topic: "mail.accepted", owner: "A", events: [event], fields: ["k": "v"],
                                             transition: .forward(topic: "mail.scanned", redriveAfterMilliseconds: 1000))
        XCTAssertTrue(v6)
        let v7 = try await store.commit(id, topic: "mail.accepted", owner: "A", events: [event],
                                              transition: .forward(topic: "mail.scanned", redriveAfterMilliseconds: 1000))
        XCTAssertTrue(v7, "a repeated commit by the same lease token (its reply was lost) reports recorded…")
        let v8 = try await store.events(of: id).map(\.type)
        XCTAssertEqual(v8, ["accepted", "scanned.clean"], "… and changes nothing")
        let v9 = try await store.pendingCount("mail.accepted")
        XCTAssertEqual(v9, 0)
        let v10 = try await store.pendingCount("mail.scanned")
        XCTAssertEqual(v10, 1)
        let v11 = try await store.load(id)?.fields["k"]
        XCTAssertEqual(v11, "v")
        let v12 = try await store.claim(id, topic: "mail.accepted", owner: "C", leaseMilliseconds: 1000)
        XCTAssertFalse(v12,
                       "a message that left the stage cannot be claimed there again")
    }

    func testClaimAndLoadReadsTheMessageOnlyForTheLeaseHolder() async throws {
        let (id, env, body, event) = makeMessage()
        _ = try await store.accept(id: id, envelope: env, body: body, event: event, topic: "mail.accepted",
                                   redriveAfterMilliseconds: 60_000)
        guard case .claimed(let message) = try await store.claimAndLoad(id, topic: "mail.accepted", owner: "A",
                                                                        leaseMilliseconds: 60_000)
        else { return XCTFail("the first claim must win and read the message") }
        XCTAssertEqual(message.body, body)
        XCTAssertEqual(message.envelope, env)
        guard case .notYours = try await store.claimAndLoad(id, topic: "mail.accepted", owner: "B",
                                                            leaseMilliseconds: 60_000)
        else { return XCTFail("a second owner must not get it") }
        // A pending entry whose record vanished is reported as missing, not as a crash.
        let ghost = MessageID.make()
        _ = try await redis.command("ZADD", "t:pending:mail.accepted", "0", .init(ghost.rawValue))
        guard case .missing = try await store.claimAndLoad(ghost, topic: "mail.accepted", owner: "A",
                                                           leaseMilliseconds: 60_000)
        else { return XCTFail("expected .missing") }
    }

    func testRenewKeepsALiveLeaseFromRedrive() async throws {
        let id = try await accept()
        let claimed = try await store.claim(id, topic: "mail.accepted", owner: "slow", leaseMilliseconds: 300)
        XCTAssertTrue(claimed)
        for _ in 0..<4 {
            try await Task.sleep(for: .milliseconds(150))
            let renewed = try await store.renew(id, topic: "mail.accepted", owner: "slow", leaseMilliseconds: 300)
            XCTAssertTrue(renewed)
            let stolen = try await store.claimExpired(topic: "mail.accepted", owner: "thief", leaseMilliseconds: 1000, limit: 5)
            XCTAssertEqual(stolen, [], "a renewed lease is never redriven")
        }
        let notMine = try await store.renew(id, topic: "mail.accepted", owner: "thief", leaseMilliseconds: 300)
        XCTAssertFalse(notMine, "only the holder renews")
    }

    func testExpiredLeasesAreRedrivenToAnotherOwner() async throws {
        let id = try await accept()
        let v13 = try await store.claim(id, topic: "mail.accepted", owner: "dead", leaseMilliseconds: 200)
        XCTAssertTrue(v13)
        let early = try await store.claimExpired(topic: "mail.accepted", owner: "B", leaseMilliseconds: 60_000, limit: 10)
        XCTAssertEqual(early, [])
        try await Task.sleep(for: .milliseconds(300))
        let redriven = try await store.claimExpired(topic: "mail.accepted", owner: "B", leaseMilliseconds: 60_000,
                                                    limit: 10)
        XCTAssertEqual(redriven, [id])
        let event = Event(type: "x", id: id, site: "s", process: "p")
        let v14 = try await store.commit(id, topic: "mail.accepted", owner: "dead", events: [event], transition: .done)
        XCTAssertFalse(v14,
                       "the old owner lost its lease")
        let v15 = try await store.commit(id, topic: "mail.accepted", owner: "B", events: [event], transition: .done)
        XCTAssertTrue(v15)
    }

    func testUnclaimedEntriesAreRedrivenAfterTheirDeadline() async throws {
        let (id, env, body, event) = makeMessage()
        _ = try await store.accept(id: id, envelope: env, body: body, event: event, topic: "mail.accepted",
                                   redriveAfterMilliseconds: 150)
        let v16 = try await store.claimExpired(topic: "mail.accepted", owner: "A", leaseMilliseconds: 1000, limit: 5)
        XCTAssertEqual(v16, [])
        try await Task.sleep(for: .milliseconds(250))
        let v17 = try await store.claimExpired(topic: "mail.accepted", owner: "A", leaseMilliseconds: 1000, limit: 5)
        XCTAssertEqual(v17, [id])
    }

    func testRetryWaitsForItsTimeAndReleaseHandsBack() async throws {
        let id = try await accept()
        let v18 = try await store.claim(id, topic: "mail.accepted", owner: "A", leaseMilliseconds: 60_000)
        XCTAssertTrue(v18)
        let deferred = Event(type: "deferred", id: id, site: "s", process: "A")
        let v19 = try await store.commit(id, topic: "mail.accepted", owner: "A", events: [deferred],
                                             transition: .retry(afterMilliseconds: 200))
        XCTAssertTrue(v19)
        let v20 = try await store.claim(id, topic: "mail.accepted", owner: "B", leaseMilliseconds: 1000)
        XCTAssertFalse(v20,
                       "a waiting message is not taken before its time")
        try await Task.sleep(for: .milliseconds(300))
        let v21 = try await store.claimExpired(topic: "mail.accepted", owner: "B", leaseMilliseconds: 60_000, limit: 5)
        XCTAssertEqual(v21, [id])
        let v22 = try await store.release(id, topic: "mail.accepted", owner: "B", retryAfterMilliseconds: 0)
        XCTAssertTrue(v22)
        let v23 = try await store.release(id, topic: "mail.accepted", owner: "B", retryAfterMilliseconds: 0)
        XCTAssertFalse(v23,
                       "only the holder can release")
        let v24 = try await store.claimExpired(topic: "mail.accepted", owner: "C", leaseMilliseconds: 60_000, limit: 5)
        XCTAssertEqual(v24, [id])
    }

    func testDoneSetsExpiryOnRecords() async throws {
        let id = try await accept()
        let v25 = try await store.claim(id, topic: "mail.accepted", owner: "A", leaseMilliseconds: 60_000)
        XCTAssertTrue(v25)
        let v26 = try await store.commit(id, topic: "mail.accepted", owner: "A",
                                             events: [Event(type: "delivered", id: id, site: "s", process: "A")],
                                             transition: .done)
        XCTAssertTrue(v26)
        let ttlMsg = try await redis.command("TTL", .init("t:msg:\(id)")).int ?? -1
        let ttlBody = try await redis.command("TTL", .init("t:body:\(id)")).int ?? -1
        XCTAssertTrue((1...100).contains(ttlMsg), "\(ttlMsg)")
        XCTAssertTrue((1...10).contains(ttlBody), "\(ttlBody)")
        let v27 = try await store.load(id)?.fields["state"]
        XCTAssertEqual(v27, "done")
    }

    /// What each transition writes on the record in its one HSET: the worker's fields, who
    /// committed, the new state (over a `state` the worker sent), `finished` for done; a retry
    /// keeps the state; a final recipient state is not overwritten.
    func testCommitRecordsFieldsStateAndCommitter() async throws {
        for (transition, state) in [(Transition.forward(topic: "mail.scanned", redriveAfterMilliseconds: 1000), "queued"),
                                    (.hold(releaseTo: "mail.scanned"), "held"), (.done, "done"),
                                    (.retry(afterMilliseconds: 1000), "accepted")] {
            let id = try await accept()
            _ = try await redis.command("HSET", .init("t:msg:\(id)"), "rcpt:a@x.example", #"{"state":"delivered"}"#)
            let claimed = try await store.claim(id, topic: "mail.accepted", owner: "A", leaseMilliseconds: 60_000)
            XCTAssertTrue(claimed)
            let committed = try await store.commit(id, topic: "mail.accepted", owner: "A", events: [],
                                                   fields: ["lane": "good", "state": "bogus", "rcpt:a@x.example": #"{"state":"deferred"}"#],
                                                   transition: transition)
            XCTAssertTrue(committed)
            let f = try await store.load(id)!.fields
            XCTAssertEqual(f["lane"], "good", "\(transition)")
            XCTAssertEqual(f["committed_by"], "A", "\(transition)")
            XCTAssertEqual(f["state"], state == "accepted" ? "bogus" : state, "\(transition)")
            XCTAssertEqual(f["finished"] != nil, state == "done", "\(transition)")
            XCTAssertEqual(f["rcpt:a@x.example"], #"{"state":"delivered"}"#, "\(transition)")
        }
    }

    func testConcurrentClaimsOfManyMessagesGiveEachToExactlyOneOwner() async throws {
        var ids: [MessageID] = []
        for _ in 0..<50 { ids.append(try await accept()) }
        let store: MessageStore = self.store
        let winners = try await withThrowingTaskGroup(of: (MessageID, String)?.self) { group in
            for id in ids {
                for owner in ["A", "B", "C"] {
                    group.addTask {
                        try await store.claim(id, topic: "mail.accepted", owner: owner, leaseMilliseconds: 60_000)
                            ? (id, owner) : nil
                    }
                }
            }
            var out: [(MessageID, String)] = []
            for try await r in group { if let r { out.append(r) } }
            return out
        }
        XCTAssertEqual(winners.count, 50)
        XCTAssertEqual(Set(winners.map(\.0)).count, 50)
    }

    func testRegistryExpiresStaleEndpoints() async throws {
        let registry = Registry(redis: redis, keys: Keyspace(prefix: "t:"))
        try await registry.register(kind: "mail.accepted", endpoint: "tcp://127.0.0.1:1", ttlMilliseconds: 60_000)
        try await registry.register(kind: "mail.accepted", endpoint: "tcp://127.0.0.1:2", ttlMilliseconds: 100)
        let v28 = try await registry.endpoints(kind: "mail.accepted")
        XCTAssertEqual(v28, ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"])
        try await Task.sleep(for: .milliseconds(200))
        let v29 = try await registry.endpoints(kind: "mail.accepted")
        XCTAssertEqual(v29, ["tcp://127.0.0.1:1"])
        try await registry.unregister(kind: "mail.accepted", endpoint: "tcp://127.0.0.1:1")
        let v30 = try await registry.endpoints(kind: "mail.accepted")
        XCTAssertEqual(v30, [])
    }

    func testRedisDownSurfacesAsError() async throws {
        let (id, env, body, event) = makeMessage()
        server.kill()
        do {
            _ = try await store.accept(id: id, envelope: env, body: body, event: event, topic: "mail.accepted",
                                       redriveAfterMilliseconds: 1000)
            XCTFail("accept must fail when Redis is gone")
        } catch {}
    }
}
