import XCTest
import Foundation
import Logging
import SMGCore
import SMGRedis
import SMGTestSupport
@testable import SMGStore

/// The commit as the one place where a stage's verdict becomes state: new messages in the same
/// script, recipient states that never go back, large recipient lists, capped event streams,
/// outcomes recorded after a lost lease, quarantine. Against a real redis-server.
final class OutcomeCommitTests: XCTestCase {
    var server: RedisServerFixture!
    var redis: RedisClient!
    var store: MessageStore!
    let keys = Keyspace(prefix: "t:")

    override func setUp() async throws {
        server = try RedisServerFixture()
        redis = RedisClient(endpoint: server.endpoint, poolSize: 2, timeout: .seconds(5), logger: Logger(label: "test"))
        store = MessageStore(redis: redis, keys: keys, retentionSeconds: 100, bodyRetentionSeconds: 10,
                             messageEventsMaxLength: 100)
    }

    override func tearDown() async throws {
        redis?.close()
        server?.kill()
    }

    func accepted(recipients: Int = 2, topic: String = "mail.outbound.good") async throws -> MessageID {
        let id = MessageID.make()
        let facts = SubmissionFacts(clientAddress: "127.0.0.1", heloName: "h", tls: false, authenticatedAs: nil,
                                    site: "eu-de-01", ingress: "test", receivedAt: Date(), size: 5)
        let env = Envelope(customer: nil, sender: "a@b.example",
                           recipients: (0..<recipients).map { Recipient(address: "r\($0)@y.example") }, submission: facts)
        let ok = try await store.accept(id: id, envelope: env, body: Array("Subject: t\r\n\r\nx\r\n".utf8),
                                        event: Event(type: "accepted", id: id, site: "s", process: "p"), topic: topic,
                                        redriveAfterMilliseconds: 0)
        XCTAssertTrue(ok)
        return id
    }

    func newMessage(for original: MessageID) -> NewMessage {
        let id = MessageID.make()
        let facts = SubmissionFacts(clientAddress: "", heloName: nil, tls: false, authenticatedAs: nil,
                                    site: "eu-de-01", ingress: "test", receivedAt: Date(), size: 3)
        return NewMessage(id: id, envelope: Envelope(customer: nil, sender: "", recipients: [Recipient(address: "a@b.example")],
                                                     submission: facts),
                          body: Array("ndr".utf8), accepted: Event(type: "accepted", id: id, site: "s", process: "p"),
                          topic: "mail.accepted")
    }

    func testNewMessagesAreStoredInTheSameCommitAndOnlyOnce() async throws {
        let id = try await accepted()
        let claimed = try await store.claim(id, topic: "mail.outbound.good", owner: "A", leaseMilliseconds: 60_000)
        XCTAssertTrue(claimed)
        let ndr = newMessage(for: id)
        let ok = try await store.commit(id, topic: "mail.outbound.good", owner: "A",
                                        events: [Event(type: "ndr.sent", id: id, site: "s", process: "p")],
                                        newMessages: [ndr], transition: .done)
        XCTAssertTrue(ok)
        let stored = try await store.load(ndr.id)
        XCTAssertEqual(stored?.body, Array("ndr".utf8))
        XCTAssertEqual(stored?.envelope.sender, "")
        let score = try await redis.command("ZSCORE", .init(keys.pending("mail.accepted")), .init(ndr.id.rawValue))
        XCTAssertNotNil(score.string, "the NDR is due in the scanner's stage")
        let ndrEvents = try await store.events(of: ndr.id).map(\.type)
        XCTAssertEqual(ndrEvents, ["accepted"])
        // A refused commit (not the holder) stores no new message.
        let other = try await accepted()
        let ndr2 = newMessage(for: other)
        let refused = try await store.commit(other, topic: "mail.outbound.good", owner: "nobody", events: [],
                                             newMessages: [ndr2], transition: .done)
        XCTAssertFalse(refused)
        let missing = try await store.load(ndr2.id)
        XCTAssertNil(missing)
    }

    /// A delivery's commit (`replicated: true`) with `acceptReplicas`: refused while no replica
    /// has it — the write is on the primary only, and the caller repeats it — and the repeat,
    /// once a replica is in sync, succeeds without writing anything twice. Other commits do not wait.
    func testADeliveryCommitCountsOnlyOnceAReplicaHasIt() async throws {
        let waiting = MessageStore(redis: redis, keys: keys, retentionSeconds: 100, bodyRetentionSeconds: 10,
                                   messageEventsMaxLength: 100,
                                   acceptReplicas: ReplicaAcknowledgement(count: 1, timeoutMilliseconds: 200))
        let id = try await accepted()
        let claimed = try await store.claim(id, topic: "mail.outbound.good", owner: "E", leaseMilliseconds: 60_000)
        XCTAssertTrue(claimed)
        let delivered = Event(type: "delivered", id: id, site: "s", process: "p")
        do {
            _ = try await waiting.commit(id, topic: "mail.outbound.good", owner: "E", events: [delivered],
                                         transition: .done, replicated: true)
            XCTFail("a delivery commit no replica has must not count as recorded")
        } catch {
            XCTAssertTrue("\(error)".contains("NOTREPLICATED"), "\(error)")
        }
        let replica = try RedisServerFixture(extraArguments: ["--replicaof", "127.0.0.1", "\(server.port)"])
        defer { replica.kill() }
        let deadline = Date().addingTimeInterval(20)
        while try await redis.command("INFO", "replication").string?.contains("state=online") != true {
            guard Date() < deadline else { return XCTFail("the replica did not come in sync") }
            try await Task.sleep(for: .milliseconds(100))
        }
        let again = try await waiting.commit(id, topic: "mail.outbound.good", owner: "E", events: [delivered],
                                             transition: .done, replicated: true)
        XCTAssertTrue(again, "the repeat is the same lease's commit")
        let types = try await store.events(of: id).map(\.type)
        XCTAssertEqual(types.filter { $0 == "delivered" }.count, 1, "recorded once: \(types)")
        let copy = RedisClient(endpoint: replica.endpoint, poolSize: 1, timeout: .seconds(2), logger: Logger(label: "test"))
        defer { copy.close() }
        let onReplica = try await copy.command("HGET", .init(keys.message(id)), "committed_by").string
        XCTAssertEqual(onReplica, "E", "the replica has the commit")

        // A commit without external effects does not wait (and so works without a replica too).
        let other = try await accepted()
        _ = try await store.claim(other, topic: "mail.outbound.good", owner: "F", leaseMilliseconds: 60_000)
        let plain = try await waiting.commit(other, topic: "mail.outbound.good", owner: "F", events: [], transition: .done)
        XCTAssertTrue(plain)
    }

    func testFinalRecipientStateIsNeverOverwritten() async throws {
        let id = try await accepted()
        let delivered = Recipient(address: "r0@y.example", state: .delivered, attempts: 1, lastReply: "250 ok")
        var deferred = Recipient(address: "r0@y.example", state: .deferred, attempts: 2, lastReply: "451 later")
        deferred.nextAttempt = Date()
        _ = try await store.claim(id, topic: "mail.outbound.good", owner: "A", leaseMilliseconds: 60_000)
        let first = try await store.commit(id, topic: "mail.outbound.good", owner: "A", events: [],
                                           fields: ["rcpt:r0@y.example": delivered.jsonString()],
                                           transition: .retry(afterMilliseconds: 0))
        XCTAssertTrue(first)
        _ = try await store.claim(id, topic: "mail.outbound.good", owner: "B", leaseMilliseconds: 60_000)
        let second = try await store.commit(id, topic: "mail.outbound.good", owner: "B", events: [],
                                            fields: ["rcpt:r0@y.example": deferred.jsonString(), "note": "b"],
                                            transition: .retry(afterMilliseconds: 0))
        XCTAssertTrue(second)
        let loaded = try await store.load(id)
        XCTAssertEqual(loaded?.recipients.first?.state, .delivered)
        XCTAssertEqual(loaded?.fields["note"], "b", "other fields are still written")
    }

    func testFiveThousandRecipientsCommitInOneScript() async throws {
        let id = try await accepted(recipients: 5000)
        _ = try await store.claim(id, topic: "mail.outbound.good", owner: "A", leaseMilliseconds: 60_000)
        var fields: [String: String] = [:]
        var events: [Event] = []
        for i in 0..<5000 {
            let r = Recipient(address: "r\(i)@y.example", state: .delivered, attempts: 1, lastReply: "250 ok")
            fields["rcpt:\(r.address)"] = r.jsonString()
            events.append(Event(type: "delivered", id: id, site: "s", process: "p", facts: ["recipient": .string(r.address)]))
        }
        let ok = try await store.commit(id, topic: "mail.outbound.good", owner: "A", events: events, fields: fields,
                                        transition: .done)
        XCTAssertTrue(ok)
        let loaded = try await store.load(id)
        XCTAssertEqual(loaded?.recipients.filter { $0.state == .delivered }.count, 5000)
        let length = try await redis.command("XLEN", .init(keys.events(id))).int ?? 0
        XCTAssertLessThanOrEqual(length, 300, "the message's event stream is capped (MAXLEN ~ 100)")
        XCTAssertGreaterThan(length, 50)
    }

    func testOrphanOutcomeRecordsOnlyFinalStatesAndNoTransition() async throws {
        let id = try await accepted()
        _ = try await store.claim(id, topic: "mail.outbound.good", owner: "A", leaseMilliseconds: 1)
        try await Task.sleep(for: .milliseconds(20))
        let taken = try await store.claimExpired(topic: "mail.outbound.good", owner: "B", leaseMilliseconds: 60_000,
                                                 limit: 10)
        XCTAssertEqual(taken, [id])
        let delivered = Recipient(address: "r0@y.example", state: .delivered, attempts: 1, lastReply: "250 ok")
        let pending = Recipient(address: "r1@y.example", state: .deferred, attempts: 1, lastReply: "451")
        let refused = try await store.commit(id, topic: "mail.outbound.good", owner: "A", events: [],
                                             fields: ["rcpt:r0@y.example": delivered.jsonString()], transition: .done)
        XCTAssertFalse(refused, "A lost its lease to B")
        let written = try await store.recordOrphan(
            id, events: [Event(type: "delivered", id: id, site: "s", process: "A")],
            fields: ["rcpt:r0@y.example": delivered.jsonString(), "rcpt:r1@y.example": pending.jsonString(), "x": "y"])
        XCTAssertEqual(written, 1)
        let loaded = try await store.load(id)
        XCTAssertEqual(loaded?.recipients.map(\.state), [.delivered, .pending])
        XCTAssertNil(loaded?.fields["x"])
        let owner = try await redis.command("HGET", .init(keys.owners("mail.outbound.good")), .init(id.rawValue))
        XCTAssertEqual(owner.string, "B", "the lease holder keeps the message")
    }

    func testUnreadableRecordIsQuarantinedByTheLeaseHolder() async throws {
        let id = MessageID.make()
        _ = try await redis.command("HSET", .init(keys.message(id)), "envelope", "{broken")
        _ = try await redis.command("ZADD", .init(keys.pending("mail.accepted")), "0", .init(id.rawValue))
        do {
            _ = try await store.claimAndLoad(id, topic: "mail.accepted", owner: "A", leaseMilliseconds: 60_000)
            XCTFail("an unreadable envelope must be reported")
        } catch let error as StoreError {
            XCTAssertEqual(error.code, .corruptRecord)
        }
        let event = Event(type: EventType.quarantined, id: id, site: "s", process: "p", facts: ["reason": "broken"])
        let notHolder = try await store.quarantine(id, topic: "mail.accepted", owner: "B", event: event)
        XCTAssertFalse(notHolder)
        let ok = try await store.quarantine(id, topic: "mail.accepted", owner: "A", event: event)
        XCTAssertTrue(ok)
        let pending = try await store.pendingCount("mail.accepted")
        XCTAssertEqual(pending, 0)
        let counts = try await store.heldAndQuarantined()
        XCTAssertEqual(counts.quarantined, 1)
        let types = try await store.events(of: id).map(\.type)
        XCTAssertEqual(types, ["quarantined"])
        let state = try await redis.command("HGET", .init(keys.message(id)), "quarantined_from")
        XCTAssertEqual(state.string, "mail.accepted")
    }

    func testBacklogReportsCountAndOverdue() async throws {
        _ = try await accepted(topic: "mail.scanned")
        _ = try await redis.command("ZADD", .init(keys.pending("mail.scanned")), "1000", "01J00000000000000000000000")
        let (count, overdue) = try await store.backlog("mail.scanned")
        XCTAssertEqual(count, 2)
        XCTAssertGreaterThan(overdue, 1_000_000_000, "an entry due at 1 s after the epoch is very overdue")
    }
}
