public import SMGCore
public import SMGStore
public import Foundation

extension NDRSender {
    /// The kind of the NDR for recipients an operator bounced (`smgctl queue bounce`); its id is
    /// `ndrID(for: original, kind: operatorBounceKind)`.
    public static let operatorBounceKind = "operator"

    /// Builds (does not store) the NDR for `message` listing `bounced`, for the bounce script to store
    /// in the same step as the bounce: envelope from `<>` to the original sender, the RFC 3464 report,
    /// its `accepted` event and the `ndr.sent` event for the original. Nil for a null sender or when
    /// nobody bounced. Used where there is no `GatewayProcess` (smgctl), so identity comes as arguments.
    public static func prepare(for message: StoredMessage, bounced: [Recipient], reason: String, kind: String,
                               domain: String, reportingMTA: String, site: String, process: String,
                               now: Date = Date()) -> NDRMessage? {
        let report = bounced.map { r in
            DSNRecipient(address: r.address, status: enhancedStatus(of: r.lastReply), diagnostic: r.lastReply)
        }
        guard let dsn = DeliveryStatusNotification(
            originalSender: message.envelope.sender, originalID: message.id.rawValue, originalMessage: message.body,
            arrivalDate: message.envelope.submission.receivedAt, recipients: report, reason: reason,
            domain: domain, reportingMTA: reportingMTA.isEmpty ? domain : reportingMTA)
        else { return nil }
        let id = ndrID(for: message.id, kind: kind)
        let body = dsn.render(messageID: "\(id.rawValue)@\(domain)", date: now)
        let submission = SubmissionFacts(clientAddress: "", heloName: nil, tls: false, authenticatedAs: nil,
                                         site: site, ingress: process, receivedAt: now, size: body.count)
        let envelope = Envelope(customer: message.envelope.customer, sender: "",
                                recipients: [Recipient(address: dsn.to)], submission: submission)
        let accepted = Event(type: EventType.accepted, id: id, site: site, process: process, time: now, facts: [
            "sender": "", "recipients": 1, "size": .int(body.count), "ndr_for": .string(message.id.rawValue),
            "kind": .string(kind),
        ])
        let sent = Event(type: EventType.ndrSent, id: message.id, site: site, process: process, time: now, facts: [
            "ndr": .string(id.rawValue), "to": .string(dsn.to), "kind": .string(kind),
            "recipients": .array(bounced.map { .string($0.address) }),
        ])
        return NDRMessage(id: id, envelope: envelope, body: body, accepted: accepted, sent: sent)
    }

    /// The enhanced status code (RFC 3463) of a reply like `550 5.1.1 No such user`; `5.0.0` when it has none.
    static func enhancedStatus(of reply: String?) -> String {
        let words = (reply ?? "").split(separator: " ")
        if words.count > 1 {
            let parts = words[1].split(separator: ".")
            if parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }),
               ["2", "4", "5"].contains(parts[0]) {
                return String(words[1])
            }
        }
        return "5.0.0"
    }
}
