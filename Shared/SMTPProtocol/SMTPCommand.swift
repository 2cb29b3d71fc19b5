/// A parsed SMTP command (RFC 5321 §4.1). Plain data; `Sendable`.
///
/// Paths are returned as the mailbox in wire form without angle brackets (a quoted local
/// part stays quoted; a source route is dropped, RFC 5321 §4.1.1.3); `""` is the null
/// reverse path `<>`. Parameter keywords are upper-cased; a keyword without value maps to `""`.
public enum SMTPCommand: Sendable, Hashable {
    case ehlo(String)
    case helo(String)
    case mail(reversePath: String, parameters: [String: String])
    case rcpt(forwardPath: String, parameters: [String: String])
    case data
    case rset
    case noop
    case quit
    case vrfy(String)
    case help(String?)
    /// RFC 3207.
    case starttls
    /// RFC 4954: mechanism upper-cased; the initial response as sent (base64 or `=`), if any.
    case auth(mechanism: String, initialResponse: String?)
    /// RFC 3030: a chunk of `size` octets follows the command line; `last` ends the message.
    case bdat(size: Int, last: Bool)
}

/// Why a command line was refused; `status` selects the reply from `SMTPStatus.table`.
public struct SMTPCommandError: Error, Hashable, Sendable, CustomStringConvertible {
    public var status: SMTPStatus
    /// Detail for logs, never sent to the client.
    public var detail: String
    public init(_ status: SMTPStatus, _ detail: String) {
        self.status = status
        self.detail = detail
    }
    public var description: String { "\(status): \(detail)" }
}

/// Parser for one command line (without its CRLF). Pure, stateless.
public enum SMTPCommandParser {
    /// Longest path accepted (RFC 5321 §4.5.3.1.3: 256 octets including the brackets).
    public static let maximumPathLength = 256
    /// Most ESMTP parameters accepted on one MAIL or RCPT command.
    public static let maximumParameters = 16

    public static func parse(_ line: some Collection<UInt8>) -> Result<SMTPCommand, SMTPCommandError> {
        let bytes = Array(line)
        // Control characters (NUL, bare CR, ...) never appear in a valid command.
        if bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
            return .failure(SMTPCommandError(.invalidCharacter, "control character in command"))
        }
        // Verb: up to the first space.
        let verbEnd = bytes.firstIndex(of: UInt8(ascii: " ")) ?? bytes.count
        let verb = String(decoding: bytes[0..<verbEnd], as: UTF8.self).uppercased()
        let rest = verbEnd < bytes.count ? Array(bytes[(verbEnd + 1)...]) : []
        let hasArgument = verbEnd < bytes.count
        switch verb {
        case "EHLO", "HELO":
            guard let name = parseHeloName(rest) else {
                return .failure(SMTPCommandError(.parameterSyntax, "\(verb) needs one hostname argument"))
            }
            return .success(verb == "EHLO" ? .ehlo(name) : .helo(name))
        case "MAIL":
            return parseMailOrRcpt(rest, prefix: "FROM:", isMail: true)
        case "RCPT":
            return parseMailOrRcpt(rest, prefix: "TO:", isMail: false)
        case "DATA", "RSET", "QUIT":
            if hasArgument {
                return .failure(SMTPCommandError(.parameterSyntax, "\(verb) takes no argument"))
            }
            return .success(verb == "DATA" ? .data : verb == "RSET" ? .rset : .quit)
        case "NOOP":
            return .success(.noop)
        case "VRFY":
            let argument = String(decoding: rest, as: UTF8.self).trimmingSpaces
            if argument.isEmpty {
                return .failure(SMTPCommandError(.parameterSyntax, "VRFY needs an argument"))
            }
            return .success(.vrfy(argument))
        case "HELP":
            let argument = String(decoding: rest, as: UTF8.self).trimmingSpaces
            return .success(.help(argument.isEmpty ? nil : argument))
        case "STARTTLS":
            if hasArgument {
                return .failure(SMTPCommandError(.parameterSyntax, "STARTTLS takes no argument"))
            }
            return .success(.starttls)
        case "AUTH":
            let words = String(decoding: rest, as: UTF8.self).split(separator: " ", omittingEmptySubsequences: true)
            guard (1...2).contains(words.count), words[0].utf8.count <= 20 else {
                return .failure(SMTPCommandError(.parameterSyntax, "AUTH mechanism [initial-response]"))
            }
            return .success(.auth(mechanism: words[0].uppercased(), initialResponse: words.count == 2 ? String(words[1]) : nil))
        case "BDAT":
            let words = String(decoding: rest, as: UTF8.self).split(separator: " ", omittingEmptySubsequences: true)
            guard (1...2).contains(words.count), (1...18).contains(words[0].utf8.count),
                  words[0].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let size = Int(words[0]),
                  words.count == 1 || words[1].uppercased() == "LAST"
            else {
                return .failure(SMTPCommandError(.bdatSyntax, "BDAT size [LAST]"))
            }
            return .success(.bdat(size: size, last: words.count == 2))
        default:
            return .failure(SMTPCommandError(.syntaxError, "unknown verb"))
        }
    }

    /// One token of printable ASCII (a domain or an address literal); strict enough to
    /// refuse garbage, lenient about hostnames that are not strictly valid DNS names
    /// (RFC 5321 §4.1.4 says the server must not refuse mail for a wrong HELO name).
    static func parseHeloName(_ bytes: [UInt8]) -> String? {
        let text = String(decoding: bytes, as: UTF8.self).trimmingSpaces
        guard !text.isEmpty, text.utf8.count <= 255,
              !text.contains(" "),
              text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        else { return nil }
        return text
    }

    static func parseMailOrRcpt(_ rest: [UInt8], prefix: String, isMail: Bool) -> Result<SMTPCommand, SMTPCommandError> {
        let syntaxStatus: SMTPStatus = isMail ? .senderSyntax : .recipientSyntax
        let prefixBytes = Array(prefix.utf8)
        guard rest.count >= prefixBytes.count,
              zip(rest[0..<prefixBytes.count], prefixBytes).allSatisfy({ asciiUpper($0) == $1 })
        else {
            return .failure(SMTPCommandError(.parameterSyntax, "expected \(prefix)"))
        }
        var index = prefixBytes.count
        // Tolerate spaces after the colon (common, harmless; Postfix does the same).
        while index < rest.count, rest[index] == UInt8(ascii: " ") { index += 1 }
        guard index < rest.count, rest[index] == UInt8(ascii: "<") else {
            return .failure(SMTPCommandError(syntaxStatus, "path must be in angle brackets"))
        }
        // Find the closing '>' outside a quoted string.
        var cursor = index + 1
        var inQuotes = false
        var closing: Int?
        while cursor < rest.count {
            let byte = rest[cursor]
            if inQuotes {
                if byte == UInt8(ascii: "\\") { cursor += 2; continue }
                if byte == UInt8(ascii: "\"") { inQuotes = false }
            } else if byte == UInt8(ascii: "\"") {
                inQuotes = true
            } else if byte == UInt8(ascii: ">") {
                closing = cursor
                break
            }
            cursor += 1
        }
        guard let closing else {
            return .failure(SMTPCommandError(syntaxStatus, "unterminated path"))
        }
        if closing - index + 1 > maximumPathLength {
            return .failure(SMTPCommandError(syntaxStatus, "path too long"))
        }
        let inner = Array(rest[(index + 1)..<closing])
        let path: String
        if inner.isEmpty {
            guard isMail else {
                return .failure(SMTPCommandError(syntaxStatus, "null forward path"))
            }
            path = ""
        } else {
            switch SMTPPath.parse(inner, allowPostmaster: !isMail) {
            case .success(let mailbox): path = mailbox
            case .failure(let error): return .failure(SMTPCommandError(syntaxStatus, error.detail))
            }
        }
        // Parameters.
        let tail = Array(rest[(closing + 1)...])
        var parameters: [String: String] = [:]
        if !tail.isEmpty {
            guard tail[0] == UInt8(ascii: " ") else {
                return .failure(SMTPCommandError(.parameterSyntax, "garbage after path"))
            }
            let tokens = tail.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
            if tokens.count > maximumParameters {
                return .failure(SMTPCommandError(.parameterSyntax, "too many parameters"))
            }
            for token in tokens {
                guard let (keyword, value) = parseParameter(Array(token)) else {
                    return .failure(SMTPCommandError(.parameterSyntax, "bad parameter"))
                }
                if parameters[keyword] != nil {
                    return .failure(SMTPCommandError(.parameterSyntax, "duplicate parameter \(keyword)"))
                }
                parameters[keyword] = value
            }
        }
        return .success(isMail ? .mail(reversePath: path, parameters: parameters)
                               : .rcpt(forwardPath: path, parameters: parameters))
    }

    /// esmtp-param = esmtp-keyword ["=" esmtp-value] (RFC 5321 §4.1.2; value may be UTF-8, RFC 6531).
    static func parseParameter(_ token: [UInt8]) -> (String, String)? {
        let equals = token.firstIndex(of: UInt8(ascii: "="))
        let keywordBytes = token[0..<(equals ?? token.count)]
        guard let first = keywordBytes.first, isAlnum(first),
              keywordBytes.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") })
        else { return nil }
        let keyword = String(decoding: keywordBytes, as: UTF8.self).uppercased()
        guard let equals else { return (keyword, "") }
        let valueBytes = Array(token[(equals + 1)...])
        guard !valueBytes.isEmpty,
              valueBytes.allSatisfy({ ($0 >= 33 && $0 <= 126 && $0 != UInt8(ascii: "=")) || $0 >= 0x80 }),
              let value = String(validating: valueBytes, as: UTF8.self)
        else { return nil }
        return (keyword, value)
    }

    static func isAlnum(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
    }

    static func asciiUpper(_ b: UInt8) -> UInt8 {
        (b >= 0x61 && b <= 0x7A) ? b - 0x20 : b
    }
}

/// RFC 5321 §4.1.2 path grammar (with RFC 6531 UTF-8 allowed in atoms and domain labels).
public enum SMTPPath {
    public struct ParseError: Error, Hashable, Sendable {
        public var detail: String
    }

    /// Parses the inside of `<...>`: `[A-d-l ":"] Mailbox`. Returns the mailbox in wire form.
    /// `allowPostmaster`: accept the bare `Postmaster` forward path (RFC 5321 §4.1.1.3).
    public static func parse(_ bytes: [UInt8], allowPostmaster: Bool) -> Result<String, ParseError> {
        var mailboxBytes = bytes[...]
        if bytes.first == UInt8(ascii: "@") {
            // Source route: At-domain *( "," At-domain ) ":" — validated, then dropped.
            guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else {
                return .failure(ParseError(detail: "source route without colon"))
            }
            for hop in bytes[0..<colon].split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                guard hop.first == UInt8(ascii: "@"), isDomain(Array(hop.dropFirst())) else {
                    return .failure(ParseError(detail: "bad source route"))
                }
            }
            mailboxBytes = bytes[(colon + 1)...]
        }
        let mailbox = Array(mailboxBytes)
        guard let text = String(validating: mailbox, as: UTF8.self) else {
            return .failure(ParseError(detail: "invalid UTF-8"))
        }
        if allowPostmaster, text.lowercased() == "postmaster" {
            return .success(text)
        }
        // Split local part and domain at the last '@' outside quotes.
        guard let localEnd = localPartEnd(mailbox) else {
            return .failure(ParseError(detail: "bad local part"))
        }
        guard localEnd < mailbox.count, mailbox[localEnd] == UInt8(ascii: "@") else {
            return .failure(ParseError(detail: "missing domain"))
        }
        let local = Array(mailbox[0..<localEnd])
        let domain = Array(mailbox[(localEnd + 1)...])
        guard !local.isEmpty else { return .failure(ParseError(detail: "empty local part")) }
        guard isDomain(domain) || isAddressLiteral(domain) else {
            return .failure(ParseError(detail: "bad domain"))
        }
        return .success(text)
    }

    /// Index just past a valid Local-part (Dot-string or Quoted-string), or nil.
    static func localPartEnd(_ bytes: [UInt8]) -> Int? {
        guard let first = bytes.first else { return nil }
        if first == UInt8(ascii: "\"") {
            var i = 1
            while i < bytes.count {
                let b = bytes[i]
                if b == UInt8(ascii: "\\") {
                    guard i + 1 < bytes.count, bytes[i + 1] >= 32, bytes[i + 1] <= 126 else { return nil }
                    i += 2
                    continue
                }
                if b == UInt8(ascii: "\"") { return i + 1 }
                // qtextSMTP = %d32-33 / %d35-91 / %d93-126 (plus UTF-8 per RFC 6531)
                guard (b >= 32 && b <= 126) || b >= 0x80 else { return nil }
                i += 1
            }
            return nil
        }
        // Dot-string = Atom *("." Atom)
        var i = 0
        var atomLength = 0
        while i < bytes.count, bytes[i] != UInt8(ascii: "@") {
            let b = bytes[i]
            if b == UInt8(ascii: ".") {
                if atomLength == 0 { return nil }
                atomLength = 0
            } else if isAtext(b) {
                atomLength += 1
            } else {
                return nil
            }
            i += 1
        }
        return atomLength == 0 ? nil : i
    }

    static func isAtext(_ b: UInt8) -> Bool {
        if b >= 0x80 { return true }
        if SMTPCommandParser.isAlnum(b) { return true }
        return "!#$%&'*+-/=?^_`{|}~".utf8.contains(b)
    }

    /// Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str].
    static func isDomain(_ bytes: [UInt8]) -> Bool {
        guard !bytes.isEmpty, bytes.count <= 255 else { return false }
        for label in bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            guard let first = label.first, let last = label.last, label.count <= 63 else { return false }
            func letDig(_ b: UInt8) -> Bool { SMTPCommandParser.isAlnum(b) || b >= 0x80 }
            guard letDig(first), letDig(last),
                  label.allSatisfy({ letDig($0) || $0 == UInt8(ascii: "-") })
            else { return false }
        }
        return true
    }

    /// address-literal = "[" ( IPv4 / "IPv6:" IPv6 / General ) "]" — checked loosely:
    /// IPv4 dotted quad, or a tag followed by ":" and printable non-bracket characters.
    static func isAddressLiteral(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= 3, bytes.first == UInt8(ascii: "["), bytes.last == UInt8(ascii: "]") else {
            return false
        }
        let inner = Array(bytes.dropFirst().dropLast())
        let octets = inner.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        if octets.count == 4, octets.allSatisfy({ o in
            !o.isEmpty && o.count <= 3 && o.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
                && Int(String(decoding: o, as: UTF8.self))! <= 255
        }) {
            return true
        }
        guard let colon = inner.firstIndex(of: UInt8(ascii: ":")), colon > 0 else { return false }
        let tag = inner[0..<colon]
        let content = inner[(colon + 1)...]
        guard tag.allSatisfy({ SMTPCommandParser.isAlnum($0) || $0 == UInt8(ascii: "-") }),
              !content.isEmpty,
              content.allSatisfy({ $0 >= 33 && $0 <= 126 && $0 != UInt8(ascii: "[") && $0 != UInt8(ascii: "]") && $0 != UInt8(ascii: "\\") })
        else { return false }
        if tag.count == 4, String(decoding: tag, as: UTF8.self).uppercased() == "IPV6" {
            return content.allSatisfy({ isHex($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") })
        }
        return true
    }

    static func isHex(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66)
    }

    /// Whether the path contains non-ASCII (needs SMTPUTF8).
    public static func isASCII(_ path: String) -> Bool { path.utf8.allSatisfy { $0 < 0x80 } }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
