public import SMGCore
public import SMGStore
public import Foundation

/// A plain-text notice from the gateway to its operators' mailbox (a braked account, later a
/// blacklisting), written as a message of the pipeline: it is scanned, signed with the gateway's
/// own domain (`dkim.own_domain`) and delivered like any other, from the null sender so nothing
/// ever answers it automatically.
public enum OperatorNotice {
    /// `about`: the message the notice is about (its id seeds the notice's id, so a redrive writes
    /// the same notice again instead of a second one); `kind` tells notices about it apart.
    public static func make(about: MessageID, kind: String, to mailbox: String, subject: String, text: String,
                            domain: String, site: String, instance: String, now: Date = Date()) -> NewMessage {
        let id = NDRSender.ndrID(for: about, kind: "notice/\(kind)")
        var out = "From: Mail Gateway <postmaster@\(domain)>\r\n"
        out += "To: <\(mailbox)>\r\n"
        out += "Subject: \(ascii(subject))\r\n"
        out += "Date: \(Timestamp.rfc5322(now))\r\n"
        out += "Message-ID: <\(id.rawValue)@\(domain)>\r\n"
        out += "Auto-Submitted: auto-generated\r\n"
        out += "MIME-Version: 1.0\r\n"
        out += "Content-Type: text/plain; charset=utf-8\r\n"
        out += "Content-Transfer-Encoding: 8bit\r\n\r\n"
        // Stored as the message's octets: egress dot-stuffs when it sends, like every message.
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) { out += line + "\r\n" }
        return NDRSender.gatewayMessage(id: id, to: mailbox, customer: nil, body: Array(out.utf8),
                                        facts: ["notice_for": .string(about.rawValue), "kind": .string(kind)],
                                        site: site, instance: instance, now: now)
    }

    static func ascii(_ text: String) -> String {
        String(text.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 ? Character($0) : "?" })
    }
}
