/// xtext (RFC 3461 §4): printable US-ASCII except `+` and `=`, other octets as `+XX` (two
/// upper-case hex digits). ENVID and ORCPT values are xtext on the wire.
public enum XText {
    /// The decoded value, or nil when `text` is not valid xtext (a character outside `!`…`~`,
    /// a bare `=`, `+` not followed by two upper-case hex digits) or decodes to invalid UTF-8.
    public static func decode(_ text: String) -> String? {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let b = bytes.popFirst() {
            switch b {
            case UInt8(ascii: "+"):
                guard let h = bytes.popFirst(), let l = bytes.popFirst(), let hi = hex(h), let lo = hex(l) else { return nil }
                out.append(hi << 4 | lo)
            case UInt8(ascii: "="):
                return nil
            case 0x21...0x7E:
                out.append(b)
            default:
                return nil
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    /// `value` as xtext: `+`, `=`, controls, space and octets ≥ 0x80 (UTF-8) as `+XX`.
    public static func encode(_ value: String) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for b in value.utf8 {
            if b >= 0x21 && b <= 0x7E && b != UInt8(ascii: "+") && b != UInt8(ascii: "=") {
                out.append(b)
            } else {
                out += [UInt8(ascii: "+"), digits[Int(b >> 4)], digits[Int(b & 15)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Upper-case hex only: RFC 3461's hexchar is `"+" 2(%x30-39 / %x41-46)`.
    private static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        default: return nil
        }
    }
}

/// The DSN extension's parameters (RFC 3461 §4) as the gateway takes them in and passes them on.
public enum DSNParameters {
    /// Longest ENVID value (xtext as sent, §4.4).
    public static let maxEnvelopeIDLength = 100
    /// Longest ORCPT value (`addr-type;xtext` as sent, §4.2).
    public static let maxOriginalRecipientLength = 500

    /// `RET=FULL|HDRS`, upper-cased; nil when invalid.
    public static func ret(_ value: String) -> String? {
        let v = value.uppercased()
        return v == "FULL" || v == "HDRS" ? v : nil
    }

    /// `ENVID=<xtext>` decoded; nil when invalid or too long. The decoded value must be printable
    /// ASCII: it is written into the report's `Original-Envelope-Id` field as it is.
    public static func envelopeID(_ value: String) -> String? {
        guard !value.isEmpty, value.utf8.count <= maxEnvelopeIDLength, let decoded = XText.decode(value),
              decoded.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F })
        else { return nil }
        return decoded
    }

    /// `NOTIFY=NEVER` or a comma list of `SUCCESS`, `FAILURE`, `DELAY` (each at most once), upper-cased
    /// in a fixed order; nil when invalid.
    public static func notify(_ value: String) -> [String]? {
        let words = value.uppercased().split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        if words == ["NEVER"] { return ["NEVER"] }
        let known = ["SUCCESS", "FAILURE", "DELAY"]
        guard !words.isEmpty, Set(words).count == words.count, words.allSatisfy(known.contains) else { return nil }
        return known.filter(words.contains)
    }

    /// `ORCPT=<addr-type>;<xtext>` as `addr-type;decoded` (addr-type lower-cased when it is `rfc822`
    /// or `utf-8`); nil when invalid or too long.
    public static func originalRecipient(_ value: String) -> String? {
        guard value.utf8.count <= maxOriginalRecipientLength, let semi = value.firstIndex(of: ";") else { return nil }
        let type = String(value[..<semi])
        let atext = { (b: UInt8) -> Bool in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == UInt8(ascii: "-")
        }
        guard !type.isEmpty, type.utf8.allSatisfy(atext),
              let address = XText.decode(String(value[value.index(after: semi)...])), !address.isEmpty,
              address.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
        else { return nil }
        let lowered = type.lowercased()
        return (lowered == "rfc822" || lowered == "utf-8" ? lowered : type) + ";" + address
    }

    /// `addr-type;decoded` back to the wire form `addr-type;xtext`.
    public static func encodeOriginalRecipient(_ decoded: String) -> String {
        guard let semi = decoded.firstIndex(of: ";") else { return "rfc822;" + XText.encode(decoded) }
        return String(decoded[..<semi]) + ";" + XText.encode(String(decoded[decoded.index(after: semi)...]))
    }
}
