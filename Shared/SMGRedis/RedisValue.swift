/// A reply from Redis, decoded from RESP2 (hiredis 0.14 speaks RESP2 only).
///
/// Values are plain data: they own no C memory (the hiredis reply object is copied and freed
/// before a `RedisValue` is returned).
public enum RedisValue: Sendable, Hashable {
    /// A simple string reply such as `OK` or `PONG`.
    case status(String)
    /// An error reply (`-ERR ...`). `RedisConnection.command` throws these as `RedisError.server`;
    /// `pipeline` returns them in place so the other replies are not lost.
    case error(String)
    case integer(Int64)
    /// A bulk string, binary safe (may contain NUL, CR, LF).
    case bulk([UInt8])
    /// A nil bulk or nil multi-bulk reply.
    case null
    case array([RedisValue])

    /// The UTF-8 text of a bulk or status reply; nil for other kinds or invalid UTF-8.
    public var string: String? {
        switch self {
        case .status(let s): return s
        case .bulk(let b): return String(validating: b, as: UTF8.self)
        default: return nil
        }
    }

    /// The integer of an integer reply, or a bulk/status reply holding a decimal integer
    /// (Redis returns e.g. `GET counter` as bulk).
    public var int: Int64? {
        switch self {
        case .integer(let i): return i
        case .bulk, .status: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    /// The bytes of a bulk reply (or the UTF-8 of a status reply).
    public var bytes: [UInt8]? {
        switch self {
        case .bulk(let b): return b
        case .status(let s): return Array(s.utf8)
        default: return nil
        }
    }

    /// The elements of an array reply.
    public var array: [RedisValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The field/value pairs of an HGETALL reply (or an HSCAN page), in reply order; fields that
    /// are not text are skipped; empty for anything but an array.
    public var fieldPairs: [(field: String, value: RedisValue)] {
        guard let items = array else { return [] }
        var out: [(field: String, value: RedisValue)] = []
        out.reserveCapacity(items.count / 2)
        var index = 0
        while index + 1 < items.count {
            if let field = items[index].string { out.append((field, items[index + 1])) }
            index += 2
        }
        return out
    }

    /// True for `.null`.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

/// One argument of a Redis command. Arguments are sent as binary-safe bulk strings, so any
/// byte sequence (including NUL and CRLF) goes through unchanged.
public struct RedisArg: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    public var bytes: [UInt8]

    public init(_ string: String) { self.bytes = Array(string.utf8) }
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ value: Int) { self.bytes = Array(String(value).utf8) }
    public init(_ value: Int64) { self.bytes = Array(String(value).utf8) }
    /// Doubles are sent in Swift's shortest round-trip form; `inf`/`-inf` as Redis spells them.
    public init(_ value: Double) {
        if value == .infinity { self.bytes = Array("+inf".utf8) }
        else if value == -.infinity { self.bytes = Array("-inf".utf8) }
        else { self.bytes = Array(String(value).utf8) }
    }
    public init(stringLiteral value: String) { self.init(value) }
    public init(integerLiteral value: Int) { self.init(value) }
}
