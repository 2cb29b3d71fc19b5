/// Reads JSON (RFC 8259) into `JSONValue`, by hand. Every stage decodes the envelope and the
/// recipient states of every message it claims; Foundation's `JSONDecoder` (Codable containers,
/// generic metadata lookups) cost as much as a tenth of a stage's CPU. The counterpart of
/// `JSONWriter`; `Envelope.decode` and `Recipient.decode` use it, and `JSONReaderTests` check they
/// agree with `JSONDecoder`.
public struct JSONReadError: Error, Sendable, Hashable, CustomStringConvertible {
    public var offset: Int
    public var problem: String
    public var description: String { "JSON at byte \(offset): \(problem)" }
}

public enum JSONReader {
    /// Objects nest at most this deep (an envelope needs 3); deeper input is refused, not recursed into.
    public static let maxDepth = 64

    public static func parse<Bytes: Collection>(_ bytes: Bytes) throws(JSONReadError) -> JSONValue
    where Bytes.Element == UInt8 {
        let result: Result<JSONValue, JSONReadError>? = bytes.withContiguousStorageIfAvailable { parse(buffer: $0) }
        switch result ?? Array(bytes).withUnsafeBufferPointer({ parse(buffer: $0) }) {
        case .success(let value): return value
        case .failure(let error): throw error
        }
    }

    static func parse(buffer: UnsafeBufferPointer<UInt8>) -> Result<JSONValue, JSONReadError> {
        var p = Parser(b: buffer)
        do throws(JSONReadError) {
            p.skipSpace()
            let value = try p.value(depth: 0)
            p.skipSpace()
            guard p.i == buffer.count else { throw p.fail("text after the value") }
            return .success(value)
        } catch {
            return .failure(error)
        }
    }

    struct Parser {
        let b: UnsafeBufferPointer<UInt8>
        var i = 0

        func fail(_ problem: String) -> JSONReadError { JSONReadError(offset: i, problem: problem) }

        mutating func skipSpace() {
            while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
        }

        mutating func value(depth: Int) throws(JSONReadError) -> JSONValue {
            guard i < b.count else { throw fail("unexpected end") }
            switch b[i] {
            case 0x7B: return try object(depth: depth + 1)     // {
            case 0x5B: return try array(depth: depth + 1)      // [
            case 0x22: return .string(try string())
            case 0x74: try literal("true"); return .bool(true)
            case 0x66: try literal("false"); return .bool(false)
            case 0x6E: try literal("null"); return .null
            case 0x2D, 0x30...0x39: return try number()
            default: throw fail("unexpected character")
            }
        }

        mutating func literal(_ word: StaticString) throws(JSONReadError) {
            let n = word.utf8CodeUnitCount
            guard i + n <= b.count else { throw fail("unexpected end") }
            for k in 0..<n where b[i + k] != word.utf8Start[k] { throw fail("expected \(word)") }
            i += n
        }

        mutating func object(depth: Int) throws(JSONReadError) -> JSONValue {
            guard depth <= JSONReader.maxDepth else { throw fail("nested deeper than \(JSONReader.maxDepth)") }
            i += 1
            var fields: [String: JSONValue] = [:]
            skipSpace()
            if i < b.count, b[i] == 0x7D { i += 1; return .object(fields) }
            while true {
                skipSpace()
                guard i < b.count, b[i] == 0x22 else { throw fail("expected a member name") }
                let key = try string()
                skipSpace()
                guard i < b.count, b[i] == 0x3A else { throw fail("expected ':'") }
                i += 1
                skipSpace()
                fields[key] = try value(depth: depth)
                skipSpace()
                guard i < b.count else { throw fail("unexpected end") }
                if b[i] == 0x2C { i += 1; continue }
                if b[i] == 0x7D { i += 1; return .object(fields) }
                throw fail("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws(JSONReadError) -> JSONValue {
            guard depth <= JSONReader.maxDepth else { throw fail("nested deeper than \(JSONReader.maxDepth)") }
            i += 1
            var items: [JSONValue] = []
            skipSpace()
            if i < b.count, b[i] == 0x5D { i += 1; return .array(items) }
            while true {
                skipSpace()
                items.append(try value(depth: depth))
                skipSpace()
                guard i < b.count else { throw fail("unexpected end") }
                if b[i] == 0x2C { i += 1; continue }
                if b[i] == 0x5D { i += 1; return .array(items) }
                throw fail("expected ',' or ']'")
            }
        }

        mutating func string() throws(JSONReadError) -> String {
            i += 1
            let start = i
            // Fast path: no escapes, valid UTF-8 between the quotes.
            while i < b.count, b[i] != 0x22, b[i] != 0x5C, b[i] >= 0x20 { i += 1 }
            guard i < b.count else { throw fail("unterminated string") }
            if b[i] == 0x22 {
                let run = UnsafeBufferPointer(rebasing: b[start..<i])
                i += 1
                guard let s = String(validating: run, as: UTF8.self) else { throw fail("invalid UTF-8 in a string") }
                return s
            }
            var out = Array(b[start..<i])
            while true {
                guard i < b.count else { throw fail("unterminated string") }
                let c = b[i]
                if c == 0x22 { i += 1; break }
                if c < 0x20 { throw fail("control character in a string") }
                if c != 0x5C { out.append(c); i += 1; continue }
                i += 1
                guard i < b.count else { throw fail("unterminated escape") }
                let e = b[i]
                i += 1
                switch e {
                case 0x22, 0x5C, 0x2F: out.append(e)
                case 0x62: out.append(0x08)
                case 0x66: out.append(0x0C)
                case 0x6E: out.append(0x0A)
                case 0x72: out.append(0x0D)
                case 0x74: out.append(0x09)
                case 0x75:
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard i + 1 < b.count, b[i] == 0x5C, b[i + 1] == 0x75 else { throw fail("lone surrogate") }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("lone surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw fail("lone surrogate")
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw fail("invalid \\u escape") }
                    out.append(contentsOf: String(Character(u)).utf8)
                default:
                    throw fail("invalid escape")
                }
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw fail("invalid UTF-8 in a string") }
            return s
        }

        mutating func hex4() throws(JSONReadError) -> UInt32 {
            guard i + 4 <= b.count else { throw fail("unterminated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = b[i]
                let d: UInt32
                switch c {
                case 0x30...0x39: d = UInt32(c - 0x30)
                case 0x41...0x46: d = UInt32(c - 0x41 + 10)
                case 0x61...0x66: d = UInt32(c - 0x61 + 10)
                default: throw fail("invalid \\u escape")
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }

        /// An integer literal that fits `Int` is `.int`; anything with a fraction or an exponent,
        /// or too large, is `.double` (as `JSONValue`'s Codable decoding would give).
        mutating func number() throws(JSONReadError) -> JSONValue {
            let start = i
            if b[i] == 0x2D { i += 1 }
            guard i < b.count, b[i] >= 0x30, b[i] <= 0x39 else { throw fail("invalid number") }
            if b[i] == 0x30 { i += 1 } else { while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 } }
            var integral = true
            if i < b.count, b[i] == 0x2E {
                integral = false
                i += 1
                let digits = i
                while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
                guard i > digits else { throw fail("invalid number") }
            }
            if i < b.count, b[i] == 0x65 || b[i] == 0x45 {
                integral = false
                i += 1
                if i < b.count, b[i] == 0x2B || b[i] == 0x2D { i += 1 }
                let digits = i
                while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
                guard i > digits else { throw fail("invalid number") }
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
            if integral, let v = Int(text) { return .int(v) }
            guard let d = Double(text) else { throw fail("invalid number") }
            return .double(d)
        }
    }
}

/// Typed access to a decoded object, with errors that name the member (for `Envelope` and
/// `Recipient`): a missing or mistyped required member is an error, `null` or absence is nil for
/// an optional one, unknown members are ignored — as `JSONDecoder` does for a `Codable` struct.
struct JSONObjectReader {
    let fields: [String: JSONValue]
    let path: String

    init(_ value: JSONValue, path: String) throws(JSONReadError) {
        guard case .object(let fields) = value else { throw JSONReadError(offset: 0, problem: "\(path): not an object") }
        self.fields = fields
        self.path = path
    }

    func wrong(_ key: String, _ expected: String) -> JSONReadError {
        JSONReadError(offset: 0, problem: "\(path).\(key): \(fields[key] == nil ? "missing" : "not \(expected)")")
    }

    func string(_ key: String) throws(JSONReadError) -> String {
        guard case .string(let s)? = fields[key] else { throw wrong(key, "a string") }
        return s
    }

    func optionalString(_ key: String) throws(JSONReadError) -> String? {
        try optional(key, "a string") { if case .string(let s) = $0 { s } else { nil } }
    }

    /// nil when absent or null; `read`'s value when it gives one; otherwise an error.
    func optional<T>(_ key: String, _ expected: String, _ read: (JSONValue) -> T?) throws(JSONReadError) -> T? {
        guard let value = fields[key], value != .null else { return nil }
        guard let v = read(value) else { throw wrong(key, expected) }
        return v
    }

    func int(_ key: String) throws(JSONReadError) -> Int {
        switch fields[key] {
        case .int(let v)?: return v
        case .double(let d)? where d.rounded() == d && abs(d) < 9.0e18: return Int(d)
        default: throw wrong(key, "an integer")
        }
    }

    func bool(_ key: String) throws(JSONReadError) -> Bool {
        guard case .bool(let v)? = fields[key] else { throw wrong(key, "true or false") }
        return v
    }

    func optionalBool(_ key: String) throws(JSONReadError) -> Bool? {
        try optional(key, "true or false") { if case .bool(let v) = $0 { v } else { nil } }
    }

    func optionalStrings(_ key: String) throws(JSONReadError) -> [String]? {
        try optional(key, "an array of strings") { value -> [String]? in
            guard case .array(let items) = value else { return nil }
            let strings = items.compactMap(\.stringValue)
            return strings.count == items.count ? strings : nil
        }
    }
}
