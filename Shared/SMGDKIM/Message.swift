import SMGMIME
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

    /// The domain of the first mailbox of the From field (RFC 5322 address list, `SMGMIME.AddressList`),
    /// lower-cased; nil when there is no From field, more than one, or it does not parse, or the
    /// mailbox is at a domain literal. The signer signs for this domain, so it must be exactly the
    /// one ingress checked.
    public var fromDomain: String? {
        let from = fields(named: "from")
        guard from.count == 1, let first = try? AddressList.mailboxes(from[0].value).first,
              !first.isDomainLiteral else { return nil }
        return first.domain
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
