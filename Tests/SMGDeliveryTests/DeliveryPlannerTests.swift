import XCTest
import Foundation
@testable import SMGDelivery
import SMGCore
import SMTPProtocol

final class DeliveryPlannerTests: XCTestCase {
    let start = Date(timeIntervalSince1970: 1_800_000_000)
    lazy var planner = DeliveryPlanner(retrySchedule: [.seconds(60), .seconds(300)], maxLifetime: .seconds(3600),
                                       delayWarning: .seconds(600))

    func testOutcomesByReplyClass() {
        var r = Recipient(address: "a@x.test")
        XCTAssertEqual(planner.apply(.reply(SMTPReply(code: 451, enhanced: "4.7.1", "later"), remoteMTA: "mx.x.test"),
                                     to: &r, now: start, receivedAt: start), .deferred(next: start.addingTimeInterval(60)))
        XCTAssertEqual(r.attempts, 1)
        XCTAssertEqual(r.remoteMTA, "mx.x.test")
        // The schedule is indexed by attempts; its last step repeats.
        _ = planner.apply(.reply(SMTPReply(code: 421, "busy"), remoteMTA: nil), to: &r, now: start, receivedAt: start)
        XCTAssertEqual(r.nextAttempt, start.addingTimeInterval(300))
        _ = planner.apply(.reply(SMTPReply(code: 421, "busy"), remoteMTA: nil), to: &r, now: start, receivedAt: start)
        XCTAssertEqual(r.nextAttempt, start.addingTimeInterval(300))
        XCTAssertEqual(planner.apply(.reply(SMTPReply(code: 250, "ok"), remoteMTA: "mx"), to: &r, now: start, receivedAt: start),
                       .delivered)
        var b = Recipient(address: "b@x.test")
        XCTAssertEqual(planner.apply(.reply(SMTPReply(code: 550, enhanced: "5.1.1", "no"), remoteMTA: "mx"), to: &b, now: start,
                                     receivedAt: start), .bounced(expired: false))
    }

    func testExpiryBouncesTransientFailuresAndPostponedOnes() {
        let late = start.addingTimeInterval(3600)
        var r = Recipient(address: "a@x.test")
        XCTAssertEqual(planner.apply(.reply(SMTPReply(code: 451, "later"), remoteMTA: nil), to: &r, now: late, receivedAt: start),
                       .bounced(expired: true))
        var p = Recipient(address: "p@x.test")
        XCTAssertEqual(planner.apply(.postponed(SMTPReply(code: 451, "busy"), after: .seconds(5)), to: &p, now: start,
                                     receivedAt: start), .deferred(next: start.addingTimeInterval(5)))
        XCTAssertEqual(p.attempts, 0, "postponing is not an attempt")
        XCTAssertEqual(planner.apply(.postponed(SMTPReply(code: 451, "busy"), after: .seconds(5)), to: &p, now: late,
                                     receivedAt: start), .bounced(expired: true))
    }

    func testPlanRetriesAtTheEarliestThenNDRsEveryBounce() {
        var a = Recipient(address: "a@x.test"), b = Recipient(address: "b@y.test"), c = Recipient(address: "c@z.test")
        _ = planner.apply(.reply(SMTPReply(code: 550, enhanced: "5.1.1", "no such user"), remoteMTA: "mx.x.test"), to: &a,
                          now: start, receivedAt: start)
        _ = planner.apply(.reply(SMTPReply(code: 451, "later"), remoteMTA: nil), to: &b, now: start, receivedAt: start)
        _ = planner.apply(.reply(SMTPReply(code: 250, "ok"), remoteMTA: nil), to: &c, now: start, receivedAt: start)
        let waiting = planner.plan([a, b, c], now: start, receivedAt: start)
        XCTAssertEqual(waiting.transition, .retry(afterMilliseconds: 60_000))
        XCTAssertTrue(waiting.bounced.isEmpty, "no NDR while a recipient is still open")
        _ = planner.apply(.reply(SMTPReply(code: 554, enhanced: "5.7.1", "spam"), remoteMTA: "mx.y.test"), to: &b,
                          now: start, receivedAt: start)
        let done = planner.plan([a, b, c], now: start, receivedAt: start)
        XCTAssertEqual(done.transition, .done)
        XCTAssertEqual(done.bounced.map(\.address), ["a@x.test", "b@y.test"])
        XCTAssertEqual(done.bounced.map(\.remoteMTA), ["mx.x.test", "mx.y.test"])
        XCTAssertEqual(done.bounced.map(\.status), ["5.1.1", "5.7.1"])
        XCTAssertEqual(done.bounced.first?.diagnostic, "550 5.1.1 no such user")
    }

    func testDelayNoticeOnceAfterTheWarningTime() {
        var r = Recipient(address: "a@x.test")
        _ = planner.apply(.reply(SMTPReply(code: 451, "later"), remoteMTA: nil), to: &r, now: start, receivedAt: start)
        XCTAssertTrue(planner.plan([r], now: start.addingTimeInterval(599), receivedAt: start).delayed.isEmpty)
        XCTAssertEqual(planner.plan([r], now: start.addingTimeInterval(600), receivedAt: start).delayed.map(\.action), ["delayed"])
        r.delayNotified = true
        XCTAssertTrue(planner.plan([r], now: start.addingTimeInterval(900), receivedAt: start).delayed.isEmpty)
        let off = DeliveryPlanner(retrySchedule: [.seconds(60)], maxLifetime: .seconds(3600))
        XCTAssertTrue(off.plan([Recipient(address: "x@y", state: .deferred, nextAttempt: start)], now: start.addingTimeInterval(9999),
                               receivedAt: start).delayed.isEmpty)
    }

    func testReceivedHeadersAreCountedInTheHeaderOnly() {
        let msg = Array("Received: a\r\nreceived: b\r\nRECEIVED:c\r\nSubject: x\r\n\r\nReceived: in body\r\n".utf8)
        XCTAssertEqual(DeliveryWorker.receivedCount(msg), 3)
    }
}
