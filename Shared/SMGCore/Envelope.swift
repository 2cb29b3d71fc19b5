public import Foundation

/// Where a message was submitted and how: the facts ingress knew when it accepted it.
public struct SubmissionFacts: Sendable, Codable, Hashable {
    public var clientAddress: String      // IP of the customer's server (never shown to recipients)
    public var heloName: String?
    public var tls: Bool
    public var tlsVersion: String?
    public var cipher: String?
    public var authenticatedAs: String?   // login name, nil when unauthenticated
    public var site: String
    public var ingress: String            // process that accepted it
    public var receivedAt: Date
    public var size: Int                  // bytes as received

    public init(clientAddress: String, heloName: String?, tls: Bool, tlsVersion: String? = nil, cipher: String? = nil,
                authenticatedAs: String?, site: String, ingress: String, receivedAt: Date, size: Int) {
        self.clientAddress = clientAddress
        self.heloName = heloName
        self.tls = tls
        self.tlsVersion = tlsVersion
        self.cipher = cipher
        self.authenticatedAs = authenticatedAs
        self.site = site
        self.ingress = ingress
        self.receivedAt = receivedAt
        self.size = size
    }
}

/// The state of one recipient. Every recipient ends as `delivered` or `bounced`;
/// while retrying it is `deferred` with the time of its next attempt.
public enum RecipientState: String, Sendable, Codable, Hashable {
    case pending, delivered, deferred, bounced

    public var isFinal: Bool { self == .delivered || self == .bounced }
}

/// The three kinds of delivery status notice a sender can ask for (RFC 3461 `NOTIFY`).
public enum DSNNoticeKind: String, Sendable, Hashable {
    case success = "SUCCESS", failure = "FAILURE", delay = "DELAY"
}

public struct Recipient: Sendable, Codable, Hashable {
    public var address: String
    public var state: RecipientState
    public var attempts: Int
    public var lastReply: String?
    public var nextAttempt: Date?
    /// The host that gave `lastReply` (`mx.example.net[192.0.2.1]`), nil when the reply was the
    /// gateway's own (no route, DNS failure, connection refused before a greeting).
    public var remoteMTA: String?
    /// A "still trying" notice was sent for this recipient (egress.delay_warning_after).
    public var delayNotified: Bool?
    /// RFC 3461 `NOTIFY` as the client gave it on RCPT: `["NEVER"]`, or some of `SUCCESS`,
    /// `FAILURE`, `DELAY`; nil when not given (failure and delay notices, no success notice).
    public var notify: [String]?
    /// RFC 3461 `ORCPT`, decoded: `rfc822;user@example.org`; nil when not given.
    public var originalRecipient: String?

    public init(address: String, state: RecipientState = .pending, attempts: Int = 0, lastReply: String? = nil,
                nextAttempt: Date? = nil, remoteMTA: String? = nil, notify: [String]? = nil,
                originalRecipient: String? = nil) {
        self.address = address
        self.state = state
        self.attempts = attempts
        self.lastReply = lastReply
        self.nextAttempt = nextAttempt
        self.remoteMTA = remoteMTA
        self.notify = notify
        self.originalRecipient = originalRecipient
    }

    /// Whether the sender asked for (or by default gets) a notice of this kind for this recipient.
    public func wantsNotice(_ kind: DSNNoticeKind) -> Bool {
        guard let notify else { return kind != .success }
        return notify.contains(kind.rawValue)
    }

    /// The domain part, lower-cased (`""` when there is none).
    public var domain: String { Address.domain(of: address) }

    /// The recipient's state as stored in `rcpt:<address>` (JSON, times in RFC 3339): the one
    /// encoding every writer and reader of that field uses.
    public func jsonString() -> String {
        String(decoding: (try? Event.encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    public static func decode(json: String) -> Recipient? {
        guard let value = try? JSONReader.parse(json.utf8) else { return nil }
        return try? Recipient(json: value, path: "recipient")
    }

    /// From the JSON `jsonString()` writes (and `Codable` would read).
    init(json: JSONValue, path: String) throws(JSONReadError) {
        let o = try JSONObjectReader(json, path: path)
        guard let state = RecipientState(rawValue: try o.string("state")) else { throw o.wrong("state", "a recipient state") }
        self.init(address: try o.string("address"), state: state, attempts: try o.int("attempts"),
                  lastReply: try o.optionalString("lastReply"), nextAttempt: try o.optionalDate("nextAttempt"),
                  remoteMTA: try o.optionalString("remoteMTA"), notify: try o.optionalStrings("notify"),
                  originalRecipient: try o.optionalString("originalRecipient"))
        delayNotified = try o.optionalBool("delayNotified")
    }
}

/// The envelope: who sent, to whom, for which customer, and how it came in.
public struct Envelope: Sendable, Codable, Hashable {
    public var customer: String?
    public var sender: String             // reverse path, "" for the null sender <>
    public var recipients: [Recipient]
    public var submission: SubmissionFacts
    /// RFC 3461 `RET` from MAIL: `FULL` or `HDRS`; nil when not given (headers only).
    public var dsnReturn: String?
    /// RFC 3461 `ENVID` from MAIL, decoded; nil when not given.
    public var envelopeID: String?

    public init(customer: String?, sender: String, recipients: [Recipient], submission: SubmissionFacts,
                dsnReturn: String? = nil, envelopeID: String? = nil) {
        self.customer = customer
        self.sender = sender
        self.recipients = recipients
        self.submission = submission
        self.dsnReturn = dsnReturn
        self.envelopeID = envelopeID
    }

    public func jsonBytes() -> [UInt8] { Array((try? Event.encoder.encode(self)) ?? Data()) }

    /// A message the gateway wrote itself (an NDR, an operator notice): from the null sender,
    /// never submitted by a client. Customers' own bounces (`MAIL FROM:<>`) come from a client.
    public var isGatewayWritten: Bool {
        sender.isEmpty && submission.authenticatedAs == nil && submission.clientAddress.isEmpty
    }

    /// Reads what `jsonBytes()` wrote, by hand (`JSONReader`): every stage does this for every
    /// message it claims, and `JSONDecoder` was a tenth of a stage's CPU.
    public static func decode<Bytes: Collection>(_ bytes: Bytes) throws -> Envelope where Bytes.Element == UInt8 {
        try Envelope(json: try JSONReader.parse(bytes))
    }

    init(json: JSONValue) throws(JSONReadError) {
        let o = try JSONObjectReader(json, path: "envelope")
        guard case .array(let items)? = o.fields["recipients"] else { throw o.wrong("recipients", "an array") }
        var recipients: [Recipient] = []
        recipients.reserveCapacity(items.count)
        for (n, item) in items.enumerated() { recipients.append(try Recipient(json: item, path: "envelope.recipients[\(n)]")) }
        guard let submission = o.fields["submission"] else { throw o.wrong("submission", "an object") }
        let s = try JSONObjectReader(submission, path: "envelope.submission")
        self.init(customer: try o.optionalString("customer"), sender: try o.string("sender"), recipients: recipients,
                  submission: SubmissionFacts(
                    clientAddress: try s.string("clientAddress"), heloName: try s.optionalString("heloName"),
                    tls: try s.bool("tls"), tlsVersion: try s.optionalString("tlsVersion"), cipher: try s.optionalString("cipher"),
                    authenticatedAs: try s.optionalString("authenticatedAs"), site: try s.string("site"),
                    ingress: try s.string("ingress"), receivedAt: try s.date("receivedAt"), size: try s.int("size")),
                  dsnReturn: try o.optionalString("dsnReturn"), envelopeID: try o.optionalString("envelopeID"))
    }
}

extension JSONObjectReader {
    /// An RFC 3339 time, as `Timestamp.format` writes it.
    func date(_ key: String) throws(JSONReadError) -> Date {
        guard case .string(let text)? = fields[key], let date = Timestamp.parse(text) else { throw wrong(key, "an RFC 3339 time") }
        return date
    }

    func optionalDate(_ key: String) throws(JSONReadError) -> Date? {
        try optional(key, "an RFC 3339 time") { $0.stringValue.flatMap(Timestamp.parse) }
    }
}

public enum Address {
    /// The domain of an address `local@domain`, lower-cased; `""` if there is no `@`.
    public static func domain(of address: String) -> String {
        guard let at = address.lastIndex(of: "@") else { return "" }
        return String(address[address.index(after: at)...]).lowercased()
    }
}

/// Which egress a message leaves through (R11: spam only through the bad gateway).
public enum Lane: String, Sendable, Codable, Hashable, CaseIterable {
    case good, bad

    public var topic: String { self == .good ? Topic.outboundGood : Topic.outboundBad }
}
