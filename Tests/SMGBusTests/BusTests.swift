import XCTest
import Logging
import SMGBus
import SMGTestSupport

private let logger: Logger = {
    var l = Logger(label: "smg.bus.tests")
    l.logLevel = .error
    return l
}()

private func msg(_ topic: String, _ text: String) -> BusMessage {
    BusMessage(topic: topic, payload: Array(text.utf8))
}

/// Receives until nothing arrives for `idle`; bounded overall by `limit` messages.
private func drain(_ puller: BusPuller, idle: Duration = .milliseconds(500), limit: Int = 100_000) async -> [BusMessage] {
    var out: [BusMessage] = []
    while out.count < limit {
        guard let m = try? await withTimeout(idle, "receive", { try await puller.receive() }) else { break }
        out.append(m)
    }
    return out
}

private func receive(_ puller: BusPuller, within limit: Duration = .seconds(5)) async throws -> BusMessage? {
    try await withTimeout(limit, "receive") { try await puller.receive() }
}

private func receive(_ sub: TapSubscriber, within limit: Duration = .seconds(5)) async throws -> BusMessage? {
    try await withTimeout(limit, "receive") { try await sub.receive() }
}

final class BusPipelineTests: XCTestCase {
    func testPushPullRoundTrip() async throws {
        let ctx = try ZMQContext()
        let pusher = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        XCTAssertTrue(pusher.endpoint.hasPrefix("tcp://127.0.0.1:"), pusher.endpoint)
        XCTAssertFalse(pusher.endpoint.hasSuffix("*"), pusher.endpoint)
        let puller = try BusPuller(context: ctx, logger: logger)
        try await puller.connect(pusher.endpoint)
        let sent = await pusher.send(msg("mail.accepted", "01HXYZ"), timeout: .seconds(5))
        XCTAssertTrue(sent)
        let got = try await receive(puller)
        XCTAssertEqual(got, msg("mail.accepted", "01HXYZ"))
        await puller.close()
        await pusher.close()
    }

    func testBinaryPayloadsIntact() async throws {
        let ctx = try ZMQContext()
        let pusher = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        let puller = try BusPuller(context: ctx, logger: logger)
        try await puller.connect(pusher.endpoint)
        var big = [UInt8](repeating: 0, count: 2 * 1024 * 1024)
        for i in big.indices { big[i] = UInt8(truncatingIfNeeded: i &* 7 &+ i >> 9) }
        let messages = [
            BusMessage(topic: "bin", payload: Array(0...255)),
            BusMessage(topic: "bin", payload: [0, 0, 13, 10, 0]),
            BusMessage(topic: "", payload: []),
            BusMessage(topic: "ünïcødé.topic", payload: big),
        ]
        for m in messages {
            let ok = await pusher.send(m, timeout: .seconds(5))
            XCTAssertTrue(ok)
        }
        for m in messages {
            let got = try await receive(puller)
            XCTAssertEqual(got?.topic, m.topic)
            XCTAssertEqual(got?.payload, m.payload)
        }
        await puller.close()
        await pusher.close()
    }

    func testOnePusherTwoPullersShareTheWork() async throws {
        let ctx = try ZMQContext()
        let pusher = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        let a = try BusPuller(context: ctx, logger: logger)
        let b = try BusPuller(context: ctx, logger: logger)
        try await a.connect(pusher.endpoint)
        try await b.connect(pusher.endpoint)
        try await Task.sleep(for: .milliseconds(300)) // let both TCP connections complete
        for i in 0..<100 {
            let ok = await pusher.send(msg("work", "\(i)"), timeout: .seconds(5))
            XCTAssertTrue(ok)
        }
        async let ra = drain(a)
        async let rb = drain(b)
        let (gotA, gotB) = await (ra, rb)
        XCTAssertGreaterThan(gotA.count, 0)
        XCTAssertGreaterThan(gotB.count, 0)
        XCTAssertEqual(gotA.count + gotB.count, 100)
        let ids = Set((gotA + gotB).map { String(decoding: $0.payload, as: UTF8.self) })
        XCTAssertEqual(ids, Set((0..<100).map(String.init)))
        await a.close(); await b.close(); await pusher.close()
    }

    func testOnePullerConnectedToTwoPushers() async throws {
        let ctx = try ZMQContext()
        let p1 = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        let p2 = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        XCTAssertNotEqual(p1.endpoint, p2.endpoint)
        let puller = try BusPuller(context: ctx, logger: logger)
        try await puller.connect(p1.endpoint)
        try await puller.connect(p2.endpoint)
        let eps = await puller.connectedEndpoints
        XCTAssertEqual(eps, [p1.endpoint, p2.endpoint])
        for i in 0..<20 {
            let ok1 = await p1.send(msg("from.1", "\(i)"), timeout: .seconds(5))
            let ok2 = await p2.send(msg("from.2", "\(i)"), timeout: .seconds(5))
            XCTAssertTrue(ok1 && ok2)
        }
        let got = await drain(puller)
        XCTAssertEqual(got.filter { $0.topic == "from.1" }.count, 20)
        XCTAssertEqual(got.filter { $0.topic == "from.2" }.count, 20)
        // Per producer, order is kept.
        XCTAssertEqual(got.filter { $0.topic == "from.1" }.map { String(decoding: $0.payload, as: UTF8.self) },
                       (0..<20).map(String.init))

        try await puller.disconnect(p1.endpoint)
        let after = await puller.connectedEndpoints
        XCTAssertEqual(after, [p2.endpoint])
        await puller.close()
        let closed = await puller.connectedEndpoints
        XCTAssertEqual(closed, [])
        do {
            try await puller.connect(p1.endpoint)
            XCTFail("connect after close must throw")
        } catch let e as ZMQError {
            XCTAssertEqual(e.code, ZMQError.closedCode)
        }
        await p1.close(); await p2.close()
    }

    func testLateConnectingPullerStillGetsMessages() async throws {
        let ctx = try ZMQContext()
        let pusher = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        // The send starts while no consumer exists; it waits (up to its timeout) for one.
        async let sent = pusher.send(msg("late", "hello"), timeout: .seconds(5))
        try await Task.sleep(for: .milliseconds(300))
        let puller = try BusPuller(context: ctx, logger: logger)
        try await puller.connect(pusher.endpoint)
        let ok = await sent
        XCTAssertTrue(ok)
        let got = try await receive(puller)
        XCTAssertEqual(got, msg("late", "hello"))
        // And later messages too.
        let ok2 = await pusher.send(msg("late", "again"), timeout: .seconds(5))
        XCTAssertTrue(ok2)
        let got2 = try await receive(puller)
        XCTAssertEqual(got2, msg("late", "again"))
        await puller.close(); await pusher.close()
    }

    func testSendWithoutPeerReturnsFalseAfterTheTimeout() async throws {
        let ctx = try ZMQContext()
        let pusher = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        let (ok, elapsed) = try await timed { try await withTimeout(.seconds(5), "send") { await pusher.send(msg("t", "x"), timeout: .milliseconds(300)) } }
        XCTAssertFalse(ok)
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(290))
        XCTAssertLessThan(elapsed, .seconds(1))
        await pusher.close()
        let afterClose = await pusher.send(msg("t", "x"), timeout: .milliseconds(100))
        XCTAssertFalse(afterClose)
    }

    func testHighWaterMarkBackpressure() async throws {
        let ctx = try ZMQContext()
        let pusher = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", highWaterMark: 8, logger: logger)
        let puller = try BusPuller(context: ctx, highWaterMark: 8, logger: logger)
        try await puller.connect(pusher.endpoint)
        let first = await pusher.send(msg("bp", "0"), timeout: .seconds(5)) // wait for the peer
        XCTAssertTrue(first)
        // The puller does not read: queues (HWMs + kernel buffers) fill and send must fail.
        let payload = [UInt8](repeating: 0xAB, count: 64 * 1024)
        let ((accepted, refused), elapsed) = try await timed {
            try await withTimeout(.seconds(30), "filling the queues") { () -> (Int, Bool) in
                var accepted = 1
                for _ in 0..<20_000 {
                    if await pusher.send(BusMessage(topic: "bp", payload: payload), timeout: .milliseconds(100)) {
                        accepted += 1
                    } else {
                        return (accepted, true)
                    }
                }
                return (accepted, false)
            }
        }
        print("backpressure: \(accepted) x 64 KiB accepted before send returned false")
        XCTAssertTrue(refused, "send never reported backpressure after \(accepted) messages")
        XCTAssertLessThan(accepted, 2_000, "too much was buffered: \(accepted) x 64 KiB")
        XCTAssertLessThan(elapsed, .seconds(20))

        // Once the consumer reads, the producer can send again; nothing accepted was lost.
        var received = 0
        while received < accepted {
            guard let _ = try await receive(puller) else { break }
            received += 1
        }
        XCTAssertEqual(received, accepted)
        let again = await pusher.send(msg("bp", "again"), timeout: .seconds(5))
        XCTAssertTrue(again)
        let last = try await receive(puller)
        XCTAssertEqual(last, msg("bp", "again"))
        await puller.close(); await pusher.close()
    }

    func testReceiveHonoursCancellationAndLosesNothing() async throws {
        let ctx = try ZMQContext()
        let pusher = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        let puller = try BusPuller(context: ctx, logger: logger)
        try await puller.connect(pusher.endpoint)
        let task = Task { try await puller.receive() }
        try await Task.sleep(for: .milliseconds(200))
        let cancelledAt = ContinuousClock.now
        task.cancel()
        let result = await withTaskGroup(of: Result<BusMessage?, any Error>?.self) { group in
            group.addTask { await task.result }
            group.addTask { try? await Task.sleep(for: .seconds(2)); return nil }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
        let elapsed = ContinuousClock.now - cancelledAt
        guard case .failure(let error)? = result else { return XCTFail("expected cancellation, got \(String(describing: result))") }
        XCTAssertTrue(error is CancellationError, "\(error)")
        XCTAssertLessThan(elapsed, .milliseconds(200))

        // The socket still works and the next message is delivered to the next receive.
        let ok = await pusher.send(msg("c", "after-cancel"), timeout: .seconds(5))
        XCTAssertTrue(ok)
        let got = try await receive(puller)
        XCTAssertEqual(got, msg("c", "after-cancel"))

        // Already-cancelled task: throws at once.
        let pre = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await puller.receive()
        }
        let preResult = await pre.result
        if case .success = preResult { XCTFail("expected CancellationError") }
        await puller.close(); await pusher.close()
    }

    func testCloseWhileReceivePendingReturnsNilPromptly() async throws {
        let ctx = try ZMQContext()
        let puller = try BusPuller(context: ctx, logger: logger)
        let pusher = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        try await puller.connect(pusher.endpoint)
        let pending = Task { try await puller.receive() }
        try await Task.sleep(for: .milliseconds(150))
        let (_, closeTime) = try await timed { try await withTimeout(.seconds(5), "close") { await puller.close() } }
        XCTAssertLessThan(closeTime, .milliseconds(300), "close must not wait behind the pending receive")
        let result = try await withTimeout(.milliseconds(500), "pending receive") { try await pending.value }
        XCTAssertNil(result)
        let afterClose = try await puller.receive()
        XCTAssertNil(afterClose)
        await puller.close() // idempotent
        await pusher.close()
    }

    func testPendingReceiveDoesNotStarveConnect() async throws {
        let ctx = try ZMQContext()
        let p1 = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        let p2 = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        let puller = try BusPuller(context: ctx, logger: logger)
        try await puller.connect(p1.endpoint)
        let pending = Task { try await puller.receive() }
        try await Task.sleep(for: .milliseconds(100))
        let (_, connectTime) = try await timed { try await withTimeout(.seconds(5), "connect") { try await puller.connect(p2.endpoint) } }
        XCTAssertLessThan(connectTime, .milliseconds(300))
        let ok = await p2.send(msg("via.p2", "x"), timeout: .seconds(5))
        XCTAssertTrue(ok)
        let got = try await withTimeout(.seconds(5), "pending receive") { try await pending.value }
        XCTAssertEqual(got, msg("via.p2", "x"))
        await puller.close(); await p1.close(); await p2.close()
    }

    func testContextCloseEndsPendingReceive() async throws {
        let ctx = try ZMQContext()
        let puller = try BusPuller(context: ctx, logger: logger)
        let pending = Task { try await puller.receive() }
        try await Task.sleep(for: .milliseconds(100))
        ctx.close()
        let result = try await withTimeout(.seconds(1), "pending receive") { try await pending.value }
        XCTAssertNil(result)
    }

    func testOversizedFrameIsNeverDelivered() async throws {
        let ctx = try ZMQContext()
        // The producer enforces its own limit.
        let strict = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", maxMessageSize: 1024, logger: logger)
        let refused = await strict.send(BusMessage(topic: "big", payload: [UInt8](repeating: 1, count: 1025)), timeout: .seconds(1))
        XCTAssertFalse(refused)
        await strict.close()

        // A producer with a larger limit: the consumer's ZMQ_MAXMSGSIZE stops the frame.
        let pusher = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        let puller = try BusPuller(context: ctx, maxMessageSize: 1024, logger: logger)
        try await puller.connect(pusher.endpoint)
        let small = await pusher.send(msg("small", "ok"), timeout: .seconds(5))
        XCTAssertTrue(small)
        let first = try await receive(puller)
        XCTAssertEqual(first?.topic, "small")
        let big = await pusher.send(BusMessage(topic: "big", payload: [UInt8](repeating: 1, count: 4096)), timeout: .seconds(5))
        XCTAssertTrue(big) // queued; the puller's libzmq drops the connection on reading it
        do {
            let got = try await withTimeout(.milliseconds(500), "receive") { try await puller.receive() }
            XCTFail("oversized message must not be delivered, got \(String(describing: got?.topic))")
        } catch is TimeoutError {}
        await puller.close(); await pusher.close()
    }

    func testClosedPusherReleasesItsEndpoint() async throws {
        let ctx = try ZMQContext()
        let first = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        let endpoint = first.endpoint
        await first.close()
        await first.close() // idempotent
        // LINGER 0 + closed exactly once: the port can be bound again at once.
        var second: BusPusher?
        let deadline = ContinuousClock.now + .seconds(2)
        while second == nil && ContinuousClock.now < deadline {
            second = try? BusPusher(context: ctx, bind: endpoint, logger: logger)
            if second == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        let rebound = try XCTUnwrap(second, "endpoint \(endpoint) was not released")
        XCTAssertEqual(rebound.endpoint, endpoint)
        await rebound.close()
    }

    func testBindErrorsAreReported() throws {
        let ctx = try ZMQContext()
        let a = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        XCTAssertThrowsError(try BusPusher(context: ctx, bind: a.endpoint, logger: logger)) { error in
            let e = error as? ZMQError
            XCTAssertEqual(e?.code, EADDRINUSE, "\(error)")
            XCTAssertTrue(e?.operation.contains("zmq_bind") ?? false)
            XCTAssertFalse(e?.message.isEmpty ?? true)
        }
        XCTAssertThrowsError(try EventPublisher(context: ctx, bind: "bogus://x", logger: logger)) { error in
            XCTAssertNotNil(error as? ZMQError)
        }
    }
}

final class BusPubSubTests: XCTestCase {
    func testPrefixFilteringAndFanOut() async throws {
        let ctx = try ZMQContext()
        let publisher = try EventPublisher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        let delivery = try TapSubscriber(context: ctx, subscriptions: ["events.delivery", "sync"], logger: logger)
        let everything = try TapSubscriber(context: ctx, subscriptions: [""], logger: logger)
        try await delivery.connect(publisher.endpoint)
        try await everything.connect(publisher.endpoint)
        let eps = await delivery.connectedEndpoints
        XCTAssertEqual(eps, [publisher.endpoint])

        // Subscriptions propagate asynchronously ("slow joiner"): publish a sync marker until
        // both subscribers have seen one.
        var synced = (false, false)
        let deadline = ContinuousClock.now + .seconds(5)
        while !(synced.0 && synced.1) && ContinuousClock.now < deadline {
            await publisher.publish(msg("sync", ""))
            if !synced.0, let m = try? await withTimeout(.milliseconds(50), "sync", { try await delivery.receive() }) {
                synced.0 = m.topic == "sync"
            }
            if !synced.1, let m = try? await withTimeout(.milliseconds(50), "sync", { try await everything.receive() }) {
                synced.1 = m.topic == "sync"
            }
        }
        XCTAssertTrue(synced.0 && synced.1, "subscribers never joined")

        let topics = ["events.scanned.clean", "events.delivery.attempt", "mail.accepted", "events.deliveryx", "events.delivered"]
        for t in topics { await publisher.publish(msg(t, t)) }
        await publisher.publish(msg("sync.end", ""))

        func collect(_ s: TapSubscriber) async throws -> [String] {
            var out: [String] = []
            while let m = try await receive(s), m.topic != "sync.end" {
                if m.topic != "sync" { out.append(m.topic) }
            }
            return out
        }
        let gotDelivery = try await collect(delivery)
        let gotAll = try await collect(everything)
        XCTAssertEqual(gotDelivery, ["events.delivery.attempt", "events.deliveryx"])
        XCTAssertEqual(gotAll, topics)

        // Close while a receive is pending on a subscriber.
        let pending = Task { try await delivery.receive() }
        try await Task.sleep(for: .milliseconds(100))
        await delivery.close()
        let r = try await withTimeout(.milliseconds(500), "pending receive") { try await pending.value }
        XCTAssertNil(r)
        await everything.close()
        await publisher.close()
        let afterClose = await publisher.publish(msg("x", "y"))
        XCTAssertFalse(afterClose)
    }

    func testPublishNeverBlocksWithoutSubscribers() async throws {
        let ctx = try ZMQContext()
        let publisher = try EventPublisher(context: ctx, bind: "tcp://127.0.0.1:*", highWaterMark: 10, logger: logger)
        let sub = try TapSubscriber(context: ctx, subscriptions: [""], logger: logger)
        try await sub.connect(publisher.endpoint) // never reads
        let (_, elapsed) = await timed {
            for i in 0..<5_000 { await publisher.publish(BusMessage(topic: "e", payload: [UInt8](repeating: UInt8(i & 0xFF), count: 1024))) }
        }
        XCTAssertLessThan(elapsed, .seconds(10))
        await sub.close(); await publisher.close()
    }
}
