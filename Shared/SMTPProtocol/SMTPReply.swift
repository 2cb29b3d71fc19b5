public import NIOCore

/// One SMTP reply: a three-digit code, an optional RFC 3463 enhanced status code and
/// one or more text lines.
///
/// A value type with no resources; freely `Sendable`. On the wire every line carries the
/// code (`250-` for continuation lines, `250 ` for the last) and, when `enhanced` is set,
/// the enhanced code after it on every line (RFC 2034 §4).
public struct SMTPReply: Sendable, Hashable, CustomStringConvertible {
    /// The basic reply code (100…599 for well-formed replies).
    public var code: Int
    /// RFC 3463 enhanced status code such as `"2.0.0"`, or nil (greeting, EHLO, 354).
    public var enhanced: String?
    /// The text lines without code or enhanced code. Never empty after `init`.
    public var lines: [String]

    public init(code: Int, enhanced: String? = nil, lines: [String]) {
        self.code = code
        self.enhanced = enhanced
        self.lines = lines.isEmpty ? [""] : lines
    }

    public init(code: Int, enhanced: String? = nil, _ text: String) {
        self.init(code: code, enhanced: enhanced, lines: [text])
    }

    /// 2xx or 3xx.
    public var isPositive: Bool { (200..<400).contains(code) }
    /// 2xx: the command completed.
    public var isPositiveCompletion: Bool { (200..<300).contains(code) }
    /// 3xx: more input expected (354 after DATA).
    public var isPositiveIntermediate: Bool { (300..<400).contains(code) }
    /// 4xx: try again later.
    public var isTransient: Bool { (400..<500).contains(code) }
    /// 5xx: do not retry. Only an explicit 5xx is permanent.
    public var isPermanent: Bool { (500..<600).contains(code) }

    /// The first line's text (handy for logs).
    public var text: String { lines.joined(separator: " / ") }

    /// The reply as it appears on the wire, CRLF terminated lines.
    public var wireString: String {
        var out = ""
        for (index, line) in lines.enumerated() {
            let separator = index == lines.count - 1 ? " " : "-"
            let codeString = (100...999).contains(code) ? String(code) : "451"
            let body = SMTPReply.sanitize(line)
            var text = body
            if let enhanced { text = body.isEmpty ? enhanced : "\(enhanced) \(body)" }
            if text.isEmpty {
                // RFC 4954: an empty SASL challenge is "334 " with its space.
                out += separator == "-" ? "\(codeString)-\r\n" : code == 334 ? "334 \r\n" : "\(codeString)\r\n"
            } else {
                out += "\(codeString)\(separator)\(text)\r\n"
            }
        }
        return out
    }

    /// Appends the wire form to `buffer`.
    public func write(into buffer: inout ByteBuffer) {
        buffer.writeString(wireString)
    }

    public var description: String {
        "\(code)\(enhanced.map { " \($0)" } ?? "") \(text)"
    }

    /// Replies never carry CR, LF or other control characters (text comes partly from
    /// delegates and remote peers).
    static func sanitize(_ text: String) -> String {
        var scalars = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F {
                scalars.append(" ")
            } else {
                scalars.append(scalar)
            }
        }
        return String(scalars)
    }

    /// Whether `s` looks like an enhanced status code whose class is `classDigit`.
    static func isEnhancedCode(_ s: Substring, classDigit: Character?) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return false }
        guard parts[0].count == 1, let c = parts[0].first, "245".contains(c) else { return false }
        if let classDigit, c != classDigit { return false }
        for part in parts.dropFirst() {
            guard (1...3).contains(part.count), part.allSatisfy({ $0.isASCII && $0.isNumber }) else { return false }
        }
        return true
    }
}

/// Error thrown by `SMTPReplyParser` for malformed server replies.
public struct SMTPReplyParseError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: String
    public var line: String
    public var description: String { "\(code): \(line)" }

    public static let malformedLine = "malformed-reply-line"
    public static let inconsistentCode = "inconsistent-reply-code"
    public static let tooManyLines = "too-many-reply-lines"
}

/// Incremental parser for (possibly multi-line) replies, used by the client side.
///
/// Owns the lines of one reply in progress (at most `maximumLines`, each line is bounded by
/// the caller's line reader). Not thread-safe; use from one thread.
public struct SMTPReplyParser: Sendable {
    public let maximumLines: Int
    private var code: Int?
    private var pending: [String] = []

    public init(maximumLines: Int = 100) {
        self.maximumLines = maximumLines
    }

    /// Feeds one line without CRLF. Returns the reply when its last line was fed.
    public mutating func feed(line: String) throws -> SMTPReply? {
        let utf8 = Array(line.utf8)
        guard utf8.count >= 3,
              utf8[0...2].allSatisfy({ (0x30...0x39).contains($0) }),
              utf8.count == 3 || utf8[3] == UInt8(ascii: " ") || utf8[3] == UInt8(ascii: "-")
        else {
            throw SMTPReplyParseError(code: SMTPReplyParseError.malformedLine, line: line)
        }
        let code = Int(String(decoding: utf8[0...2], as: UTF8.self))!
        if let existing = self.code, existing != code {
            self.code = nil
            self.pending = []
            throw SMTPReplyParseError(code: SMTPReplyParseError.inconsistentCode, line: line)
        }
        self.code = code
        let text = utf8.count > 4 ? String(decoding: utf8[4...], as: UTF8.self) : ""
        pending.append(text)
        let isLast = utf8.count == 3 || utf8[3] == UInt8(ascii: " ")
        if !isLast {
            if pending.count >= maximumLines {
                self.code = nil
                self.pending = []
                throw SMTPReplyParseError(code: SMTPReplyParseError.tooManyLines, line: line)
            }
            return nil
        }
        let lines = pending
        self.code = nil
        self.pending = []
        return SMTPReplyParser.makeReply(code: code, texts: lines)
    }

    /// Splits the enhanced code off the lines when the first line carries one whose class
    /// matches the basic code.
    static func makeReply(code: Int, texts: [String]) -> SMTPReply {
        let classDigit = String(code).first
        guard let first = texts.first else { return SMTPReply(code: code, lines: [""]) }
        let firstToken = first.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard SMTPReply.isEnhancedCode(firstToken, classDigit: classDigit) else {
            return SMTPReply(code: code, enhanced: nil, lines: texts)
        }
        let enhanced = String(firstToken)
        let stripped = texts.map { text -> String in
            if text == enhanced { return "" }
            if text.hasPrefix(enhanced + " ") { return String(text.dropFirst(enhanced.count + 1)) }
            return text
        }
        return SMTPReply(code: code, enhanced: enhanced, lines: stripped)
    }
}
