/// Transfer decodings of RFC 2045 §6 (base64, quoted-printable) and the RFC 2047 encoded words
/// of header fields. All are best effort: invalid input is skipped or kept literally, never fatal.
public enum MIMEDecoding {
    static let base64Table: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8).enumerated() {
            table[Int(c)] = UInt8(i)
        }
        // URL-safe alphabet, seen in the wild.
        table[Int(UInt8(ascii: "-"))] = 62
        table[Int(UInt8(ascii: "_"))] = 63
        return table
    }()

    /// Decodes base64, ignoring every byte outside the alphabet (line breaks, garbage) and
    /// stopping at padding; at most `limit` output bytes.
    public static func base64<Bytes: Collection>(_ input: Bytes, limit: Int = .max) -> [UInt8]
    where Bytes.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(min(limit, input.count / 4 * 3 + 3))
        var acc: UInt32 = 0
        var bits = 0
        base64Table.withUnsafeBufferPointer { table in
            for byte in input {
                if byte == UInt8(ascii: "=") { break }
                let v = table[Int(byte)]
                if v == 0xFF { continue }
                acc = (acc << 6) | UInt32(v)
                bits += 6
                if bits >= 8 {
                    bits -= 8
                    if out.count >= limit { return }
                    out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
                }
            }
        }
        return out
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        default: return nil
        }
    }

    /// Decodes quoted-printable (RFC 2045 §6.7): `=XX` escapes, soft line breaks (`=` at the end
    /// of a line), invalid escapes kept literally; at most `limit` output bytes. With `header`
    /// set, `_` is a space (the RFC 2047 "Q" encoding).
    public static func quotedPrintable<Bytes: Collection>(_ input: Bytes, header: Bool = false, limit: Int = .max)
        -> [UInt8] where Bytes.Element == UInt8
    {
        let bytes = Array(input)
        var out: [UInt8] = []
        out.reserveCapacity(min(limit, bytes.count))
        var i = 0
        let n = bytes.count
        while i < n, out.count < limit {
            let b = bytes[i]
            if b == UInt8(ascii: "=") {
                if i + 2 < n, let hi = hexValue(bytes[i + 1]), let lo = hexValue(bytes[i + 2]) {
                    out.append(hi << 4 | lo)
                    i += 3
                    continue
                }
                // Soft line break: "=" then optional whitespace then CRLF or LF.
                var j = i + 1
                while j < n, bytes[j] == UInt8(ascii: " ") || bytes[j] == UInt8(ascii: "\t") { j += 1 }
                if j < n, bytes[j] == UInt8(ascii: "\r") { j += 1 }
                if j < n, bytes[j] == UInt8(ascii: "\n") { i = j + 1; continue }
                if j >= n { i = n; continue }
                out.append(b)
                i += 1
            } else if header, b == UInt8(ascii: "_") {
                out.append(UInt8(ascii: " "))
                i += 1
            } else {
                out.append(b)
                i += 1
            }
        }
        return out
    }

    /// Text of `bytes` in `charset` (UTF-8, US-ASCII, ISO-8859-1/Latin-1, Windows-1252 are known;
    /// anything else is read as UTF-8 with replacement characters).
    public static func text(_ bytes: [UInt8], charset: String) -> String {
        switch charset.lowercased() {
        case "iso-8859-1", "latin1", "latin-1", "iso8859-1", "windows-1252", "cp1252", "us-ascii", "ascii":
            if bytes.allSatisfy({ $0 < 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
            // Latin-1 code points are U+0000…U+00FF: two UTF-8 octets for the upper half.
            var utf8: [UInt8] = []
            utf8.reserveCapacity(bytes.count + bytes.count / 8)
            for b in bytes {
                if b < 0x80 { utf8.append(b) } else { utf8.append(0xC0 | (b >> 6)); utf8.append(0x80 | (b & 0x3F)) }
            }
            return String(decoding: utf8, as: UTF8.self)
        default:
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// Decodes the RFC 2047 encoded words (`=?charset?B|Q?text?=`) in a header value;
    /// whitespace between two adjacent encoded words is dropped (§6.2). Malformed words stay as they are.
    public static func encodedWords(_ value: String) -> String {
        guard value.contains("=?") else { return value }
        var result = ""
        var rest = Substring(value)
        var pendingSpace = ""
        var lastWasEncoded = false
        while !rest.isEmpty {
            guard let start = rest.range(of: "=?") else {
                result += pendingSpace + rest
                break
            }
            let before = rest[..<start.lowerBound]
            if let (decoded, end) = decodeWord(rest[start.lowerBound...]) {
                if !(lastWasEncoded && before.allSatisfy(\.isWhitespace)) {
                    result += pendingSpace + before
                }
                result += decoded
                pendingSpace = ""
                lastWasEncoded = true
                rest = rest[end...]
            } else {
                result += pendingSpace + before + "=?"
                pendingSpace = ""
                lastWasEncoded = false
                rest = rest[start.upperBound...]
            }
        }
        return result
    }

    /// One encoded word at the start of `text`: its decoded text and where it ends.
    static func decodeWord(_ text: Substring) -> (String, Substring.Index)? {
        let parts = text.dropFirst(2)
        guard let q1 = parts.firstIndex(of: "?") else { return nil }
        var charset = String(parts[..<q1])
        if let star = charset.firstIndex(of: "*") { charset = String(charset[..<star]) }   // RFC 2231 language
        let afterCharset = parts[parts.index(after: q1)...]
        guard let q2 = afterCharset.firstIndex(of: "?") else { return nil }
        let encoding = afterCharset[..<q2].uppercased()
        let payloadStart = afterCharset.index(after: q2)
        guard let end = afterCharset[payloadStart...].range(of: "?=") else { return nil }
        let payload = afterCharset[payloadStart..<end.lowerBound]
        guard !charset.isEmpty, payload.count < 1000, !payload.contains(" ") else { return nil }
        let bytes: [UInt8]
        switch encoding {
        case "B": bytes = base64(Array(payload.utf8))
        case "Q": bytes = quotedPrintable(Array(payload.utf8), header: true)
        default: return nil
        }
        return (MIMEDecoding.text(bytes, charset: charset), end.upperBound)
    }

    /// Percent-decoding of RFC 2231 extended parameter values.
    static func percentDecoded(_ text: Substring) -> [UInt8] {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count, let hi = hexValue(bytes[i + 1]),
               let lo = hexValue(bytes[i + 2]) {
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return out
    }
}
