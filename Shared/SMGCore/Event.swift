public import Foundation

/// One step in the life of a message (or of the gateway), as monitoring and operators see it.
///
/// Wire form (JSON, one object, keys sorted), e.g.
/// `{"facts":{"recipients":2,"size":1834},"id":"01JD…","process":"smg-ingress@host:4711","site":"eu-de-01","time":"2026-11-23T05:00:00.123Z","type":"accepted"}`
///
/// - `type`: dotted name, stable public interface (see `EventType`).
/// - `id`: the message id, absent for events about the gateway itself (e.g. `blacklist.listed`).
/// - `site`, `process`: where it happened. `time`: RFC 3339 with milliseconds, UTC.
/// - `facts`: what happened (verdicts, scores, SMTP replies, TLS mode, …), type-specific.
public struct Event: Sendable, Codable, Hashable {
    public var type: String
    public var id: MessageID?
    public var site: String
    public var process: String
    public var time: Date
    public var facts: [String: JSONValue]

    public init(type: String, id: MessageID?, site: String, process: String, time: Date = Date(),
                facts: [String: JSONValue] = [:]) {
        self.type = type
        self.id = id
        self.site = site
        self.process = process
        self.time = time
        self.facts = facts
    }

    /// The ZeroMQ topic a tap subscribes to: `events.<type>`.
    public var tapTopic: String { "events.\(type)" }

    public func jsonBytes() -> [UInt8] {
        // Encoding these plain value types cannot fail.
        Array((try? Event.encoder.encode(self)) ?? Data("{}".utf8))
    }

    public func jsonString() -> String { String(decoding: jsonBytes(), as: UTF8.self) }

    public static func decode<Bytes: Collection>(_ bytes: Bytes) throws -> Event where Bytes.Element == UInt8 {
        try decoder.decode(Event.self, from: Data(bytes))
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(Timestamp.format(date))
        }
        return e
    }()

    static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = Timestamp.parse(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                        debugDescription: "bad time \(text)"))
            }
            return date
        }
        return d
    }()
}

/// The event types the pipeline emits. Names are public interface: add, never rename.
public enum EventType {
    public static let accepted = "accepted"
    public static let rejectedPolicy = "rejected.policy"
    /// AUTH refused: wrong credentials, or too many failed logins.
    public static let rejectedAuth = "rejected.auth"
    /// A customer's rate limit (R6) refused a message.
    public static let ratelimitHit = "ratelimit.hit"
    public static let scannedClean = "scanned.clean"
    public static let scannedInfected = "scanned.infected"
    public static let scannerError = "scanner.error"
    public static let classified = "classified"
    public static let signed = "signed"
    public static let deliveryAttempt = "delivery.attempt"
    public static let delivered = "delivered"
    public static let deferred = "deferred"
    public static let bounced = "bounced"
    public static let ndrSent = "ndr.sent"
    /// Every source address of an egress lane is drained: its mail waits (R17; never the other lane).
    public static let poolExhausted = "pool.exhausted"
    public static let redriven = "redriven"
    public static let stageError = "stage.error"
    /// A message whose record cannot be read was moved to the quarantine set.
    public static let quarantined = "quarantined"
    /// A message still failing in a stage after its maximum age was given up (recipients bounced).
    public static let expired = "expired"
    /// Operator actions on the queue (`smgctl queue …`).
    public static let queueHeld = "queue.held"
    public static let queueReleased = "queue.released"
    public static let queueBounced = "queue.bounced"
    public static let queueDeleted = "queue.deleted"
    public static let queueRequeued = "queue.requeued"
}

/// RFC 3339 UTC timestamps with milliseconds, the one time format of logs and events.
public enum Timestamp {
    public static func format(_ date: Date) -> String {
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        let seconds = ms / 1000, millis = ms % 1000
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(millis), 3))Z"
    }

    /// RFC 5322 date in UTC, e.g. `Mon, 23 Nov 2026 05:00:00 +0000` (Date, Received, Arrival-Date).
    public static func rfc5322(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&t, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(parts.tm_wday)]), \(parts.tm_mday) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) +0000"
    }

    public static func parse(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = formatter.date(from: text) { return d }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}
