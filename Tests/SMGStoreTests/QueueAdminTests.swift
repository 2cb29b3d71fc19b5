import XCTest
import Foundation
import Logging
import SMGCore
import SMGRedis
import SMGTestSupport
@testable import SMGStore

/// Operator actions on the queue against a real redis-server: every action is one script that
/// changes place, fields and events together, and a refused one changes nothing.
final class QueueAdminTests: XCTestCase {
    var server: RedisServerFixture!
    var redis: RedisClient!
    var store: MessageStore!
    var admin: QueueAdmin!
    let keys = Keyspace(prefix: "t:")

    override func setUp() async throws {
        server = try RedisServerFixture()
        redis = RedisClient(endpoint: server.endpoint, poolSize: 2, timeout: .seconds(2), logger: Logger(label: "test"))
        store = MessageStore(redis: redis, keys: keys, retentionSeconds: 100, bodyRetentionSeconds: 10)
        admin = QueueAdmin(store: store, site: "eu-de-01", process: "smgctl@test")
    }

    override func tearDown() async throws {
        redis?.close()
        server?.kill()
    }

    // MARK: Helpers

    @discardableResult
    func accept(sender: String = "a@b.example", recipients: [String] = ["x@y.example", "z@w.example"],
                customer: String? = "acme", redriveAfter: Int = 60_000) async throws -> MessageID {
        let id = MessageID.make()
        let facts = SubmissionFacts(clientAddress: "127.0.0.1", heloName: "h", tls: false, authenticatedAs: nil,
                                    site: "eu-de-01", ingress: "test",
                                    receivedAt: Date(timeIntervalSince1970: 1_790_000_000), size: 5)
        let env = Envelope(customer: customer, sender: sender, recipients: recipients.map { Recipient(address: $0) },
                           submission: facts)
        let body = Array("Subject: t\r\nFrom: \(sender)\r\n\r\nbody\r\n".utf8)
        let stored = try await store.accept(id: id, envelope: env, body: body,
                                            event: Event(type: "accepted", id: id, site: "s", process: "test"),
                                            topic: Topic.accepted, redriveAfterMilliseconds: redriveAfter)
        XCTAssertTrue(stored)
        return id
    }

    /// Takes a message through to `mail.outbound.good`, where it waits (`~wait`) with the given
    /// recipient states recorded, as egress leaves a deferred message.
    func deferInEgress(_ id: MessageID, states: [Recipient], waitMilliseconds: Int = 60_000) async throws {
        let claimed = try await store.claim(id, topic: Topic.accepted, owner: "scan", leaseMilliseconds: 10_000)
        XCTAssertTrue(claimed)
        let forwarded = try await store.commit(id, topic: Topic.accepted, owner: "scan", events: [],
                                               fields: ["lane": "good"],
                                               transition: .forward(topic: Topic.outboundGood, redriveAfterMilliseconds: 0))
        XCTAssertTrue(forwarded)
        let egress = try await store.claim(id, topic: Topic.outboundGood, owner: "egress", leaseMilliseconds: 10_000)
        XCTAssertTrue(egress)
        var fields: [String: String] = [:]
        for r in states { fields["rcpt:\(r.address)"] = r.jsonString() }
        let waited = try await store.commit(id, topic: Topic.outboundGood, owner: "egress", events: [], fields: fields,
                                            transition: .retry(afterMilliseconds: waitMilliseconds))
        XCTAssertTrue(waited)
    }

    /// Every key under the prefix with its serialized value and TTL: equal snapshots = nothing changed.
    func snapshot() async throws -> [String: String] {
        let names = try await redis.command("KEYS", "t:*").array?.compactMap(\.string) ?? []
        var out: [String: String] = [:]
        for name in names {
            let dump = try await redis.command("DUMP", .init(name)).bytes ?? []
            let ttl = try await redis.command("PTTL", .init(name)).int ?? -3
            out[name] = "\(dump) ttl>0:\(ttl > 0) ttl:\(ttl < 0 ? ttl : 1)"
        }
        return out
    }

    func fields(_ id: MessageID) async throws -> [String: String] {
        QueueAdmin.hash(try await redis.command("HGETALL", .init(keys.message(id))))
    }

    func eventTypes(_ id: MessageID) async throws -> [String] { try await store.events(of: id).map(\.type) }

    func assertRefused(_ code: QueueError.Code, _ body: () async throws -> QueueActionResult,
                       file: StaticString = #filePath, line: UInt = #line) async {
        do {
            _ = try await body()
            XCTFail("expected \(code)", file: file, line: line)
        } catch let error as QueueError {
            XCTAssertEqual(error.code, code, "\(error)", file: file, line: line)
        } catch {
            XCTFail("unexpected \(error)", file: file, line: line)
        }
    }

    static func ndr(for message: StoredMessage, bounced: [Recipient]) -> NDRMessage? {
        guard !message.envelope.sender.isEmpty else { return nil }
        let id = MessageID(String(message.id.rawValue.prefix(10)) + "0000000000000000")!
        let env = Envelope(customer: message.envelope.customer, sender: "",
                           recipients: [Recipient(address: message.envelope.sender)],
                           submission: message.envelope.submission)
        let body = Array("Subject: NDR\r\n\r\n\(bounced.map(\.address).joined(separator: ","))\r\n".utf8)
        let accepted = Event(type: EventType.accepted, id: id, site: "s", process: "p", facts: ["sender": ""])
        return NDRMessage(message: NewMessage(id: id, envelope: env, body: body, accepted: accepted, topic: "mail.accepted"),
                          sent: Event(type: EventType.ndrSent, id: message.id, site: "s", process: "p",
                                      facts: ["ndr": .string(id.rawValue)]))
    }

    // MARK: Hold and release

    func testHoldOfALeasedMessageRefusesTheHoldersCommitAndRecordsItAll() async throws {
        let id = try await accept()
        let claimed = try await store.claim(id, topic: Topic.accepted, owner: "worker", leaseMilliseconds: 60_000)
        XCTAssertTrue(claimed)
        let held = try await admin.hold(id, reason: "suspicious", operator: "alice")
        XCTAssertEqual(held.from, Topic.accepted)
        let committed = try await store.commit(id, topic: Topic.accepted, owner: "worker", events: [],
                                               transition: .forward(topic: Topic.scanned, redriveAfterMilliseconds: 0))
        XCTAssertFalse(committed, "the lease holder of a held message cannot commit")
        let pending = try await store.pendingCount(Topic.scanned) + store.pendingCount(Topic.accepted)
        XCTAssertEqual(pending, 0)
        let owner = try await redis.command("HGET", .init(keys.owners(Topic.accepted)), .init(id.rawValue))
        XCTAssertTrue(owner.isNull, "the owner entry is gone")
        let heldFrom = try await redis.command("HGET", .init(keys.held), .init(id.rawValue)).string
        XCTAssertEqual(heldFrom, Topic.accepted)
        let f = try await fields(id)
        XCTAssertEqual(f["state"], "held")
        XCTAssertEqual(f["held_from"], Topic.accepted)
        let events = try await store.events(of: id)
        XCTAssertEqual(events.map(\.type), ["accepted", "queue.held"])
        XCTAssertEqual(events.last?.facts, ["action": "hold", "reason": "suspicious", "operator": "alice",
                                            "from": "mail.accepted", "to": "held"])
        let global = try await store.recentEvents(count: 10).map(\.type)
        XCTAssertEqual(global.last, "queue.held", "also on the global stream")
        let item = try await admin.locate(id)
        XCTAssertEqual(item.location, .held(from: Topic.accepted))
        XCTAssertEqual(item.state, .held)
    }

    func testHeldMessagesAreNeverRedrivenAndReleaseMakesThemClaimable() async throws {
        let id = try await accept(redriveAfter: 0)
        _ = try await admin.hold(id, reason: nil, operator: "alice")
        try await Task.sleep(for: .milliseconds(50))
        let none = try await store.claimExpired(topic: Topic.accepted, owner: "r", leaseMilliseconds: 1000, limit: 10)
        XCTAssertEqual(none, [], "a held message is in no pending set")
        let notYours = try await store.claim(id, topic: Topic.accepted, owner: "r", leaseMilliseconds: 1000)
        XCTAssertFalse(notYours)

        let released = try await admin.release(id, operator: "bob")
        XCTAssertEqual(released.to, Topic.accepted)
        let f = try await fields(id)
        XCTAssertEqual(f["state"], "queued")
        XCTAssertNil(f["held_from"])
        let heldCount = try await redis.command("HLEN", .init(keys.held)).int
        XCTAssertEqual(heldCount, 0)
        let due = try await store.claimExpired(topic: Topic.accepted, owner: "r", leaseMilliseconds: 1000, limit: 10)
        XCTAssertEqual(due, [id], "released with deadline now: the next redrive pass takes it")
        let types = try await eventTypes(id)
        XCTAssertEqual(types, ["accepted", "queue.held", "queue.released"])
    }

    func testReleaseOfAQuarantinedMessageNeedsAReadableRecord() async throws {
        let id = try await accept()
        // Quarantine it with a broken envelope, as a stage that cannot read it would.
        _ = try await redis.command("ZREM", .init(keys.pending(Topic.accepted)), .init(id.rawValue))
        _ = try await redis.command("ZADD", .init(keys.quarantine), "1", .init(id.rawValue))
        let good = try await fields(id)["envelope"]!
        _ = try await redis.command("HSET", .init(keys.message(id)), "envelope", "{broken")
        let before = try await snapshot()
        await assertRefused(.unreadable) { try await self.admin.release(id, operator: "a") }
        await assertRefused(.unreadable) { try await self.admin.bounce(id, reason: "x", operator: "a") { _, _ in nil } }
        await assertRefused(.quarantined) { try await self.admin.hold(id, reason: nil, operator: "a") }
        let after = try await snapshot()
        XCTAssertEqual(before, after, "refused actions change nothing")
        let listed = try await admin.list(QueueFilter(state: .quarantined))
        XCTAssertEqual(listed.map(\.id), [id])

        _ = try await redis.command("HSET", .init(keys.message(id)), "envelope", .init(good))
        let released = try await admin.release(id, operator: "a")
        XCTAssertEqual(released.from, "quarantine")
        XCTAssertEqual(released.to, Topic.accepted)
        let inQuarantine = try await redis.command("ZCARD", .init(keys.quarantine)).int
        XCTAssertEqual(inQuarantine, 0)
        let pending = try await store.pendingCount(Topic.accepted)
        XCTAssertEqual(pending, 1)
    }

    // MARK: Bounce

    func testBounceWritesRecipientStatesAndTheNDRInOneStep() async throws {
        let id = try await accept(recipients: ["x@y.example", "z@w.example", "d@y.example"])
        let later = Date().addingTimeInterval(3600)
        try await deferInEgress(id, states: [
            Recipient(address: "x@y.example", state: .deferred, attempts: 2, lastReply: "451 4.3.0 later", nextAttempt: later),
            Recipient(address: "d@y.example", state: .delivered, attempts: 1, lastReply: "250 ok"),
            Recipient(address: "z@w.example", state: .bounced, attempts: 1, lastReply: "550 5.1.1 No such user"),
        ])
        let seen = Box<[Recipient]>([])
        let result = try await admin.bounce(id, reason: "customer asked", operator: "alice") { message, bounced in
            seen.set(bounced)
            return Self.ndr(for: message, bounced: bounced)
        }
        XCTAssertEqual(Set(seen.get().map(\.address)), ["x@y.example", "z@w.example"],
                       "the NDR lists every bounced recipient, earlier ones too")
        let ndrID = try XCTUnwrap(result.ndr)
        let f = try await fields(id)
        XCTAssertEqual(f["state"], "done")
        XCTAssertNotNil(f["finished"])
        let x = try XCTUnwrap(f["rcpt:x@y.example"].flatMap(Recipient.decode(json:)))
        XCTAssertEqual(x.state, .bounced)
        XCTAssertEqual(x.lastReply, "550 5.0.0 Bounced by operator: customer asked")
        XCTAssertNil(x.nextAttempt)
        XCTAssertEqual(f["rcpt:d@y.example"].flatMap(Recipient.decode(json:))?.state, .delivered,
                       "a delivered recipient stays delivered")
        XCTAssertEqual(f["rcpt:z@w.example"].flatMap(Recipient.decode(json:))?.lastReply, "550 5.1.1 No such user")
        let left = try await store.pendingCount(Topic.outboundGood)
        XCTAssertEqual(left, 0)
        let ttl = try await redis.command("TTL", .init(keys.message(id))).int ?? -1
        XCTAssertTrue(ttl > 0 && ttl <= 100, "finished records expire")
        let bodyTTL = try await redis.command("TTL", .init(keys.body(id))).int ?? -1
        XCTAssertTrue(bodyTTL > 0 && bodyTTL <= 10)
        let types = try await eventTypes(id)
        XCTAssertEqual(types, ["accepted", "queue.bounced", "bounced", "ndr.sent"],
                       "one bounced event per recipient bounced now")
        // The NDR is a new message waiting for the scanner, due now.
        let ndrScore = try await redis.command("ZSCORE", .init(keys.pending(Topic.accepted)), .init(ndrID.rawValue))
        XCTAssertNotNil(ndrScore.string)
        let ndrMessage = try await store.load(ndrID)
        XCTAssertEqual(ndrMessage?.envelope.sender, "")
        XCTAssertEqual(ndrMessage?.envelope.recipients.map(\.address), ["a@b.example"])
        XCTAssertEqual(ndrMessage?.fields["state"], "accepted")
        let ndrTypes = try await eventTypes(ndrID)
        XCTAssertEqual(ndrTypes, ["accepted"])
        let due = try await store.claimExpired(topic: Topic.accepted, owner: "scanner", leaseMilliseconds: 1000, limit: 5)
        XCTAssertEqual(due, [ndrID])

        // A finished message cannot be bounced again, and nothing changes.
        let before = try await snapshot()
        await assertRefused(.finished) { try await self.admin.bounce(id, reason: "again", operator: "a") { _, _ in nil } }
        await assertRefused(.finished) { try await self.admin.hold(id, reason: nil, operator: "a") }
        await assertRefused(.finished) { try await self.admin.delete(id, reason: "x", operator: "a") }
        await assertRefused(.finished) { try await self.admin.requeue(id, stage: nil, operator: "a") }
        await assertRefused(.finished) { try await self.admin.release(id, operator: "a") }
        let after = try await snapshot()
        XCTAssertEqual(before, after)
    }

    func testBounceOfAHeldNullSenderMessageStoresNoNDR() async throws {
        let id = try await accept(sender: "", recipients: ["x@y.example"])
        _ = try await admin.hold(id, reason: nil, operator: "a")
        let result = try await admin.bounce(id, reason: "loop", operator: "a") { m, b in Self.ndr(for: m, bounced: b) }
        XCTAssertNil(result.ndr)
        let types = try await eventTypes(id)
        XCTAssertEqual(types, ["accepted", "queue.held", "queue.bounced", "bounced"])
        let held = try await redis.command("HLEN", .init(keys.held)).int
        XCTAssertEqual(held, 0, "a bounced message leaves the held set")
        let pending = try await store.pendingCount(Topic.accepted)
        XCTAssertEqual(pending, 0, "no NDR for <>")
    }

    func testBounceRefusesWhenEgressChangedARecipientInBetween() async throws {
        // The script compares every recipient field it rewrites; a stale plan writes nothing.
        let id = try await accept(recipients: ["x@y.example"])
        let item = try await admin.locate(id)
        var change = QueueAdmin.Change(action: "bounce", dest: .finish("done"), to: "done")
        change.check["rcpt:x@y.example"] = ""
        change.set["rcpt:x@y.example"] = Recipient(address: "x@y.example", state: .bounced).jsonString()
        _ = try await redis.command("HSET", .init(keys.message(id)), "rcpt:x@y.example",
                                    .init(Recipient(address: "x@y.example", state: .delivered).jsonString()))
        let before = try await snapshot()
        let ran = try await admin.run(item, change)
        XCTAssertNil(ran)
        let after = try await snapshot()
        XCTAssertEqual(before, after)
    }

    // MARK: Delete and requeue

    func testDeleteTakesItOutOfEveryQueueAndExpiresTheRecords() async throws {
        let queued = try await accept()
        let held = try await accept()
        _ = try await admin.hold(held, reason: nil, operator: "a")
        for id in [queued, held] {
            let result = try await admin.delete(id, reason: "spam run", operator: "alice")
            XCTAssertEqual(result.to, "deleted")
            let f = try await fields(id)
            XCTAssertEqual(f["state"], "deleted")
            XCTAssertEqual(f["deleted_reason"], "spam run")
            let ttl = try await redis.command("TTL", .init(keys.events(id))).int ?? -1
            XCTAssertTrue(ttl > 0 && ttl <= 100)
            let last = try await store.events(of: id).last
            XCTAssertEqual(last?.type, "queue.deleted")
            XCTAssertEqual(last?.facts["reason"], "spam run")
        }
        let summary = try await admin.summary()
        XCTAssertEqual(summary.pending[Topic.accepted], 0)
        XCTAssertEqual(summary.held, 0)
    }

    func testRequeueResetsDeferredRecipientsAndCanRestartThePipeline() async throws {
        let id = try await accept(recipients: ["x@y.example"])
        let later = Date().addingTimeInterval(3600)
        try await deferInEgress(id, states: [Recipient(address: "x@y.example", state: .deferred, attempts: 1,
                                                       lastReply: "451 later", nextAttempt: later)])
        let waiting = try await store.claimExpired(topic: Topic.outboundGood, owner: "e", leaseMilliseconds: 1000, limit: 5)
        XCTAssertEqual(waiting, [])
        let item = try await admin.locate(id)
        XCTAssertTrue(item.states.contains(.deferred) && item.states.contains(.queued))
        XCTAssertFalse(item.states.contains(.due))

        let result = try await admin.requeue(id, stage: nil, operator: "a")
        XCTAssertEqual(result.to, Topic.outboundGood)
        let r = try await fields(id)["rcpt:x@y.example"].flatMap(Recipient.decode(json:))
        XCTAssertEqual(r?.state, .deferred)
        XCTAssertNil(r?.nextAttempt, "egress tries it at once")
        XCTAssertEqual(r?.attempts, 1)
        let now = try await admin.locate(id)
        XCTAssertEqual(now.state, .due)
        // A worker that takes it now holds a live lease: requeue refuses (it would run twice).
        let taken = try await store.claimExpired(topic: Topic.outboundGood, owner: "e", leaseMilliseconds: 60_000, limit: 5)
        XCTAssertEqual(taken, [id])
        let before = try await snapshot()
        await assertRefused(.leased) { try await self.admin.requeue(id, stage: .accepted, operator: "a") }
        let after = try await snapshot()
        XCTAssertEqual(before, after)
        _ = try await store.release(id, topic: Topic.outboundGood, owner: "e", retryAfterMilliseconds: 60_000)

        let restarted = try await admin.requeue(id, stage: .accepted, operator: "a")
        XCTAssertEqual(restarted.from, Topic.outboundGood)
        XCTAssertEqual(restarted.to, Topic.accepted)
        let counts = try await admin.summary()
        XCTAssertEqual(counts.pending[Topic.accepted], 1)
        XCTAssertEqual(counts.pending[Topic.outboundGood], 0)
        let owners = try await redis.command("HLEN", .init(keys.owners(Topic.outboundGood))).int
        XCTAssertEqual(owners, 0)
        let last = try await store.events(of: id).last
        XCTAssertEqual(last?.type, "queue.requeued")
        XCTAssertEqual(last?.facts["from"], "mail.outbound.good")
        XCTAssertEqual(last?.facts["to"], "mail.accepted")
        let outbound = try await admin.requeue(id, stage: .outbound, operator: "a")
        XCTAssertEqual(outbound.to, Topic.outboundGood, "outbound = the egress of the recorded lane")
    }

    // MARK: Listing

    func testListFilters() async throws {
        let a = try await accept(sender: "Alice@Shop.example", recipients: ["x@dest.example"], customer: "shop")
        let b = try await accept(sender: "bob@other.example", recipients: ["y@else.example"], customer: "other")
        let c = try await accept(sender: "carol@shop.example", recipients: ["later@dest.example"], customer: "shop")
        try await deferInEgress(c, states: [Recipient(address: "later@dest.example", state: .deferred, attempts: 1,
                                                      nextAttempt: Date().addingTimeInterval(600))])
        _ = try await admin.hold(b, reason: nil, operator: "a")
        let d = try await accept(redriveAfter: 0)

        func ids(_ filter: QueueFilter) async throws -> [MessageID] { try await admin.list(filter).map(\.id) }
        let all = try await ids(QueueFilter())
        XCTAssertEqual(all, [a, b, c, d], "oldest first")
        let v1 = try await ids(QueueFilter(topic: Topic.outboundGood))
        XCTAssertEqual(v1, [c])
        let v2 = try await ids(QueueFilter(topic: Topic.accepted))
        XCTAssertEqual(v2, [a, b, d], "held from mail.accepted counts as that topic")
        let v3 = try await ids(QueueFilter(sender: "alice@shop.EXAMPLE"))
        XCTAssertEqual(v3, [a])
        let v4 = try await ids(QueueFilter(recipientDomain: "DEST.example"))
        XCTAssertEqual(v4, [a, c])
        let v5 = try await ids(QueueFilter(customer: "shop"))
        XCTAssertEqual(v5, [a, c])
        let v6 = try await ids(QueueFilter(state: .held))
        XCTAssertEqual(v6, [b])
        let v7 = try await ids(QueueFilter(state: .deferred))
        XCTAssertEqual(v7, [c])
        let v8 = try await ids(QueueFilter(state: .due))
        XCTAssertEqual(v8, [d])
        let v9 = try await ids(QueueFilter(state: .queued))
        XCTAssertEqual(v9, [a, c, d])
        let v10 = try await ids(QueueFilter(limit: 2))
        XCTAssertEqual(v10, [a, b])
        let v11 = try await ids(QueueFilter(customer: "shop", state: .deferred))
        XCTAssertEqual(v11, [c])
        let v12 = try await ids(QueueFilter(olderThanMilliseconds: 3_600_000))
        XCTAssertEqual(v12, [])
        try await Task.sleep(for: .milliseconds(30))
        let v13 = try await ids(QueueFilter(olderThanMilliseconds: 20))
        XCTAssertEqual(v13, [a, b, c, d])
        let listed = try await admin.list(QueueFilter(state: .held)).first
        XCTAssertEqual(listed?.envelope?.sender, "bob@other.example")
        XCTAssertEqual(listed?.recipients.count, 1)
        XCTAssertTrue((listed?.bodySize ?? 0) > 0)
        let summary = try await admin.summary()
        XCTAssertEqual(summary, QueueSummary(pending: [Topic.accepted: 2, Topic.scanned: 0, Topic.classified: 0,
                                                       Topic.outboundGood: 1, Topic.outboundBad: 0],
                                             held: 1, quarantined: 0))
    }

    // MARK: Bad input

    func testEveryRefusalLeavesRedisUnchanged() async throws {
        let queued = try await accept()
        let held = try await accept()
        _ = try await admin.hold(held, reason: nil, operator: "a")
        let unknown = MessageID.make()
        let before = try await snapshot()
        await assertRefused(.unknownMessage) { try await self.admin.hold(unknown, reason: nil, operator: "a") }
        await assertRefused(.unknownMessage) { try await self.admin.release(unknown, operator: "a") }
        await assertRefused(.unknownMessage) { try await self.admin.bounce(unknown, reason: "r", operator: "a") { _, _ in nil } }
        await assertRefused(.unknownMessage) { try await self.admin.delete(unknown, reason: "r", operator: "a") }
        await assertRefused(.unknownMessage) { try await self.admin.requeue(unknown, stage: nil, operator: "a") }
        await assertRefused(.notHeld) { try await self.admin.release(queued, operator: "a") }
        await assertRefused(.alreadyHeld) { try await self.admin.hold(held, reason: nil, operator: "a") }
        let after = try await snapshot()
        XCTAssertEqual(before, after, "a refused action writes nothing")
        let unknownItem = try await admin.locate(unknown)
        XCTAssertFalse(unknownItem.exists)
    }
}

/// A tiny lock box for values a @Sendable test closure reports back.
final class Box<Value: Sendable>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func get() -> Value { lock.lock(); defer { lock.unlock() }; return value }
    func set(_ new: Value) { lock.lock(); defer { lock.unlock() }; value = new }
}
