public import SMGCore
public import SMGConfig
public import SMGStore
public import Foundation

/// Configuration of the NDRs this gateway writes.
public enum NDRKeys {
    public static let domain = ConfigKey<String>.string(
        "ndr.domain", default: "localhost",
        help: "The gateway's mail domain: NDRs come from MAILER-DAEMON@<this domain>.",
        validate: { $0.isEmpty || $0.contains(" ") || $0.contains("@") ? "must be a domain name" : nil })
    public static let reportingMTA = ConfigKey<String>.string(
        "ndr.reporting_mta", default: "",
        help: "Name in the Reporting-MTA field of NDRs (RFC 3464); empty = ndr.domain.")

    public static let all: [AnyConfigKey] = [domain.erased, reportingMTA.erased]
}

/// Writes NDRs as new messages for the pipeline: from the gateway, so they pass the scanner,
/// classifier, signer and egress like any other message. Envelope sender `<>`, one recipient:
/// the original sender. A message with a null sender never gets one.
///
/// It does no I/O: a stage returns the NDR in its outcome and the runner stores it in the same
/// commit as the recipients' `bounced` states (verdicts as data). The NDR's id is derived from
/// the original's id and the kind of report, so a stage that runs twice for the same message
/// (redrive) stores it once (the commit skips a new message whose id exists).
public struct NDRSender: Sendable {
    public let domain: String
    public let reportingMTA: String
    /// Site and instance named in the NDR's `accepted` event and in `ndr.sent`.
    public let site: String
    public let instance: String

    public init(config: Config, site: String, instance: String) throws {
        domain = try config.get(NDRKeys.domain)
        let named = try config.get(NDRKeys.reportingMTA)
        reportingMTA = named.isEmpty ? domain : named
        self.site = site
        self.instance = instance
    }

    public init(domain: String, reportingMTA: String? = nil, site: String, instance: String) {
        self.domain = domain
        self.reportingMTA = reportingMTA ?? domain
        self.site = site
        self.instance = instance
    }

    /// The id of the NDR of kind `kind` (`virus`, `bounce`) for `original`: same time part,
    /// a different, deterministic random part.
    public static func ndrID(for original: MessageID, kind: String) -> MessageID {
        let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        var tail = ""
        for round in 0..<2 {
            for byte in Array("\(original.rawValue)/\(kind)/\(round)".utf8) {
                hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
            }
            var h = hash
            for _ in 0..<8 {
                tail.append(alphabet[Int(h & 31)])
                h >>= 5
            }
        }
        // The time prefix of a valid id is valid, and the tail uses only the alphabet.
        return MessageID(String(original.rawValue.prefix(10)) + tail) ?? original
    }

    /// The kind of the report for infected mail: never returns the message's content, whatever RET says.
    public static let virusKind = "virus"

    /// The report for `message` about `recipients`, due at once in the scanner's stage, and the
    /// `ndr.sent` event to record on the original. Nil for a null sender, and when no recipient
    /// wants a notice of this kind (RFC 3461 `NOTIFY`: `NEVER` suppresses all, a list without
    /// `FAILURE` suppresses failure reports; without NOTIFY: failure and delay, not success).
    /// `notice` says what the report is about; `key` tells reports of one kind apart (several
    /// success or delay notices for one message), keeping each id deterministic for redrives.
    /// A failure report returns the whole message when the sender asked with `RET=FULL`, except
    /// for infected mail (`virusKind`).
    public func make(for message: StoredMessage, recipients: [DSNRecipient], reason: String, kind: String,
                     notice: DSNNoticeKind = .failure, key: String? = nil,
                     now: Date = Date()) -> (message: NewMessage, sent: Event)? {
        let requested = recipients.compactMap { r -> DSNRecipient? in
            let original = message.envelope.recipients.first { $0.address == r.address }
            guard original?.wantsNotice(notice) ?? (notice != .success) else { return nil }
            var r = r
            if r.originalRecipient == nil { r.originalRecipient = original?.originalRecipient }
            return r
        }
        guard let dsn = DeliveryStatusNotification(
            originalSender: message.envelope.sender, originalID: message.id.rawValue, originalMessage: message.body,
            arrivalDate: message.envelope.submission.receivedAt, recipients: requested, reason: reason,
            domain: domain, reportingMTA: reportingMTA, envelopeID: message.envelope.envelopeID,
            returnFullMessage: notice == .failure && message.envelope.dsnReturn == "FULL" && kind != Self.virusKind)
        else { return nil }
        let id = Self.ndrID(for: message.id, kind: key.map { "\(kind)/\($0)" } ?? kind)
        let body = dsn.render(messageID: "\(id.rawValue)@\(domain)", date: now)
        let ndr = Self.gatewayMessage(id: id, to: dsn.to, customer: message.envelope.customer, body: body,
                                      facts: ["ndr_for": .string(message.id.rawValue), "kind": .string(kind)],
                                      site: site, instance: instance, now: now)
        let sent = Event(type: EventType.ndrSent, id: message.id, site: site, process: instance, facts: [
            "ndr": .string(id.rawValue), "to": .string(dsn.to), "kind": .string(kind),
            "recipients": .array(requested.map { .string($0.address) }),
        ])
        return (ndr, sent)
    }

    /// A message the gateway writes itself (an NDR, an operator notice) from the null sender to
    /// one address, due at once in the scanner's stage, with its `accepted` event (`facts` added):
    /// `Envelope.isGatewayWritten` holds for it.
    public static func gatewayMessage(id: MessageID, to address: String, customer: String?, body: [UInt8],
                                      facts: [String: JSONValue], site: String, instance: String, now: Date) -> NewMessage {
        let submission = SubmissionFacts(clientAddress: "", heloName: nil, tls: false, authenticatedAs: nil,
                                         site: site, ingress: instance, receivedAt: now, size: body.count)
        let envelope = Envelope(customer: customer, sender: "", recipients: [Recipient(address: address)],
                                submission: submission)
        var all: [String: JSONValue] = ["sender": "", "recipients": 1, "size": .int(body.count)]
        all.merge(facts) { _, new in new }
        let accepted = Event(type: EventType.accepted, id: id, site: site, process: instance, facts: all)
        return NewMessage(id: id, envelope: envelope, body: body, accepted: accepted, topic: Topic.accepted)
    }
}
