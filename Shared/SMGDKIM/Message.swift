/// A message split into its header fields and body, without copying the octets.
///
/// Lines end in CRLF (the gateway stores messages as received over SMTP). A header field is a
/// line that does not start with WSP plus its continuation lines; the header ends at the first
/// empty line. A message without an empty line is all header and has an empty body.
public struct DKIMMessage: Sendable {
    public struct Field: Sendable {
        /// The field name as written (without trailing WSP).
        public var name: String
        /// Lowercased name for matching.
        public var key: String
        /// Raw octets of the field, folded lines and the final CRLF included.
        public var raw: ArraySlice<UInt8>
        /// The unfolded value (after the colon), as text.
        public var value: String {
            guard let colon = raw.firstIndex(of: 0x3A) else { return "" }
            let bytes = raw[(colon + 1)...].filter { $0 != 0x0D && $0 != 0x0A }
            return String(decoding: bytes, as: UTF8.self).trimmingWSP()
        }
    }

    public let octets: [UInt8]
    public let fields: [Field]
    public let body: ArraySlice<UInt8>

    public init(_ octets: [UInt8]) {
        self.octets = octets
        var fields: [Field] = []
        var i = 0
        let n = octets.count
        var bodyStart = n
        while i < n {
            // Find the end of this line (after its CRLF or LF).
            var eol = i
            while eol < n && octets[eol] != 0x0A { eol += 1 }
            let next = eol < n ? eol + 1 : n
            let line = octets[i..<next]
            let isEmpty = line.allSatisfy { $0 == 0x0D || $0 == 0x0A }
            if isEmpty {
                bodyStart = next
                break
            }
            if (octets[i] == 0x20 || octets[i] == 0x09), !fields.isEmpty {
                let last = fields.removeLast()
                fields.append(Field(name: last.name, key: last.key,
                                    raw: octets[last.raw.startIndex..<next]))
            } else {
                let colon = line.firstIndex(of: 0x3A) ?? line.endIndex
                let name = String(decoding: octets[i..<colon], as: UTF8.self).trimmingWSP()
                fields.append(Field(name: name, key: name.lowercased(), raw: line))
            }
            i = next
        }
        self.fields = fields
        self.body = octets[min(bodyStart, n)..<n]
    }

    /// The fields named `name` (case-insensitive), top to bottom.
    public func fields(named name: String) -> [Field] {
        let key = name.lowercased()
        return fields.filter { $0.key == key }
    }

    /// The domain of the first From header's address, lowercased; nil when there is none.
    public var fromDomain: String? {
        for field in fields(named: "from") {
            if let domain = Self.domain(ofAddressIn: field.value) { return domain }
        }
        return nil
    }

    /// The domain of every From field, top to bottom (nil where a field has no readable address).
    public var fromDomains: [String?] {
        fields(named: "from").map { Self.domain(ofAddressIn: $0.value) }
    }

    /// The domain of the (first) address in a From-style header value: `Name <a@b>` or `a@b`.
    static func domain(ofAddressIn value: String) -> String? {
        var text = Substring(value)
        if let open = text.lastIndex(of: "<"), let close = text[open...].firstIndex(of: ">") {
            text = text[text.index(after: open)..<close]
        } else if let comma = text.firstIndex(of: ",") {
            text = text[..<comma]
        }
        guard let at = text.lastIndex(of: "@") else { return nil }
        var domain = text[text.index(after: at)...]
        if let paren = domain.firstIndex(of: "(") { domain = domain[..<paren] }
        let cleaned = String(domain).trimmingWSP().trimmingCharacters(in: [">", ";", "\"", "."]).lowercased()
        guard !cleaned.isEmpty, cleaned.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." }) else {
            return nil
        }
        return cleaned
    }
}

extension String {
    func trimmingWSP() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" || f == "\n" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" || l == "\n" { s = s.dropLast() }
        return String(s)
    }

    func trimmingCharacters(in set: Set<Character>) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
