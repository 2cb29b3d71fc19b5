/// One header field: its name as written and its unfolded value (RFC 5322 §2.2.3).
public struct MIMEHeaderField: Sendable, Hashable {
    public var name: String
    /// The raw value with folding removed (CRLF + WSP → WSP), encoded words left as they are.
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    /// The value with RFC 2047 encoded words decoded.
    public var decodedValue: String { MIMEDecoding.encodedWords(value) }
}

/// The header section of an entity, in order; names compare case-insensitively.
public struct MIMEHeaders: Sendable, Hashable, Sequence {
    public var fields: [MIMEHeaderField]

    public init(_ fields: [MIMEHeaderField] = []) { self.fields = fields }

    /// The first value of `name`, unfolded and raw; nil when absent.
    public subscript(_ name: String) -> String? {
        let lower = name.lowercased()
        return fields.first { $0.name.lowercased() == lower }?.value
    }

    public func values(_ name: String) -> [String] {
        let lower = name.lowercased()
        return fields.filter { $0.name.lowercased() == lower }.map(\.value)
    }

    public func makeIterator() -> IndexingIterator<[MIMEHeaderField]> { fields.makeIterator() }
}

/// A structured header value with parameters: `Content-Type` and `Content-Disposition`
/// (RFC 2045 §5.1, RFC 2183), with RFC 2231 continuations and charset/language extensions.
public struct MIMEParameterizedValue: Sendable, Hashable {
    /// Lower-cased main value (`text/plain`, `attachment`).
    public var value: String
    /// Lower-cased parameter names → decoded values.
    public var parameters: [String: String]

    public init(value: String, parameters: [String: String] = [:]) {
        self.value = value
        self.parameters = parameters
    }

    /// Parses `value; name=token; name="quoted \"string\""; name*0*=utf-8''a%20b; name*1=c`.
    /// Malformed parameters are skipped.
    public init(parsing text: String) {
        var items = MIMEParameterizedValue.split(text)
        value = items.isEmpty ? "" : items.removeFirst().trimmingWSP().lowercased()
        if let paren = value.firstIndex(of: "(") { value = String(value[..<paren]).trimmingWSP() }
        var plain: [String: String] = [:]
        // RFC 2231: name*N or name*N* sections, and name* with charset'lang'value.
        var sections: [String: [Int: (String, Bool)]] = [:]
        for item in items {
            guard let eq = item.firstIndex(of: "=") else { continue }
            let rawName = item[..<eq].trimmingWSP().lowercased()
            var rawValue = item[item.index(after: eq)...].trimmingWSP()
            if rawValue.hasPrefix("\"") { rawValue = MIMEParameterizedValue.unquote(rawValue) }
            guard !rawName.isEmpty else { continue }
            if let star = rawName.firstIndex(of: "*") {
                let base = String(rawName[..<star])
                let rest = rawName[rawName.index(after: star)...]
                if rest.isEmpty {
                    sections[base, default: [:]][0] = (rawValue, true)
                } else {
                    let extended = rest.hasSuffix("*")
                    let number = Int(extended ? rest.dropLast() : rest)
                    if let number, number >= 0, number < 1000 { sections[base, default: [:]][number] = (rawValue, extended) }
                }
            } else if plain[rawName] == nil {
                plain[rawName] = rawValue
            }
        }
        for (name, parts) in sections {
            var charset = "utf-8"
            var bytes: [UInt8] = []
            for index in parts.keys.sorted() {
                guard let (text, extended) = parts[index] else { continue }
                var piece = Substring(text)
                if extended, index == parts.keys.min() {
                    let pieces = text.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false)
                    if pieces.count == 3 {
                        if !pieces[0].isEmpty { charset = String(pieces[0]) }
                        piece = pieces[2]
                    }
                }
                bytes += extended ? MIMEDecoding.percentDecoded(piece) : Array(piece.utf8)
            }
            plain[name] = MIMEDecoding.text(bytes, charset: charset)
        }
        parameters = plain
    }

    /// Splits at `;` outside quoted strings.
    static func split(_ text: String) -> [String] {
        var items: [String] = []
        var current = ""
        var quoted = false
        var escaped = false
        for ch in text {
            if escaped { current.append(ch); escaped = false; continue }
            if ch == "\\" && quoted { current.append(ch); escaped = true; continue }
            if ch == "\"" { quoted.toggle() }
            if ch == ";" && !quoted {
                items.append(current)
                current = ""
            } else {
                current.append(ch)
            }
        }
        items.append(current)
        return items
    }

    static func unquote(_ text: String) -> String {
        var out = ""
        var escaped = false
        for ch in text.dropFirst() {
            if escaped { out.append(ch); escaped = false; continue }
            if ch == "\\" { escaped = true; continue }
            if ch == "\"" { break }
            out.append(ch)
        }
        return out
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs (RFC 5322 WSP), without Foundation's
    /// character-set machinery: header parsing runs for every part of every message.
    func trimmingWSP() -> String {
        let whole = String(self)
        let u = whole.utf8
        var start = u.startIndex, end = u.endIndex
        while start < end, u[start] == 0x20 || u[start] == 0x09 { start = u.index(after: start) }
        while end > start {
            let before = u.index(before: end)
            guard u[before] == 0x20 || u[before] == 0x09 else { break }
            end = before
        }
        return start == u.startIndex && end == u.endIndex ? whole : String(whole[start..<end])
    }
}
