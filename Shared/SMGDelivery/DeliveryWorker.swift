public import SMGCore
public import SMGRuntime
public import SMGStore
public import SMTPClient
public import SMGNDR
import SMTPProtocol
import NIOCore
import Logging
import Foundation

/// Configuration keys of the delivery engine (good and bad egress share them; each runs with
/// its own file: its own source address, HELO name and topic).
public enum DeliveryKeys {
    public static let heloName = ConfigKey<String>.string(
        "egress.helo_name", default: "localhost", help: "Name this egress says in EHLO (must match its IP's PTR in production).")
    public static let sourceAddress = ConfigKey<String>.string(
        "egress.source_address", default: "", help: "Local IP to send from (good and bad egress use different ones); empty = any.")
    public static let routes = ConfigMapKey(
        "egress.routes", help: "Static next hops: domain (or .parent, or *) → host:port; like Postfix transport maps.")
    public static let defaultPort = ConfigKey<Int>.int(
        "egress.port", default: 25, range: 1...65535, help: "Port of a next hop when a route gives none.")
    public static let retrySchedule = ConfigKey<[Duration]>.durations(
        "egress.retry_schedule", default: "1m,5m,15m,30m,1h,2h,4h",
        help: "Waits between delivery attempts of a deferred recipient; the last one repeats.")
    public static let maxLifetime = ConfigKey.duration(
        "egress.max_lifetime", default: "5d", min: .seconds(1), max: .seconds(30 * 86400),
        help: "A recipient still deferred this long after acceptance is bounced.")
    public static let lease = ConfigKey.duration(
        "egress.lease", default: "60s", min: .seconds(3), max: .seconds(86400),
        help: "How long a message stays owned by an egress without a renewal (renewed every third of it while SMTP sessions run; confirmed before every DATA); a killed or stalled egress's messages are taken over after it.")
    public static let connectTimeout = ConfigKey.duration(
        "egress.connect_timeout", default: "30s", min: .milliseconds(100), max: .seconds(600), help: "TCP connect timeout.")
    public static let commandTimeout = ConfigKey.duration(
        "egress.command_timeout", default: "5m", min: .milliseconds(100), max: .seconds(3600),
        help: "Wait for each SMTP reply (RFC 5321 §4.5.3.2 suggests 5 minutes).")
    public static let dataTimeout = ConfigKey.duration(
        "egress.data_timeout", default: "10m", min: .milliseconds(100), max: .seconds(3600),
        help: "Wait for the reply to the end of DATA (RFC 5321: 10 minutes).")

    public static let all: [AnyConfigKey] = [
        heloName.erased, sourceAddress.erased, routes.erased, defaultPort.erased, retrySchedule.erased,
        maxLifetime.erased, lease.erased, connectTimeout.erased, commandTimeout.erased, dataTimeout.erased,
    ]
}

/// The delivery engine: one SMTP transaction per next hop, one outcome per recipient.
///
/// Per recipient: 2xx → `delivered`; 5xx → `bounced`; 4xx or no connection → `deferred` with
/// the next attempt on the retry schedule, until `egress.max_lifetime`, then `bounced`.
/// Only recipients that are not final yet are tried again. When the message is done and some
/// recipients bounced, one NDR lists them all (RFC 3464, through `ndr`; none for a null sender).
public struct DeliveryWorker: StageWorker {
    public let lane: Lane
    public let routes: RouteTable
    public let retrySchedule: [Duration]
    public let maxLifetime: Duration
    public let client: SMTPClientConfiguration
    public let ndr: NDRSender?

    public init(lane: Lane, config: Config, ndr: NDRSender? = nil) throws {
        self.lane = lane
        self.ndr = ndr
        do {
            routes = try RouteTable(config.get(DeliveryKeys.routes), defaultPort: try config.get(DeliveryKeys.defaultPort))
        } catch let error as RouteTable.ParseError {
            throw ConfigError(key: DeliveryKeys.routes.name, source: "config", problem: error.description)
        }
        retrySchedule = try config.get(DeliveryKeys.retrySchedule)
        maxLifetime = try config.get(DeliveryKeys.maxLifetime)
        let source = try config.get(DeliveryKeys.sourceAddress)
        client = SMTPClientConfiguration(
            heloName: try config.get(DeliveryKeys.heloName),
            connectTimeout: .milliseconds(Int64(try config.get(DeliveryKeys.connectTimeout).milliseconds)),
            greetingTimeout: .milliseconds(Int64(try config.get(DeliveryKeys.commandTimeout).milliseconds)),
            commandTimeout: .milliseconds(Int64(try config.get(DeliveryKeys.commandTimeout).milliseconds)),
            dataTimeout: .milliseconds(Int64(try config.get(DeliveryKeys.dataTimeout).milliseconds)),
            sourceAddress: source.isEmpty ? nil : source)
    }

    public func process(_ message: StoredMessage, context: StageContext) async throws -> StageOutcome {
        let id = message.id
        let now = Date()
        var recipients = message.recipients
        // Only recipients that are not final and whose own retry time has come (each deferred
        // recipient keeps its own backoff; the message wakes up at the earliest of them).
        let open = recipients.indices.filter {
            !recipients[$0].state.isFinal && (recipients[$0].nextAttempt.map { $0 <= now } ?? true)
        }
        var events: [Event] = []
        let expired = now.timeIntervalSince(message.envelope.submission.receivedAt) * 1000
            >= Double(maxLifetime.milliseconds)

        // One SMTP transaction per next hop.
        var byHop: [RouteTable.NextHop: [Int]] = [:]
        for index in open {
            if let hop = routes.lookup(domain: recipients[index].domain) {
                byHop[hop, default: []].append(index)
            } else {
                let reply = SMTPReply.noRoute(to: recipients[index].domain).description
                apply(reply: reply, transient: true, to: index, in: &recipients, now: now, expired: expired,
                      hop: nil, events: &events, id: id, context: context)
            }
        }
        var attempted = Set(open)
        var leaseLost = false
        for (hop, indices) in byHop.sorted(by: { $0.key.description < $1.key.description }) {
            // A lease lost (a stall, Redis away) stops the worker before its next side effect; what
            // it already delivered is still recorded.
            if !leaseLost, context.lease.isLost, !(await context.lease.confirm()) { leaseLost = true }
            if leaseLost {
                attempted.subtract(indices)
                continue
            }
            let addresses = indices.map { recipients[$0].address }
            let lease = context.lease
            let result = await SMTPClient.deliver(
                to: hop.host, port: hop.port, reversePath: message.envelope.sender, recipients: addresses,
                message: ByteBuffer(bytes: message.outgoingBody), configuration: client, group: context.eventLoopGroup,
                logger: context.logger, beforeData: { await lease.confirmBeforeSideEffect() })
            if result.abandonedBeforeData {
                context.logger.warning("lease lost before DATA; not sent", metadata: ["next_hop": .string(hop.description)])
                leaseLost = true
                attempted.subtract(indices)
                continue
            }
            let replies = Dictionary(result.recipients.map { ($0.recipient, $0.reply) }, uniquingKeysWith: { a, _ in a })
            events.append(context.event(EventType.deliveryAttempt, id: id, facts: [
                "lane": .string(lane.rawValue), "next_hop": .string(hop.description),
                "recipients": .array(addresses.map { .string($0) }), "tls": "none",
                "session": .string(result.sessionFailure.map { $0.description } ?? "ok"),
            ]))
            for index in indices {
                let address = recipients[index].address
                let reply = replies[address]
                    ?? SMTPReply(.noResultForRecipient)
                apply(reply: reply.description, transient: !reply.isPermanent && !reply.isPositiveCompletion,
                      delivered: reply.isPositiveCompletion, to: index, in: &recipients, now: now, expired: expired,
                      hop: hop, events: &events, id: id, context: context)
            }
        }

        var fields: [String: String] = [:]
        for index in open where attempted.contains(index) {
            fields["rcpt:\(recipients[index].address)"] = recipients[index].jsonString()
        }
        let delivered = recipients.indices.contains { attempted.contains($0) && recipients[$0].state == .delivered }
        if leaseLost {
            // Another egress owns the message now; the runner records what was delivered.
            return StageOutcome(events: events, fields: fields, transition: .retry(afterMilliseconds: 0),
                                externalEffects: delivered)
        }
        let waiting = recipients.compactMap { $0.state == .deferred ? $0.nextAttempt : nil }
        if let next = waiting.min() {
            let delay = max(0, Int(next.timeIntervalSince(now) * 1000))
            return StageOutcome(events: events, fields: fields, transition: .retry(afterMilliseconds: delay),
                                externalEffects: delivered)
        }
        // Done: one NDR for every recipient that bounced, in this attempt or an earlier one.
        let bounced = recipients.filter { $0.state == .bounced }
        var newMessages: [NewMessage] = []
        if let ndr, !bounced.isEmpty {
            let report = bounced.map { r in
                DSNRecipient(address: r.address, status: NDRSender.enhancedStatus(of: r.lastReply), diagnostic: r.lastReply)
            }
            let reason = bounced.count == 1 ? "the receiving mail server refused it or it could not be delivered in time."
                : "the receiving mail servers refused it or it could not be delivered in time."
            if let (ndrMessage, sent) = ndr.make(for: message, recipients: report, reason: reason, kind: "bounce") {
                newMessages.append(ndrMessage)
                events.append(sent)
            }
        }
        return StageOutcome(events: events, fields: fields, newMessages: newMessages, transition: .done,
                            externalEffects: delivered)
    }

    func apply(reply: String, transient: Bool, delivered: Bool = false, to index: Int, in recipients: inout [Recipient],
               now: Date, expired: Bool, hop: RouteTable.NextHop?, events: inout [Event], id: MessageID,
               context: StageContext) {
        recipients[index].attempts += 1
        recipients[index].lastReply = reply
        var facts: [String: JSONValue] = [
            "recipient": .string(recipients[index].address), "reply": .string(reply),
            "attempts": .int(recipients[index].attempts), "lane": .string(lane.rawValue),
        ]
        if let hop { facts["next_hop"] = .string(hop.description) }
        if delivered {
            recipients[index].state = .delivered
            recipients[index].nextAttempt = nil
            events.append(context.event(EventType.delivered, id: id, facts: facts))
        } else if transient && !expired {
            let wait = retrySchedule[min(recipients[index].attempts - 1, retrySchedule.count - 1)]
            let next = now.addingTimeInterval(Double(wait.milliseconds) / 1000)
            recipients[index].state = .deferred
            recipients[index].nextAttempt = next
            facts["next_attempt"] = .string(Timestamp.format(next))
            events.append(context.event(EventType.deferred, id: id, facts: facts))
        } else {
            recipients[index].state = .bounced
            recipients[index].nextAttempt = nil
            if transient { facts["reason"] = "expired: still failing after egress.max_lifetime" }
            events.append(context.event(EventType.bounced, id: id, facts: facts))
        }
    }
}
