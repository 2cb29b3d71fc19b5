import SMGMIME

/// What the spam engine reads off one message: the tokens the statistical model scores, and the
/// facts the rules look at. Extracted once per message, from the raw RFC 5322 octets.
///
/// Tokens are chosen to generalise to mail from other senders and years rather than to memorise a
/// corpus: words of the subject and of the decoded text (HTML reduced to text), the registrable
/// part of URL and sender domains, MIME structure (part types, attachment extensions), and the
/// mailer family. Routing headers (`Received`, IP addresses, dates, message ids) give no tokens:
/// they name the corpus's servers and era, not what makes a message spam.
public struct MessageFeatures: Sendable {
    /// Distinct tokens; prefixes tell where a token came from (`s:` subject, `url:` link domain, …).
    public var tokens: Set<String> = []
    /// Header fields by lower-cased name, first occurrence, raw (unfolded) value.
    public var headers: [String: String] = [:]
    public var headerNames: Set<String> = []
    public var subject: String = ""
    public var textParts = 0
    public var htmlParts = 0
    /// Text of every text part, lower-cased, HTML reduced to text (bounded).
    public var text: String = ""
    /// Decoded HTML of the HTML parts, lower-cased (bounded), for the rules that look at markup.
    public var html: String = ""
    /// Host names of links (lower-cased), in order of appearance, with duplicates.
    public var urlHosts: [String] = []
    /// Their registrable domains (`ip` for numeric hosts).
    public var urlDomains: Set<String> = []
    /// Links whose visible text names another domain than the link goes to: (shown, target).
    public var mismatchedLinks: [(shown: String, target: String)] = []
    /// File names of attachments (and non-text parts with a name).
    public var attachmentNames: [String] = []
    /// A text part declared US-ASCII (or without charset) that carries 8-bit octets.
    public var undeclared8bit = false
    /// A text/plain part sent base64-encoded (rare for real mail clients writing plain text).
    public var base64Text = false
    /// A text/html part sent base64-encoded.
    public var base64HTML = false
    /// A link whose host is hidden behind `user@`, %-escapes or character references.
    public var obfuscatedURL = false
    /// Words of the visible text (split at white space), and how many of them are capitals (3+ letters).
    public var visibleWords = 0
    public var capitalWords = 0
    public var mimeDefects = 0
    /// The raw message contains the GTUBE test string.
    public var gtube = false

    public init() {}
}

public enum FeatureExtractor {
    /// Bytes of decoded text looked at per message; beyond this a message gives no more tokens.
    public static let maxTextBytes = 256 * 1024
    static let gtubeString = Array("XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X".utf8)

    public static func extract(_ raw: [UInt8]) -> MessageFeatures {
        var f = MessageFeatures()
        f.tokens.reserveCapacity(512)
        f.gtube = Search.firstIndex(of: gtubeString, in: raw) != nil
        let message = MIMEParser.parse(raw, limits: MIMELimits(maxDepth: 8, maxParts: 200,
                                                               maxDecodedBytes: 4 * maxTextBytes))
        f.mimeDefects = message.defects.count
        (f.headers, f.headerNames) = firstFields(message.headers)
        headerTokens(&f)
        var budget = maxTextBytes
        var textChunks: [String] = []
        var htmlChunks: [String] = []
        for part in message.leaves {
            let type = part.mimeType
            let charsetParameter = part.contentType.parameters["charset"]?.lowercased()
            let charset = charsetParameter ?? "us-ascii"
            if !part.transferEncoding.isEmpty { f.tokens.insert("cte:\(part.transferEncoding.prefix(20))") }
            if let charsetParameter { f.tokens.insert("cs:\(charsetParameter.prefix(20))") }
            if type == "text/plain" || type == "text/html" || (type.hasPrefix("text/") && part.filename == nil) {
                let body = budget < part.body.count ? Array(part.body.prefix(budget)) : part.body
                budget -= body.count
                if (charset == "us-ascii" || charset == "ascii") && body.contains(where: { $0 >= 0x80 }) {
                    f.undeclared8bit = true
                }
                let text = MIMEDecoding.text(body, charset: charset)
                if type == "text/html" {
                    f.htmlParts += 1
                    f.tokens.insert("ct:html")
                    if part.transferEncoding == "base64" { f.base64HTML = true }
                    let (visible, links) = HTMLText.reduce(text)
                    htmlChunks.append(lowercasedFast(text))
                    textChunks.append(visible)
                    for link in links {
                        guard let host = urlHost(link.href) else { continue }
                        f.urlHosts.append(host)
                        if let shown = urlHost(link.text.trimmingSpaces()), registrable(shown) != registrable(host) {
                            f.mismatchedLinks.append((shown, host))
                        }
                    }
                } else {
                    f.textParts += 1
                    f.tokens.insert("ct:text")
                    if part.transferEncoding == "base64" && type == "text/plain" { f.base64Text = true }
                    textChunks.append(text)
                }
            } else {
                f.tokens.insert("ct:\(type)")
                if let name = part.filename {
                    f.attachmentNames.append(name)
                    if let dot = name.lastIndex(of: "."), name.distance(from: dot, to: name.endIndex) <= 9 {
                        f.tokens.insert("ext:\(name[name.index(after: dot)...].lowercased())")
                    }
                }
            }
            if budget <= 0 { break }
        }
        let visible = textChunks.joined(separator: "\n")
        (f.visibleWords, f.capitalWords) = Words.countCapitals(visible)
        f.text = lowercasedFast(visible)
        f.html = htmlChunks.joined(separator: "\n")
        // Links written out in the text, and every link in the HTML source (attributes included).
        for host in plainURLHosts(f.text, obfuscated: &f.obfuscatedURL) { f.urlHosts.append(host) }
        for host in plainURLHosts(f.html, obfuscated: &f.obfuscatedURL) { f.urlHosts.append(host) }
        for host in Set(f.urlHosts) { f.urlDomains.insert(registrable(host)) }
        for domain in f.urlDomains { f.tokens.insert("url:\(domain)") }
        Words.each(in: f.text) { f.tokens.insert($0) }
        return f
    }

    static func headerTokens(_ f: inout MessageFeatures) {
        let subject = f.headers["subject"].map { MIMEDecoding.encodedWords($0) } ?? ""
        f.subject = subject
        if f.headers["subject"] == nil { f.tokens.insert("nohdr:subject") }
        Words.each(in: subject.lowercased()) { f.tokens.insert("s:\($0)") }
        // Return-Path is written by the final delivery, never at submission: a corpus of delivered
        // mail would teach its absence as a sign, so it gives no token at all.
        for name in ["from", "reply-to", "to", "cc", "sender"] {
            guard let value = f.headers[name] else {
                if name == "from" || name == "to" || name == "reply-to" { f.tokens.insert("nohdr:\(name)") }
                continue
            }
            let decoded = MIMEDecoding.encodedWords(value).lowercased()
            if let domain = addressDomain(decoded) { f.tokens.insert("\(name):\(registrable(domain))") }
            if name == "from" || name == "to" {
                Words.each(in: displayName(decoded)) { f.tokens.insert("\(name)n:\($0)") }
            }
        }
        if let type = f.headers["content-type"] {
            let main = type.split(separator: ";", maxSplits: 1).first.map(String.init) ?? type
            f.tokens.insert("content-type:\(main.trimmingSpaces().lowercased())")
        }
        if let mailer = f.headers["x-mailer"] ?? f.headers["user-agent"] {
            f.tokens.insert("x-mailer:\(mailerFamily(mailer))")
        } else {
            f.tokens.insert("x-mailer:none")
        }
    }

    /// The header fields of a raw message by lower-cased name (first occurrence), without parsing
    /// its body: for callers that need only the header (the rspamd backend's bulk markers).
    public static func headerFields(of raw: [UInt8]) -> [String: String] {
        firstFields(MIMEParser.parse(MIMEParser.headerSection(raw) + [13, 10]).headers).fields
    }

    static func firstFields(_ headers: MIMEHeaders) -> (fields: [String: String], names: Set<String>) {
        var fields: [String: String] = [:], names: Set<String> = []
        for field in headers.fields {
            let name = field.name.lowercased()
            names.insert(name)
            if fields[name] == nil { fields[name] = field.value }
        }
        return (fields, names)
    }

    // MARK: - small helpers

    /// `lowercased()`, with a byte loop for pure ASCII text (most mail): the Unicode path was a
    /// tenth of the engine's time.
    static func lowercasedFast(_ text: String) -> String {
        var t = text
        // Latin-1 text (ASCII plus U+0080…U+00FF, lead octets C2/C3) is lower-cased octet by octet;
        // anything else goes through the Unicode tables.
        let simple = t.withUTF8 { b in !b.contains { $0 >= 0x80 && $0 != 0xC2 && $0 != 0xC3 && $0 & 0xC0 != 0x80 } }
        guard simple else { return text.lowercased() }
        return t.withUTF8 { b in
            String(unsafeUninitializedCapacity: b.count) { out in
                var i = 0
                while i < b.count {
                    let x = b[i]
                    if x >= 0x41 && x <= 0x5A {
                        out[i] = x | 0x20
                    } else if x == 0xC3 && i + 1 < b.count && b[i + 1] >= 0x80 && b[i + 1] <= 0x9E && b[i + 1] != 0x97 {
                        out[i] = x                      // À…Þ (not ×) → à…þ
                        out[i + 1] = b[i + 1] + 0x20
                        i += 1
                    } else {
                        out[i] = x
                    }
                    i += 1
                }
                return b.count
            }
        }
    }

    /// The mailer's name without versions: digits and dots become `#`, at most 30 characters.
    static func mailerFamily(_ value: String) -> String {
        var out = ""
        var lastHash = false
        for ch in value.lowercased().unicodeScalars.prefix(40) {
            if ch.properties.numericType != nil || ch == "." {
                if !lastHash { out.unicodeScalars.append("#") }
                lastHash = true
            } else {
                out.unicodeScalars.append(ch)
                lastHash = false
            }
        }
        return String(out.trimmingSpaces().prefix(30))
    }

    /// The domain of the first address in a header value (`Name <a@b.example>` or `a@b.example`).
    static func addressDomain(_ value: String) -> String? {
        let inner: Substring
        if let open = value.lastIndex(of: "<"), let close = value[open...].firstIndex(of: ">") {
            inner = value[value.index(after: open)..<close]
        } else {
            inner = Substring(value)
        }
        guard let at = inner.lastIndex(of: "@") else { return nil }
        let domain = inner[inner.index(after: at)...].prefix { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" }
        return domain.isEmpty ? nil : String(domain).trimming(".")
    }

    /// The display name part of `Name <addr>` (empty when there is none).
    static func displayName(_ value: String) -> String {
        guard let open = value.lastIndex(of: "<") else { return "" }
        return String(value[..<open])
    }

    /// The last two labels of a host name (three when the second-level label is a common public
    /// suffix part such as `co.uk`): what a sender registers, not which server of theirs it is.
    public static func registrable(_ host: String) -> String {
        var h = host
        return h.withUTF8 { b -> String in
            // The last three dots, from the right.
            var dots: [Int] = []
            var i = b.count - 1
            var numeric = true
            while i >= 0 {
                if b[i] == UInt8(ascii: ".") { if dots.count < 3 { dots.append(i) } }
                else if b[i] < 0x30 || b[i] > 0x39 { numeric = false }
                i -= 1
            }
            guard dots.count >= 2 else { return host }
            if numeric { return "ip" }
            let tld = b.count - dots[0] - 1, second = dots[0] - dots[1] - 1
            var take = 2
            if tld == 2 && second <= 3 {
                let label = String(decoding: UnsafeBufferPointer(rebasing: b[(dots[1] + 1)..<dots[0]]), as: UTF8.self)
                if ["co", "com", "net", "org", "ac", "gov", "ne", "or", "edu"].contains(label) { take = 3 }
            }
            let start = take == 3 ? (dots.count >= 3 ? dots[2] + 1 : 0) : dots[1] + 1
            return String(decoding: UnsafeBufferPointer(rebasing: b[start...]), as: UTF8.self)
        }
    }

    /// The host of an `http(s)://` or `www.` link, lower-cased; nil for anything else.
    static func urlHost(_ link: String) -> String? {
        var l = link
        return l.withUTF8 { b in
            var i = 0
            while i < b.count && (b[i] == 0x20 || b[i] == 0x09 || b[i] == 0x0A || b[i] == 0x0D) { i += 1 }
            var obfuscated = false
            return host(in: UnsafeBufferPointer(rebasing: b[i...]), obfuscated: &obfuscated)
        }
    }

    static func startsWith(_ b: UnsafeBufferPointer<UInt8>, _ k: Int, _ s: StaticString) -> Bool {
        s.withUTF8Buffer { p in
            guard k + p.count <= b.count else { return false }
            for j in 0..<p.count where b[k + j] | (b[k + j] >= 0x41 && b[k + j] <= 0x5A ? 0x20 : 0) != p[j] { return false }
            return true
        }
    }

    /// The host of the link that starts at the beginning of `b` (`http://`, `https://` or `www.`),
    /// lower-cased, without user info, port or trailing dots. Sets `obfuscated` when the authority
    /// holds `@`, `%` or `&#`.
    static func host(in b: UnsafeBufferPointer<UInt8>, obfuscated: inout Bool) -> String? {
        let scheme: Int
        if startsWith(b, 0, "http://") { scheme = 7 }
        else if startsWith(b, 0, "https://") { scheme = 8 }
        else if startsWith(b, 0, "www.") { scheme = 0 }
        else { return nil }
        // The authority: up to the first / ? # or a character that ends a link.
        var end = scheme
        var at = -1
        while end < b.count && end < scheme + 255 {
            let x = b[end]
            if x == 0x2F || x == 0x3F || x == 0x23 || x <= 0x20 || x == 0x22 || x == 0x27 || x == 0x3C || x == 0x3E
                || x == 0x29 || x == 0x5D && (end == scheme || b[scheme] != 0x5B) { break }
            if x == 0x40 { at = end; obfuscated = true }
            if x == 0x25 || (x == 0x26 && end + 1 < b.count && b[end + 1] == 0x23) { obfuscated = true }
            end += 1
        }
        var start = at >= 0 ? at + 1 : scheme
        var out: [UInt8] = []
        out.reserveCapacity(end - start)
        if start < end && b[start] == 0x5B {  // [IPv6]
            start += 1
            while start < end && b[start] != 0x5D { out.append(b[start] | (b[start] >= 0x41 && b[start] <= 0x5A ? 0x20 : 0)); start += 1 }
        } else {
            while start < end {
                var x = b[start]
                if x >= 0x41 && x <= 0x5A { x |= 0x20 }
                guard Words.isAlnum(x) || x == 0x2E || x == 0x2D || x >= 0x80 else { break }  // stops at ':' (port)
                out.append(x)
                start += 1
            }
            while out.last == 0x2E { out.removeLast() }
            while out.first == 0x2E { out.removeFirst() }
        }
        return out.isEmpty ? nil : String(decoding: out, as: UTF8.self)
    }

    /// Hosts of links written out in (lower-cased) text or HTML source (`http://`, `https://`,
    /// `www.`); sets `obfuscated` when a link's host part holds `@`, `%` or `&#`. One pass over the bytes.
    static func plainURLHosts(_ text: String, obfuscated: inout Bool) -> [String] {
        var hosts: [String] = []
        var t = text
        t.withUTF8 { b in
            var i = 0
            while i < b.count && hosts.count < 200 {
                let c = b[i]
                let candidate = (c == UInt8(ascii: "h") && i + 7 <= b.count && b[i + 1] == UInt8(ascii: "t"))
                    || (c == UInt8(ascii: "w") && (i == 0 || !Words.isAlnum(b[i - 1])))
                if candidate, let host = host(in: UnsafeBufferPointer(rebasing: b[i...]), obfuscated: &obfuscated) {
                    hosts.append(host)
                    i += 4
                } else {
                    i += 1
                }
            }
        }
        return hosts
    }
}

/// The words of a text, as the model sees them: lower-case runs of letters, digits and `'$!-`,
/// trimmed of leading and trailing punctuation, 3 to 12 characters; longer runs become one
/// `skip:<first letter> <length in tens>` token, so a block of base64 or a long URL path says only
/// that it is there (SpamBayes's trick; longer words generalised worse across eras).
enum Words {
    static let maxLength = 12

    /// Words split at white space, and those that are capitals of 3 letters or more.
    static func countCapitals(_ text: String) -> (words: Int, capitals: Int) {
        var text = text
        // Over the contiguous bytes, with the counters local to the closure (captured mutable
        // variables live in boxes): `text.utf8`'s iterator with captured counters was 10 % of the engine.
        return text.withUTF8 { utf8 -> (words: Int, capitals: Int) in
            var words = 0, capitals = 0
            var letters = 0, upper = 0, inWord = false
            for byte in utf8 {
                if byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 {
                    if inWord {
                        words += 1
                        if letters >= 3 && upper == letters { capitals += 1 }
                    }
                    inWord = false; letters = 0; upper = 0
                } else {
                    inWord = true
                    let folded = byte | 0x20
                    if folded >= 0x61 && folded <= 0x7A {
                        letters += 1
                        if byte < 0x60 { upper += 1 }
                    }
                }
            }
            if inWord {
                words += 1
                if letters >= 3 && upper == letters { capitals += 1 }
            }
            return (words, capitals)
        }
    }

    /// Whether `word` occurs in `text` as a whole word.
    static func containsWord(_ text: String, _ word: String) -> Bool {
        var found = false
        each(in: text) { if $0 == word { found = true } }
        if !found, word.count < 3 {
            found = text.split(whereSeparator: { !$0.isLetter && !$0.isNumber }).contains { $0 == word }
        }
        return found
    }

    static func each(in text: String, _ body: (String) -> Void) {
        var t = text
        t.withUTF8 { b in
            func emit(_ from: Int, _ to: Int) {
                var start = from, end = to
                while start < end && !isAlnum(b[start]) && b[start] < 0x80 { start += 1 }
                while end > start && !(isAlnum(b[end - 1]) || b[end - 1] == UInt8(ascii: "$")
                                       || b[end - 1] == UInt8(ascii: "!") || b[end - 1] >= 0x80) { end -= 1 }
                let bytes = end - start
                if bytes < 3 { return }
                // Length in characters: bytes for ASCII, scalars otherwise (continuation octets don't count).
                var length = bytes
                for i in start..<end where b[i] & 0xC0 == 0x80 { length -= 1 }
                let word = UnsafeBufferPointer(rebasing: b[start..<end])
                if length >= 3 && length <= maxLength {
                    body(String(decoding: word, as: UTF8.self))
                } else if length > maxLength {
                    // Only the first character is needed: ASCII without decoding the whole word.
                    let first = b[start] < 0x80 ? Unicode.Scalar(b[start])
                        : String(decoding: word.prefix(4), as: UTF8.self).unicodeScalars.first ?? "\u{FFFD}"
                    body("skip:\(Character(first)) \(length / 10 * 10)")
                }
            }
            var wordStart = -1
            for i in 0..<b.count {
                let byte = b[i]
                if isAlnum(byte) || byte >= 0x80 || byte == UInt8(ascii: "'") || byte == UInt8(ascii: "$")
                    || byte == UInt8(ascii: "!") || byte == UInt8(ascii: "-") {
                    if wordStart < 0 { wordStart = i }
                } else if wordStart >= 0 {
                    emit(wordStart, i)
                    wordStart = -1
                }
            }
            if wordStart >= 0 { emit(wordStart, b.count) }
        }
    }

    @inline(__always) static func isAlnum(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A)
    }
}

/// HTML reduced to what a reader sees, plus its links. Not a full HTML parser: tags are dropped,
/// `<style>`/`<script>` contents skipped, common entities decoded; enough for tokens and rules.
enum HTMLText {
    struct Link { var href: String; var text: String }

    static func reduce(_ html: String) -> (text: String, links: [Link]) {
        var out: [UInt8] = []
        out.reserveCapacity(html.utf8.count / 2)
        var links: [Link] = []
        let bytes = Array(html.utf8)
        var i = 0
        var openLink: (href: String, textStart: Int)? = nil
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "<") {
                guard let close = bytes[i...].firstIndex(of: UInt8(ascii: ">")) else { break }
                let tag = bytes[(i + 1)..<close]
                let name = tag.prefix { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") && $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: "\r") }
                let tagName = String(decoding: name, as: UTF8.self).lowercased()
                if tagName == "style" || tagName == "script" {
                    if let j = findClosing(tagName, in: bytes, from: close) {
                        i = bytes[j...].firstIndex(of: UInt8(ascii: ">")).map { $0 + 1 } ?? bytes.count
                        continue
                    }
                } else if tagName == "a" {
                    if let href = attribute("href", in: String(decoding: tag, as: UTF8.self).lowercased()) {
                        openLink = (href, out.count)
                    }
                } else if tagName == "/a", let link = openLink {
                    links.append(Link(href: link.href, text: String(decoding: out[link.textStart...], as: UTF8.self).lowercased()))
                    openLink = nil
                }
                out.append(UInt8(ascii: " "))
                i = close + 1
            } else if b == UInt8(ascii: "&") {
                let end = bytes[i..<min(bytes.count, i + 10)].firstIndex(of: UInt8(ascii: ";"))
                if let end, let decoded = entity(bytes[(i + 1)..<end]) {
                    out.append(contentsOf: decoded)
                    i = end + 1
                } else {
                    out.append(b)
                    i += 1
                }
            } else {
                out.append(b)
                i += 1
            }
        }
        return (String(decoding: out, as: UTF8.self), links)
    }

    /// Where `</name` starts (ASCII case-insensitive), from `from` on.
    static func findClosing(_ name: String, in bytes: [UInt8], from: Int) -> Int? {
        let needle = Array("</\(name)".utf8)
        var i = from
        while i + needle.count <= bytes.count {
            var j = 0
            while j < needle.count && (bytes[i + j] | 0x20) == (needle[j] | 0x20) { j += 1 }
            if j == needle.count { return i }
            i += 1
        }
        return nil
    }

    static func attribute(_ name: String, in tag: String) -> String? {
        let needle = Array("\(name)=".utf8)
        let bytes = Array(tag.utf8)
        guard let found = Search.firstIndex(of: needle, in: bytes) else { return nil }
        var rest = Substring(String(decoding: bytes[(found + needle.count)...], as: UTF8.self))
        if let quote = rest.first, quote == "\"" || quote == "'" {
            rest = rest.dropFirst()
            return String(rest.prefix { $0 != quote })
        }
        return String(rest.prefix { !$0.isWhitespace && $0 != ">" })
    }

    static func entity(_ name: ArraySlice<UInt8>) -> [UInt8]? {
        switch String(decoding: name, as: UTF8.self) {
        case "nbsp": return [0x20]
        case "amp": return [UInt8(ascii: "&")]
        case "lt": return [UInt8(ascii: "<")]
        case "gt": return [UInt8(ascii: ">")]
        case "quot": return [UInt8(ascii: "\"")]
        case "apos": return [UInt8(ascii: "'")]
        case let s where s.hasPrefix("#"):
            let digits = s.dropFirst()
            let value = digits.hasPrefix("x") ? UInt32(digits.dropFirst(), radix: 16) : UInt32(digits)
            guard let value, let scalar = Unicode.Scalar(value) else { return nil }
            return Array(String(Character(scalar)).utf8)
        default: return nil
        }
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s = s.dropFirst() }
        while let c = s.last, c.isWhitespace { s = s.dropLast() }
        return String(s)
    }

    func trimming(_ set: Character) -> String {
        var s = Substring(self)
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return String(s)
    }
}
