/// RFC 5322 §3.4 address lists (`From:`, `Sender:`, `To:`, …), with the obsolete syntax of §4.4
/// that real mail still carries: comments anywhere, folding, quoted local parts, domain literals,
/// groups, obsolete routes (`<@a,@b:x@y>`), empty list elements and dots in display names.
/// Display names have their RFC 2047 encoded words decoded; UTF-8 is allowed in atoms (RFC 6532).
///
/// It is the one parser that decides whose address a header names: ingress checks every mailbox
/// of `From:` and `Sender:` against the customer's domains, the signer signs for the first one.
/// Anything it cannot read exactly is an error, never a guess — a guess is what lets
/// `<a@other.example>, <me@customer.example>` pass as the customer's.
public enum AddressList {
    /// One mailbox: `local-part@domain`, with the display name that came with it.
    public struct Mailbox: Sendable, Hashable, CustomStringConvertible {
        public var displayName: String?
        /// The local part as the recipient's server sees it (quotes and escapes removed).
        public var localPart: String
        /// The domain, lower-cased; for a domain literal the text between the brackets.
        public var domain: String
        public var isDomainLiteral: Bool
        public var description: String { isDomainLiteral ? "\(localPart)@[\(domain)]" : "\(localPart)@\(domain)" }
    }

    public enum Address: Sendable, Hashable {
        case mailbox(Mailbox)
        case group(name: String, members: [Mailbox])

        public var mailboxes: [Mailbox] {
            switch self {
            case .mailbox(let m): return [m]
            case .group(_, let members): return members
            }
        }
    }

    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    /// Bounds, so that a hostile header costs little.
    public static let maxLength = 65_536
    public static let maxAddresses = 1_000
    public static let maxCommentDepth = 32

    /// Parses an unfolded or folded header value (what follows the colon).
    public static func parse(_ value: String) throws(ParseError) -> [Address] {
        let scalars = Array(value.unicodeScalars)
        guard scalars.count <= maxLength else { throw ParseError(reason: "header too long") }
        var parser = Parser(tokens: try tokenize(scalars))
        return try parser.addressList()
    }

    /// Every mailbox of the list, groups flattened, in order.
    public static func mailboxes(_ value: String) throws(ParseError) -> [Mailbox] {
        try parse(value).flatMap(\.mailboxes)
    }

    // MARK: - Tokens

    enum Token: Equatable {
        case atom(String)
        case quoted(String)
        case literal(String)
        case special(Character)   // < > @ , ; : .
    }

    static func isAtext(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x41...0x5A, 0x61...0x7A, 0x30...0x39: return true
        case 0x80...: return true   // RFC 6532 UTF8-non-ascii
        default: return "!#$%&'*+-/=?^_`{|}~".unicodeScalars.contains(c)
        }
    }

    static func isWhitespace(_ c: Unicode.Scalar) -> Bool {
        c == " " || c == "\t" || c == "\r" || c == "\n"
    }

    static func tokenize(_ s: [Unicode.Scalar]) throws(ParseError) -> [Token] {
        var tokens: [Token] = []
        var i = 0
        func fail(_ reason: String) -> ParseError { ParseError(reason: reason) }
        while i < s.count {
            let c = s[i]
            if isWhitespace(c) { i += 1; continue }
            switch c {
            case "(":
                var depth = 0
                repeat {
                    guard i < s.count else { throw fail("unterminated comment") }
                    switch s[i] {
                    case "\\": i += 1
                    case "(":
                        depth += 1
                        guard depth <= maxCommentDepth else { throw fail("comments nested too deeply") }
                    case ")": depth -= 1
                    case let x where x.value < 0x20 && !isWhitespace(x) || x.value == 0x7F:
                        throw fail("control character in a comment")
                    default: break
                    }
                    i += 1
                } while depth > 0
            case "\"":
                var text = String.UnicodeScalarView()
                i += 1
                while true {
                    guard i < s.count else { throw fail("unterminated quoted string") }
                    let q = s[i]
                    if q == "\"" { i += 1; break }
                    if q == "\\" {
                        guard i + 1 < s.count else { throw fail("unterminated quoted string") }
                        text.append(s[i + 1]); i += 2; continue
                    }
                    if q == "\r" || q == "\n" { i += 1; continue }   // folding
                    if q.value < 0x20 && q != "\t" || q.value == 0x7F { throw fail("control character in a quoted string") }
                    text.append(q); i += 1
                }
                tokens.append(.quoted(String(text)))
            case "[":
                var text = String.UnicodeScalarView()
                i += 1
                while true {
                    guard i < s.count else { throw fail("unterminated domain literal") }
                    let q = s[i]
                    if q == "]" { i += 1; break }
                    if q == "[" { throw fail("'[' inside a domain literal") }
                    if q == "\\" { i += 1; continue }
                    if isWhitespace(q) { i += 1; continue }
                    if q.value < 0x20 || q.value == 0x7F { throw fail("control character in a domain literal") }
                    text.append(q); i += 1
                }
                if text.isEmpty { throw fail("empty domain literal") }
                tokens.append(.literal(String(text)))
            case "<", ">", "@", ",", ";", ":", ".":
                tokens.append(.special(Character(c))); i += 1
            case ")": throw fail("unbalanced ')'")
            case "]": throw fail("unbalanced ']'")
            case "\\": throw fail("backslash outside a quoted string")
            default:
                guard isAtext(c) else { throw fail("character U+\(String(c.value, radix: 16, uppercase: true)) not allowed here") }
                var text = String.UnicodeScalarView()
                while i < s.count, isAtext(s[i]) { text.append(s[i]); i += 1 }
                tokens.append(.atom(String(text)))
            }
        }
        return tokens
    }

    // MARK: - Grammar

    struct Parser {
        let tokens: [Token]
        var i = 0

        init(tokens: [Token]) { self.tokens = tokens }

        var next: Token? { i < tokens.count ? tokens[i] : nil }

        func fail(_ reason: String) -> ParseError {
            let at: String
            switch next {
            case nil: at = "at the end"
            case .atom(let a)?: at = "at \"\(a.prefix(40))\""
            case .quoted?: at = "at a quoted string"
            case .literal?: at = "at a domain literal"
            case .special(let c)?: at = "at '\(c)'"
            }
            return ParseError(reason: "\(reason) \(at)")
        }

        mutating func take(_ c: Character) -> Bool {
            if next == .special(c) { i += 1; return true }
            return false
        }

        /// address-list, also obs-addr-list (empty elements between commas).
        mutating func addressList() throws(ParseError) -> [Address] {
            var out: [Address] = []
            while next != nil {
                if take(",") { continue }
                out.append(try address())
                guard out.count <= AddressList.maxAddresses else { throw fail("too many addresses") }
                if next != nil, !take(",") { throw fail("expected ',' between addresses") }
            }
            guard !out.isEmpty else { throw ParseError(reason: "no address") }
            return out
        }

        mutating func address() throws(ParseError) -> Address {
            let start = i
            let name = phrase()
            if let name, take(":") {
                var members: [Mailbox] = []
                while !take(";") {
                    guard next != nil else { throw fail("group \"\(name.prefix(40))\" without ';'") }
                    if take(",") { continue }
                    members.append(try mailbox(allowGroup: false))
                    guard members.count <= AddressList.maxAddresses else { throw fail("too many addresses") }
                    if next != .special(";"), !take(",") { throw fail("expected ',' or ';' in a group") }
                }
                return .group(name: name, members: members)
            }
            i = start
            return .mailbox(try mailbox(allowGroup: true))
        }

        /// mailbox = name-addr / addr-spec
        mutating func mailbox(allowGroup: Bool) throws(ParseError) -> Mailbox {
            let start = i
            let name = phrase()
            if next == .special("<") {
                var m = try angleAddress()
                m.displayName = name
                return m
            }
            if name != nil, next == .special(":") {
                throw fail(allowGroup ? "unexpected ':'" : "a group inside a group")
            }
            i = start
            return try addrSpec()
        }

        /// display-name = phrase (obs-phrase: dots allowed after the first word). nil when no word.
        mutating func phrase() -> String? {
            var words: [String] = []
            loop: while let t = next {
                switch t {
                case .atom(let a): words.append(a)
                case .quoted(let q): words.append(q)
                case .special("."): if words.isEmpty { break loop }; words.append(".")
                default: break loop
                }
                i += 1
            }
            guard !words.isEmpty else { return nil }
            return MIMEDecoding.encodedWords(words.joined(separator: " "))
        }

        /// angle-addr = "<" [obs-route] addr-spec ">"
        mutating func angleAddress() throws(ParseError) -> Mailbox {
            guard take("<") else { throw fail("expected '<'") }
            if next == .special(">") { throw fail("empty address") }
            if next == .special("@") || next == .special(",") {
                // obs-route: @a,@b: — the route is ignored (RFC 5322 §4.4).
                while take(",") || next == .special("@") {
                    if take("@") { _ = try domain() }
                }
                guard take(":") else { throw fail("expected ':' after a route") }
            }
            let m = try addrSpec()
            guard take(">") else { throw fail("expected '>'") }
            return m
        }

        /// addr-spec = local-part "@" domain; local-part = word *("." word) (dot-atom, quoted, obsolete)
        mutating func addrSpec() throws(ParseError) -> Mailbox {
            var local = ""
            while true {
                switch next {
                case .atom(let a)?: local += a
                case .quoted(let q)?: local += q
                default: throw fail(local.isEmpty ? "expected an address" : "expected a word after '.'")
                }
                i += 1
                guard take(".") else { break }
                local += "."
            }
            guard take("@") else { throw fail("expected '@'") }
            let (d, literal) = try domain()
            return Mailbox(displayName: nil, localPart: local, domain: d, isDomainLiteral: literal)
        }

        /// domain = dot-atom / domain-literal / obs-domain
        mutating func domain() throws(ParseError) -> (String, Bool) {
            if case .literal(let l)? = next {
                i += 1
                return (l, true)
            }
            var labels: [String] = []
            while true {
                guard case .atom(let a)? = next else {
                    throw fail(labels.isEmpty ? "expected a domain" : "expected a label after '.'")
                }
                labels.append(a.lowercased())
                i += 1
                guard take(".") else { break }
            }
            return (labels.joined(separator: "."), false)
        }
    }
}
