import SMGCore
import Metrics

/// What an egress reports about its recipients' outcomes, per lane:
/// `smg_delivery_recipients_total{lane, outcome}`, one increment per recipient attempt whose
/// outcome was recorded in Redis (`StageWorker.committed`), so a result discarded with a lost
/// lease is not counted twice. Outcomes:
/// - `delivered`: a 2xx from the next hop;
/// - `deferred`: a 4xx or the gateway's own temporary failure (no route, DNS, TLS policy not met),
///   retried on `egress.retry_schedule`;
/// - `postponed`: not tried for a local reason that is nobody's fault (destination concurrency or
///   rate limit, every pool address drained) — kept apart so that it does not look like failure;
/// - `bounced`: a 5xx, or still failing after `egress.max_lifetime` (an NDR goes to the sender).
/// The counters exist from the start (value 0), so rate() works before the first message.
struct DeliveryMetrics: Sendable {
    enum Outcome: String, CaseIterable, Sendable {
        case delivered, deferred, postponed, bounced
    }

    let counters: [Outcome: Counter]

    init(lane: Lane) {
        var counters: [Outcome: Counter] = [:]
        for outcome in Outcome.allCases {
            counters[outcome] = Counter(label: "smg_delivery_recipients_total",
                                        dimensions: [("lane", lane.rawValue), ("outcome", outcome.rawValue)])
        }
        self.counters = counters
    }

    /// Counts the recipient outcomes among `events`.
    func record(_ events: [Event]) {
        for (outcome, n) in Self.tally(events) where n > 0 { counters[outcome]?.increment(by: n) }
    }

    /// Recipient outcomes among `events`: one `delivered`, `deferred` or `bounced` event per
    /// recipient and attempt (`deferred` with the fact `postponed` is a postponement).
    static func tally(_ events: [Event]) -> [Outcome: Int] {
        var out: [Outcome: Int] = [:]
        for event in events {
            switch event.type {
            case EventType.delivered: out[.delivered, default: 0] += 1
            case EventType.deferred: out[event.facts["postponed"] == .bool(true) ? .postponed : .deferred, default: 0] += 1
            case EventType.bounced: out[.bounced, default: 0] += 1
            default: break
            }
        }
        return out
    }
}
