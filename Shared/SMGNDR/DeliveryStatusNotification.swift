public import Foundation
import SMGCore
import SMGMIME

/// One recipient's entry in a DSN (RFC 3464 §2.3).
public struct DSNRecipient: Sendable, Hashable {
    /// The address the message was for (`Final-Recipient: rfc822; …`).
    public var address: String
    /// `failed`, `delayed`, `delivered`, `relayed` or `expanded` (§2.3.3).
    public var action: String
    /// Enhanced status code (RFC 3463), e.g. `5.7.1`.
    public var status: String
    /// The reply or reason (`Diagnostic-Code: smtp; …`), nil when there is none.
    public var diagnostic: String?
    /// The next hop that gave the reply (`Remote-MTA: dns; …`).
    public var remoteMTA: String?
    /// The client's ORCPT, decoded (`rfc822;user@example.org`): `Original-Recipient` (§2.3.1).
    public var originalRecipient: String?

    public init(address: String, action: String = "failed", status: String, diagnostic: String? = nil,
                remoteMTA: String? = nil, originalRecipient: String? = nil) {
        self.address = address
        self.action = action
        self.status = status
        self.diagnostic = diagnostic
        self.remoteMTA = remoteMTA
        self.originalRecipient = originalRecipient
    }
}

/// A delivery status notification: an RFC 3464 `multipart/report; report-type=delivery-status`
/// with three parts — a human-readable explanation, the `message/delivery-status` part, and the
/// original message's headers (`text/rfc822-headers`, RFC 6522); the whole message
/// (`message/rfc822`) only in a failure report when the sender asked for it with `RET=FULL`
/// (RFC 3461 §4.3) and the caller allows it (never for infected mail).
///
/// It is addressed to the original envelope sender, from `MAILER-DAEMON@<domain>`, and is sent
/// with the null reverse path `<>`, so that it can itself never cause another NDR (RFC 5321 §4.5.5).
public struct DeliveryStatusNotification: Sendable {
    public var from: String
    public var to: String
    public var subject: String
    /// The explanation for people: what happened, to which recipients, and why.
    public var humanReadable: String
    /// `Reporting-MTA: dns; <name>` — this gateway.
    public var reportingMTA: String
    /// The gateway's id of the original message (`X-SMG-Original-Id`, and `X-SMG-Message-Id` in the report).
    public var originalID: String
    /// The client's ENVID (RFC 3461 §4.4): `Original-Envelope-Id`, which is absent without one (RFC 3464 §2.2.1).
    public var envelopeID: String?
    public var arrivalDate: Date
    public var recipients: [DSNRecipient]
    /// The original header section (with its line breaks).
    public var originalHeaders: [UInt8]
    /// The whole original message, when it is returned (`RET=FULL` in a failure report); else nil.
    public var returnedMessage: [UInt8]?

    /// Nil when the original sender is the null sender: bounces are never answered (no loops).
    public init?(originalSender: String, originalID: String, originalMessage: [UInt8], arrivalDate: Date,
                 recipients: [DSNRecipient], reason: String, domain: String, reportingMTA: String,
                 envelopeID: String? = nil, returnFullMessage: Bool = false) {
        guard !originalSender.isEmpty, originalSender != "<>", !recipients.isEmpty else { return nil }
        from = "MAILER-DAEMON@\(domain)"
        to = originalSender
        let actions = Set(recipients.map(\.action))
        let failed = actions == ["failed"]
        switch actions {
        case ["failed"]: subject = "Undelivered Mail Returned to Sender"
        case ["delayed"]: subject = "Delayed Mail (still being retried)"
        case ["relayed"], ["delivered"], ["relayed", "delivered"]: subject = "Successful Mail Delivery Report"
        default: subject = "Delivery Status Notification"
        }
        self.reportingMTA = reportingMTA
        self.originalID = originalID
        self.envelopeID = envelopeID
        self.arrivalDate = arrivalDate
        self.recipients = recipients
        originalHeaders = MIMEParser.headerSection(originalMessage)
        returnedMessage = failed && returnFullMessage ? originalMessage : nil
        let original = MIMEParser.parse(Array(originalHeaders) + [13, 10])
        var text = "This is the mail system at \(reportingMTA).\r\n\r\n"
        switch actions {
        case ["failed"]: text += "Your message could not be delivered to one or more recipients.\r\n\r\n"
        case ["delayed"]: text += "Your message has not been delivered yet to one or more recipients.\r\n\r\n"
        case ["relayed"], ["delivered"], ["relayed", "delivered"]:
            text += "Your message was handed on as you asked to be told. The receiving system does not report\r\n"
            text += "delivery status itself, so this is the last notice you will get about these recipients.\r\n\r\n"
        default: text += "This is the status of your message for one or more recipients.\r\n\r\n"
        }
        if let subject = original.headers["subject"] {
            text += "Subject of your message: \(Self.oneLine(MIMEDecoding.encodedWords(subject)))\r\n"
        }
        text += "Received by the gateway: \(Timestamp.rfc5322(arrivalDate)) (id \(originalID))\r\n\r\n"
        text += "Reason: \(Self.oneLine(reason))\r\n\r\n"
        for r in recipients {
            text += "<\(r.address)>: \(r.action)"
            if let d = r.diagnostic { text += ": \(Self.oneLine(d))" }
            text += "\r\n"
        }
        text += returnedMessage == nil ? "\r\nThe headers of your message are attached; its content is not.\r\n"
            : "\r\nYour message is attached.\r\n"
        humanReadable = text
    }

    /// The complete message (headers and body), CRLF line ends, 7-bit where the input is.
    public func render(messageID: String, date: Date = Date(), boundary: String? = nil) -> [UInt8] {
        let boundary = boundary ?? "=_smg-dsn-\(originalID)"
        var out = ""
        out += "From: Mail Delivery System <\(from)>\r\n"
        out += "To: <\(to)>\r\n"
        out += "Subject: \(subject)\r\n"
        out += "Date: \(Timestamp.rfc5322(date))\r\n"
        out += "Message-ID: <\(messageID)>\r\n"
        out += "Auto-Submitted: auto-replied\r\n"
        out += "X-SMG-Original-Id: \(originalID)\r\n"
        out += "MIME-Version: 1.0\r\n"
        out += "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"\(boundary)\"\r\n"
        out += "\r\n"
        out += "This is a MIME-encapsulated message.\r\n\r\n"
        out += "--\(boundary)\r\n"
        out += "Content-Description: Notification\r\n"
        out += "Content-Type: text/plain; charset=utf-8\r\n"
        out += "Content-Transfer-Encoding: 8bit\r\n\r\n"
        out += humanReadable
        out += "\r\n--\(boundary)\r\n"
        out += "Content-Description: Delivery report\r\n"
        out += "Content-Type: message/delivery-status\r\n\r\n"
        // Per-message fields (§2.2), an empty line, then one block per recipient (§2.3).
        if let envelopeID { out += "Original-Envelope-Id: \(Self.ascii(envelopeID))\r\n" }
        out += "Reporting-MTA: dns; \(reportingMTA)\r\n"
        out += "X-SMG-Message-Id: \(originalID)\r\n"
        out += "Arrival-Date: \(Timestamp.rfc5322(arrivalDate))\r\n"
        for r in recipients {
            out += "\r\n"
            if let original = r.originalRecipient, let semi = original.firstIndex(of: ";") {
                let type = original[..<semi], address = original[original.index(after: semi)...]
                out += "Original-Recipient: \(type); \(Self.ascii(String(address)))\r\n"
            }
            out += "Final-Recipient: rfc822; \(Self.ascii(r.address))\r\n"
            out += "Action: \(r.action)\r\n"
            out += "Status: \(r.status)\r\n"
            if let remote = r.remoteMTA { out += "Remote-MTA: dns; \(Self.ascii(remote))\r\n" }
            if let d = r.diagnostic { out += "Diagnostic-Code: smtp; \(Self.ascii(d))\r\n" }
        }
        out += "\r\n--\(boundary)\r\n"
        var bytes: [UInt8]
        if let returnedMessage {
            out += "Content-Description: Undelivered message\r\n"
            out += "Content-Type: message/rfc822\r\n"
            if returnedMessage.contains(where: { $0 >= 0x80 }) { out += "Content-Transfer-Encoding: 8bit\r\n" }
            out += "\r\n"
            bytes = Array(out.utf8)
            bytes += returnedMessage
            if let last = returnedMessage.last, last != 10 { bytes += [13, 10] }
        } else {
            let failed = recipients.allSatisfy { $0.action == "failed" }
            out += "Content-Description: \(failed ? "Undelivered message headers" : "Message headers")\r\n"
            out += "Content-Type: text/rfc822-headers\r\n\r\n"
            bytes = Array(out.utf8)
            bytes += originalHeaders
            if let last = originalHeaders.last, last != 10 { bytes += [13, 10] }
        }
        bytes += Array("\r\n--\(boundary)--\r\n".utf8)
        return bytes
    }

    /// One line of printable US-ASCII: `message/delivery-status` is 7-bit (RFC 3464 §2.1);
    /// anything else (a UTF-8 file name in a reply) becomes `?`.
    static func ascii(_ text: String) -> String {
        String(String.UnicodeScalarView(oneLine(text).unicodeScalars.map { $0.value >= 0x20 && $0.value < 0x7F ? $0 : "?" }))
    }

    static func oneLine(_ text: String) -> String {
        // By scalar: "\r\n" is one Character in Swift and would slip through a Character test.
        String(String.UnicodeScalarView(text.unicodeScalars.map { $0 == "\r" || $0 == "\n" ? " " : $0 }))
            .trimmingCharacters(in: .whitespaces)
    }
}
