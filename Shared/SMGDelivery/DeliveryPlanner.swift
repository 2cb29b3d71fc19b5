public import SMGCore
public import SMTPProtocol
public import SMGNDR
public import SMGStore
public import Foundation

/// What one delivery attempt said about one recipient, typed (no reply text is re-parsed).
public enum AttemptOutcome: Sendable, Hashable {
    /// A reply from a remote server (`remoteMTA` = its name) or the gateway's own reply for a
    /// failure before any server answered (no route, DNS, every address unreachable).
    case reply(SMTPReply, remoteMTA: String?)
    /// Not tried this time for a local reason that is nobody's fault (destination concurrency or
    /// rate limit, a drained pool): retried after `after`, the attempt is not counted (but
    /// `maxLifetime` still ends it).
    case postponed(SMTPReply, after: Duration)
}

/// The pure part of delivery (R18): recipients, typed outcomes, the clock and the retry
/// schedule in; each recipient's new state, its event, the stage transition and the NDR out.
///
/// Rules: 2xx → delivered. 5xx → bounced. 4xx (and the gateway's own temporary failures) →
/// deferred until the next attempt on `retrySchedule` (indexed by attempts so far, the last
/// step repeating), kept in Redis with the message so any egress of any site continues it;
/// still failing `maxLifetime` after acceptance → bounced. A postponed recipient keeps its
/// attempt count. When no recipient is open any more the message is done, and every bounced
/// recipient (from any attempt) is listed in one NDR.
public struct DeliveryPlanner: Sendable {
    public var retrySchedule: [Duration]
    public var maxLifetime: Duration
    /// nil: no delay notices.
    public var delayWarning: Duration?

    public init(retrySchedule: [Duration], maxLifetime: Duration, delayWarning: Duration? = nil) {
        precondition(!retrySchedule.isEmpty, "an empty retry schedule")
        self.retrySchedule = retrySchedule
        self.maxLifetime = maxLifetime
        self.delayWarning = delayWarning
    }

    public enum Verdict: Sendable, Hashable {
        case delivered
        case deferred(next: Date)
        case bounced(expired: Bool)
    }

    /// Applies `outcome` to `recipient`; returns the verdict (the caller writes its event).
    public func apply(_ outcome: AttemptOutcome, to recipient: inout Recipient, now: Date, receivedAt: Date) -> Verdict {
        switch outcome {
        case .postponed(let reply, let after):
            if now.timeIntervalSince(receivedAt) * 1000 >= Double(maxLifetime.milliseconds) {
                recipient.lastReply = reply.description
                recipient.state = .bounced
                recipient.nextAttempt = nil
                return .bounced(expired: true)
            }
            recipient.state = .deferred
            recipient.lastReply = reply.description
            let next = now.addingTimeInterval(Double(after.milliseconds) / 1000)
            recipient.nextAttempt = next
            return .deferred(next: next)
        case .reply(let reply, let remoteMTA):
            recipient.attempts += 1
            recipient.lastReply = reply.description
            recipient.remoteMTA = remoteMTA
            if reply.isPositiveCompletion {
                recipient.state = .delivered
                recipient.nextAttempt = nil
                return .delivered
            }
            let expired = now.timeIntervalSince(receivedAt) * 1000 >= Double(maxLifetime.milliseconds)
            if !reply.isPermanent && !expired {
                let wait = retrySchedule[min(recipient.attempts - 1, retrySchedule.count - 1)]
                let next = now.addingTimeInterval(Double(wait.milliseconds) / 1000)
                recipient.state = .deferred
                recipient.nextAttempt = next
                return .deferred(next: next)
            }
            recipient.state = .bounced
            recipient.nextAttempt = nil
            return .bounced(expired: !reply.isPermanent)
        }
    }

    /// What happens to the message after this attempt.
    public struct Plan: Sendable {
        public var transition: Transition
        /// Recipients for one failure NDR (only when the message is done).
        public var bounced: [DSNRecipient]
        /// Recipients for a "still trying" notice (their `delayNotified` should be set).
        public var delayed: [DSNRecipient]
    }

    public func plan(_ recipients: [Recipient], now: Date, receivedAt: Date) -> Plan {
        var delayed: [DSNRecipient] = []
        if let delayWarning, delayWarning.milliseconds > 0,
           now.timeIntervalSince(receivedAt) * 1000 >= Double(delayWarning.milliseconds) {
            delayed = recipients.filter { $0.state == .deferred && $0.delayNotified != true }.map {
                DSNRecipient(address: $0.address, action: "delayed", status: NDRSender.enhancedStatus(of: $0.lastReply),
                             diagnostic: $0.lastReply, remoteMTA: $0.remoteMTA)
            }
        }
        let waiting = recipients.compactMap { $0.state == .deferred ? $0.nextAttempt : nil }
        if let next = waiting.min() {
            let delay = max(0, Int(next.timeIntervalSince(now) * 1000))
            return Plan(transition: .retry(afterMilliseconds: delay), bounced: [], delayed: delayed)
        }
        let bounced = recipients.filter { $0.state == .bounced }.map {
            DSNRecipient(address: $0.address, status: NDRSender.enhancedStatus(of: $0.lastReply), diagnostic: $0.lastReply,
                         remoteMTA: $0.remoteMTA)
        }
        return Plan(transition: .done, bounced: bounced, delayed: [])
    }
}
