import XCTest
@testable import SMGDelivery
import SMGCore

final class DeliveryMetricsTests: XCTestCase {
    func event(_ type: String, _ facts: [String: JSONValue] = [:]) -> Event {
        Event(type: type, id: nil, site: "s1", process: "egress-good-1", facts: facts)
    }

    /// One count per recipient outcome; a postponement is not a deferral; other events do not count.
    func testRecipientOutcomesAreTalliedFromTheRecordedEvents() {
        let events = [
            event(EventType.redriven),
            event(EventType.delivered, ["recipient": "a@x.test"]),
            event(EventType.delivered, ["recipient": "b@x.test"]),
            event(EventType.deferred, ["recipient": "c@x.test", "reply": "451 4.3.0 later"]),
            event(EventType.deferred, ["recipient": "d@x.test", "postponed": true]),
            event(EventType.bounced, ["recipient": "e@x.test", "reason": "expired"]),
            event(EventType.stageError),
        ]
        XCTAssertEqual(DeliveryMetrics.tally(events), [.delivered: 2, .deferred: 1, .postponed: 1, .bounced: 1])
        XCTAssertEqual(DeliveryMetrics.tally([]), [:])
    }
}
