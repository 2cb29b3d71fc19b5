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
        let writer = NDRSender(domain: domain, reportingMTA: reportingMTA.isEmpty ? nil : reportingMTA, site: site,
                               instance: process)
        guard let (ndr, sent) = writer.make(for: message, recipients: report, reason: reason, kind: kind, now: now)
        else { return nil }
        return NDRMessage(message: ndr, sent: sent)
    }

    /// The enhanced status code (RFC 3463) of a reply like `550 5.1.1 No such user`; `default` when it has none.
    public static func enhancedStatus(of reply: String?, default fallback: String = "5.0.0") -> String {
        let words = (reply ?? "").split(separator: " ")
        if words.count > 1 {
            let parts = words[1].split(separator: ".")
            if parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }),
               ["2", "4", "5"].contains(parts[0]) {
                return String(words[1])
            }
        }
        return fallback
    }
}
