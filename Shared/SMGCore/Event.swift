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

    /// The wire form (keys sorted), written by hand (`JSONWriter`): the same bytes as
    /// `Event.encoder` gives, at a fraction of its cost.
    public func jsonBytes() -> [UInt8] {
        var w = JSONWriter()
        w.raw("{\"facts\":")
        w.object(facts)
        if let id {
            w.raw(",\"id\":")
            w.string(id.rawValue)
        }
        w.raw(",\"process\":")
        w.string(process)
        w.raw(",\"site\":")
        w.string(site)
        w.raw(",\"time\":")
        w.string(Timestamp.format(time))
        w.raw(",\"type\":")
        w.string(type)
        w.raw("}")
        return w.bytes
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
    /// The compromised-account brake (classifier) and its release (`smgctl account release`).
    public static let accountBraked = "account.braked"
    public static let accountReleased = "account.released"
    /// An operator taught the spam model a message (`smgctl train --id`).
    public static let spamTrained = "spam.trained"
    /// The blacklist monitor (R19): a run, a new listing, a lifted one, a zone that could not be
    /// asked, the drain and undrain of a listed good address, every good address listed.
    public static let blacklistRun = "blacklist.run"
    public static let blacklistListed = "blacklist.listed"
    public static let blacklistCleared = "blacklist.cleared"
    public static let blacklistCheckFailed = "blacklist.check_failed"
    public static let blacklistDrained = "blacklist.drained"
    public static let blacklistUndrained = "blacklist.undrained"
    public static let blacklistAllGoodListed = "blacklist.all_good_listed"
}

/// RFC 3339 UTC timestamps with milliseconds, the one time format of logs and events.
public enum Timestamp {
    public static func format(_ date: Date) -> String {
        // To the nearest millisecond: a time read back from its text (`parse`) is a binary fraction
        // that may lie a hair below the millisecond it was written as.
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded())
        let seconds = ms / 1000, millis = ms % 1000
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        // Written digit by digit: this runs for every event and every recipient state of every message.
        var out = [UInt8](repeating: 0, count: 24)
        func put(_ value: Int32, _ at: Int, _ width: Int) {
            var v = value
            for i in stride(from: at + width - 1, through: at, by: -1) {
                out[i] = UInt8(truncatingIfNeeded: 48 + v % 10)
                v /= 10
            }
        }
        put(parts.tm_year + 1900, 0, 4); out[4] = 45 /* - */
        put(parts.tm_mon + 1, 5, 2); out[7] = 45
        put(parts.tm_mday, 8, 2); out[10] = 84 /* T */
        put(parts.tm_hour, 11, 2); out[13] = 58 /* : */
        put(parts.tm_min, 14, 2); out[16] = 58
        put(parts.tm_sec, 17, 2); out[19] = 46 /* . */
        put(Int32(millis), 20, 3); out[23] = 90 /* Z */
        return String(decoding: out, as: UTF8.self)
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

    /// Parses an RFC 3339 date-time (`2026-11-23T05:00:00.123Z`, `…T05:00:00+01:00`; fraction
    /// optional). Hand-written: every stage decodes the envelope and recipient states of every
    /// message, and a Foundation date formatter per call cost more than the rest of the decode.
    public static func parse(_ text: String) -> Date? {
        var text = text
        return text.withUTF8 { parse(utf8: $0) }
    }

    static func parse(utf8 b: UnsafeBufferPointer<UInt8>) -> Date? {
        func digits(_ at: Int, _ count: Int) -> Int? {
            guard at + count <= b.count else { return nil }
            var v = 0
            for i in at..<(at + count) {
                let d = Int(b[i]) - 48
                guard d >= 0, d <= 9 else { return nil }
                v = v * 10 + d
            }
            return v
        }
        guard b.count >= 20,
              let year = digits(0, 4), b[4] == 45, let month = digits(5, 2), b[7] == 45, let day = digits(8, 2),
              b[10] == 84 || b[10] == 116,
              let hour = digits(11, 2), b[13] == 58, let minute = digits(14, 2), b[16] == 58,
              let second = digits(17, 2),
              (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year),
              hour <= 23, minute <= 59, second <= 60
        else { return nil }
        var i = 19
        var fraction = 0.0
        if b[i] == 46 {   // .
            i += 1
            var scale = 0.1
            let start = i
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                fraction += Double(b[i] - 48) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        guard i < b.count else { return nil }
        var offset = 0
        switch b[i] {
        case 90, 122:   // Z z
            i += 1
        case 43, 45:    // + -
            guard let oh = digits(i + 1, 2), i + 3 < b.count, b[i + 3] == 58, let om = digits(i + 4, 2),
                  oh <= 23, om <= 59 else { return nil }
            offset = (oh * 60 + om) * 60 * (b[i] == 45 ? -1 : 1)
            i += 6
        default:
            return nil
        }
        guard i == b.count else { return nil }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = days * 86400 + hour * 3600 + minute * 60 + min(second, 59) - offset
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }
}
