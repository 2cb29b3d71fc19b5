import SMGMIME

/// One rule that matched: its name (stable, shown to customers), points and a readable reason.
public struct RuleHit: Sendable, Hashable, Codable {
    public var name: String
    public var points: Double
    public var description: String

    public init(name: String, points: Double, description: String) {
        self.name = name
        self.points = points
        self.description = description
    }
}

/// The hand-written rules: each looks at `MessageFeatures` and adds points. Positive points push
/// towards spam; `bulk` rules mark legitimate bulk mail (lists, newsletters) and carry no points.
/// Points were set from hit rates on the training folders only (see bench/README.md).
public enum SpamRules {
    /// Rules that say a message is sent in bulk (a list or newsletter), not that it is spam.
    public static let bulkRuleNames: Set<String> = ["LIST_UNSUBSCRIBE", "PRECEDENCE_BULK", "LIST_ID"]

    static let shorteners: Set<String> = [
        "bit.ly", "tinyurl.com", "goo.gl", "t.co", "ow.ly", "is.gd", "buff.ly", "rebrand.ly", "cutt.ly",
        "shorturl.at", "tiny.cc", "rb.gy", "t.ly", "s.id", "v.gd", "bl.ink",
    ]
    static let freemail: Set<String> = [
        "gmail.com", "googlemail.com", "yahoo.com", "hotmail.com", "outlook.com", "live.com", "msn.com", "aol.com",
        "gmx.de", "gmx.net", "web.de", "mail.ru", "yandex.ru", "icloud.com", "proton.me", "protonmail.com",
        "excite.com", "juno.com", "netscape.net", "lycos.com", "mail.com", "earthlink.net", "yahoo.co.uk", "usa.net",
        "email.com", "netzero.net", "compuserve.com", "hotmail.co.uk", "yahoo.fr", "yahoo.de", "t-online.de",
        "rediffmail.com",
    ]
    static let hiddenRecipients: [StaticString] = ["undisclosed", "recipient list not shown", "suppressed"]
    static let advertisementMarks: [StaticString] = ["adv:", "[adv]"]
    static let bulkPrecedence: [StaticString] = ["bulk", "list", "junk"]

    /// Attachment types that run code when opened; the virus scanner passed them, but sending them
    /// in bulk is a mark of malware campaigns.
    static let dangerousExtensions: Set<String> = [
        "exe", "scr", "pif", "bat", "cmd", "com", "js", "jse", "vbs", "vbe", "wsf", "hta", "lnk", "jar",
        "msi", "ps1", "cpl", "iso", "img",
    ]

    public static func evaluate(_ f: MessageFeatures) -> [RuleHit] {
        var hits: [RuleHit] = []
        func hit(_ name: String, _ points: Double, _ text: String) {
            hits.append(RuleHit(name: name, points: points, description: text))
        }
        if f.gtube { hit("GTUBE", 1000, "contains the GTUBE anti-spam test string") }

        // Header anomalies: what careful mail software never writes.
        if let id = f.headers["message-id"] {
            let t = id.trimmingSpaces()
            if !t.contains("@") || !(t.hasPrefix("<") && t.hasSuffix(">")) {
                hit("MESSAGE_ID_MALFORMED", 1, "the Message-ID is not of the form <left@right>")
            }
        } else {
            hit("MISSING_MESSAGE_ID", 1, "no Message-ID header")
        }
        if let date = f.headers["date"] {
            if !DateCheck.looksValid(date) {
                hit("DATE_MALFORMED", 1, "the Date header is not an RFC 5322 date")
            } else if !DateCheck.hasZone(date) {
                hit("DATE_NO_TIMEZONE", 1, "the Date header has no time zone")
            }
        } else {
            hit("MISSING_DATE", 1, "no Date header")
        }
        let to = f.headers["to"]?.lowercased()
        if let to {
            if Search.containsAny(to, hiddenRecipients) {
                hit("TO_UNDISCLOSED", 1, "the recipients are hidden (To: undisclosed recipients)")
            } else if !to.trimmingSpaces().isEmpty && !to.contains("@") {
                hit("TO_NO_ADDRESS", 1, "the To header holds no address")
            } else if to.filter({ $0 == "@" }).count >= 5 {
                hit("TO_MANY", 1, "five or more recipients in To, visible to each other")
            }
        }
        let fromValue = f.headers["from"].map { decodedLower($0) } ?? ""
        let fromDomain = FeatureExtractor.addressDomain(fromValue)
        let display = FeatureExtractor.displayName(fromValue)
        if let fromDomain, display.contains("@"),
           let shown = FeatureExtractor.addressDomain(String(display.filter { $0 != "\"" })),
           FeatureExtractor.registrable(shown) != FeatureExtractor.registrable(fromDomain) {
            hit("FROM_NAME_ADDRESS_MISMATCH", 1, "the From display name shows an address at \(shown), the mail is from \(fromDomain)")
        }
        if let replyTo = f.headers["reply-to"].map({ decodedLower($0) }),
           let replyDomain = FeatureExtractor.addressDomain(replyTo),
           freemail.contains(FeatureExtractor.registrable(replyDomain)),
           fromDomain.map({ FeatureExtractor.registrable($0) }) != FeatureExtractor.registrable(replyDomain) {
            hit("REPLYTO_FREEMAIL", 1, "replies go to a freemail address (\(replyDomain)), not to the sender's domain")
        }
        // Forged mailer headers: claims of a mail program without the fields that program writes.
        if let mailer = f.headers["x-mailer"]?.lowercased(), Search.contains(mailer, "outlook"),
           !f.headerNames.contains("x-mimeole"), !f.headerNames.contains("thread-index") {
            hit("FORGED_OUTLOOK", 1, "claims to come from Outlook without the header fields Outlook writes")
        }
        if f.headerNames.contains("x-msmail-priority"), (f.headers["x-mailer"] ?? "").trimmingSpaces().isEmpty {
            hit("MSMAIL_PRIORITY_NO_MAILER", 1, "an Outlook priority header without any mailer")
        }
        if let priority = f.headers["x-priority"]?.trimmingSpaces(), priority.hasPrefix("1") || priority.hasPrefix("2") {
            if priority.count == 1 || !(priority.dropFirst().first?.isNumber ?? false) {
                hit("PRIORITY_HIGH", 1, "marked as high priority")
            }
        }
        let subject = f.subject
        let asciiLetters = subject.unicodeScalars.filter { $0.isASCII && $0.properties.isAlphabetic }
        if asciiLetters.count >= 8 && subject.uppercased() == subject {
            hit("SUBJECT_ALL_CAPS", 1, "the subject is written in capitals")
        }
        if subject.contains("$") { hit("SUBJECT_DOLLAR", 1, "the subject names a dollar amount") }
        let lowerSubject = subject.lowercased()
        if Search.containsAny(lowerSubject, advertisementMarks) || Words.containsWord(lowerSubject, "adv") {
            hit("SUBJECT_ADV", 1, "the subject is marked as an advertisement")
        }
        if subject.utf8.contains(where: { $0 >= 0x80 }) && !Search.contains(f.headers["subject"] ?? "", "=?") {
            hit("SUBJECT_RAW_8BIT", 1, "the subject has 8-bit characters without RFC 2047 encoding")
        }

        // MIME anomalies.
        if f.htmlParts > 0 && f.textParts == 0 && HiddenText.present(in: f.html) {
            hit("HTML_ONLY_HIDDEN_TEXT", 1, "HTML without a text alternative, with text hidden from the reader")
        } else if HiddenText.hiddenByStyle(f.html) {
            hit("HTML_HIDDEN_TEXT", 1, "HTML with text hidden from the reader (display:none, visibility:hidden)")
        }
        if f.htmlParts > 0 && f.visibleWords < 80 && Search.contains(f.html, "<img") {
            hit("HTML_IMAGE_ONLY", 1, "HTML that is mostly images with little text")
        }
        if f.base64HTML { hit("HTML_BASE64", 1, "HTML sent base64-encoded (hides its text from simple filters)") }
        if f.base64Text { hit("TEXT_BASE64", 1, "plain text sent base64-encoded") }
        if f.undeclared8bit { hit("CHARSET_MISMATCH", 1, "8-bit text in a part declared US-ASCII") }
        for name in f.attachmentNames {
            let ext = name.split(separator: ".").last.map { $0.lowercased() } ?? ""
            if name.contains("."), dangerousExtensions.contains(ext) {
                hit("DANGEROUS_ATTACHMENT", 3, "attachment \"\(name)\" is a program or script (.\(ext))")
                break
            }
        }

        // URL signals.
        let hosts = f.urlHosts
        if let ip = hosts.first(where: { isIPLiteral($0) }) {
            hit("URL_IP_LITERAL", 1, "links to a numeric address (\(ip)) instead of a name")
        }
        if f.obfuscatedURL { hit("URL_OBFUSCATED", 1, "a link hides its host (user@host, %-escapes or character references)") }
        if let short = hosts.first(where: { shorteners.contains($0) || shorteners.contains(FeatureExtractor.registrable($0)) }) {
            hit("URL_SHORTENER", 1, "links through a URL shortener (\(short))")
        }
        let distinct = f.urlDomains.count
        if distinct >= 10 { hit("URL_MANY_DOMAINS", 0.5, "links to \(distinct) different domains") }
        if let link = f.mismatchedLinks.first {
            hit("URL_TEXT_MISMATCH", 1, "a link shows \(link.shown) but leads to \(link.target)")
        }

        // Text signals.
        let text = f.text
        if Search.contains(text, "!!!") { hit("TEXT_EXCLAMATIONS", 1, "the text shouts with !!!") }
        if f.visibleWords > 20 && Double(f.capitalWords) / Double(f.visibleWords) > 0.1 {
            hit("TEXT_CAPITALS", 1, "much of the text is in capitals")
        }
        if TextPatterns.pressure(text) { hit("TEXT_PRESSURE", 1, "pressure phrases (act now, limited time, order now, urgent)") }
        if TextPatterns.notSpamClaim(text) { hit("TEXT_NOT_SPAM_CLAIM", 1, "claims not to be spam or cites a spam law") }
        if TextPatterns.bigMoney(text) { hit("TEXT_BIG_MONEY", 1, "promises large sums of money") }
        if TextPatterns.removeFooter(text) && f.headers["list-unsubscribe"] == nil {
            hit("REMOVE_FOOTER_NO_LIST", 1, "asks recipients to reply or click to be removed, without a List-Unsubscribe header")
        }

        hits += bulkMarkers(headers: f.headers)
        return hits
    }

    /// Bulk (legitimate mass mail) markers, from the header fields alone: no points, they make
    /// `bulk` possible (also for the rspamd backend's verdicts). `headers`: lower-cased names.
    public static func bulkMarkers(headers: [String: String]) -> [RuleHit] {
        var hits: [RuleHit] = []
        if headers["list-unsubscribe"] != nil {
            hits.append(RuleHit(name: "LIST_UNSUBSCRIBE", points: 0, description: "has a List-Unsubscribe header"))
        }
        if let p = headers["precedence"]?.lowercased(), Search.containsAny(p, bulkPrecedence) {
            hits.append(RuleHit(name: "PRECEDENCE_BULK", points: 0, description: "Precedence: \(p.trimmingSpaces())"))
        }
        if headers["list-id"] != nil { hits.append(RuleHit(name: "LIST_ID", points: 0, description: "has a List-Id header")) }
        return hits
    }

    /// A dotted IPv4 address (four numbers) or an IPv6 address (hex digits and colons).
    static func isIPLiteral(_ host: String) -> Bool {
        var h = host
        return h.withUTF8 { b in
            var dots = 0, colons = 0, digitsOnly = true, hexOnly = true
            for x in b {
                if x == 0x2E { dots += 1 } else if x == 0x3A { colons += 1 }
                else if x >= 0x30 && x <= 0x39 {}
                else if (x >= 0x61 && x <= 0x66) || (x >= 0x41 && x <= 0x46) { digitsOnly = false }
                else { digitsOnly = false; hexOnly = false }
            }
            return (dots == 3 && colons == 0 && digitsOnly) || (colons >= 2 && dots == 0 && hexOnly)
        }
    }

    static func decodedLower(_ value: String) -> String {
        MIMEDecoding.encodedWords(value).lowercased()
    }
}


/// Markup that hides text from the reader: zero-size fonts, `display:none`, `visibility:hidden`.
/// Not white text (on a dark background it is ordinary design) nor small fonts (newsletter footers):
/// both fired on half of the legitimate newsletters of the corpus.
enum HiddenText {
    static let markers: [StaticString] = [
        "display:none", "display: none", "visibility:hidden", "visibility: hidden", "font-size:0", "font-size: 0",
        "font-size:0px", "size=\"0\"", "size=0>",
    ]

    static func present(in html: String) -> Bool {
        Search.containsAny(html, markers)
    }

    /// Text hidden by CSS (`display:none`, `visibility:hidden`), the stronger trick.
    static let styleMarkers: [StaticString] = ["display:none", "display: none", "visibility:hidden", "visibility: hidden"]

    static func hiddenByStyle(_ html: String) -> Bool {
        Search.containsAny(html, styleMarkers)
    }
}

/// Phrases of the text (lower-cased) that spam uses and ordinary mail rarely does.
enum TextPatterns {
    static let pressurePhrases: [StaticString] = ["act now", "limited time", "order now", "call now", "don't delay", "urgent"]
    static let notSpamPhrases: [StaticString] = ["this is not spam", "this is not a spam", "is not spam", "s.1618", "s. 1618",
                                                 "bill 1618", "section 301", "unsolicited"]
    static let removePhrases: [StaticString] = ["removed from", "remove from", "remove your", "to be removed", "to remove",
                                                "removal", "opt out", "opt-out", "optout"]

    static func pressure(_ t: String) -> Bool {
        Search.containsAny(t, pressurePhrases)
    }

    static func notSpamClaim(_ t: String) -> Bool {
        Search.containsAny(t, notSpamPhrases)
    }

    static func bigMoney(_ t: String) -> Bool {
        if Search.contains(t, "million dollars") { return true }
        // $ followed by a number with thousands separators or five or more digits.
        var text = t
        return text.withUTF8 { b in
            var i = 0
            while i < b.count {
                guard b[i] == UInt8(ascii: "$") else { i += 1; continue }
                var k = i + 1
                while k < b.count && b[k] == 0x20 { k += 1 }
                var digits = 0, groups = 0
                while k < b.count, (b[k] >= 0x30 && b[k] <= 0x39) || b[k] == UInt8(ascii: ",") {
                    if b[k] == UInt8(ascii: ",") { groups += 1 } else { digits += 1 }
                    k += 1
                }
                if digits >= 5 || (groups >= 1 && digits >= 4) { return true }
                i += 1
            }
            return false
        }
    }

    static func removeFooter(_ t: String) -> Bool {
        Search.containsAny(t, removePhrases)
    }
}

/// A loose check of an RFC 5322 date: optional weekday, day, month name, year, time.
enum DateCheck {
    static let months: Set<String> = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    static func looksValid(_ value: String) -> Bool {
        var words = value.lowercased().split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" }).map(String.init)
        if let first = words.first, first.count == 3, first.allSatisfy(\.isLetter) { words.removeFirst() }
        guard words.count >= 4,
              let day = Int(words[0]), (1...31).contains(day),
              months.contains(words[1]),
              let year = Int(words[2]), year >= 1970 || (year >= 0 && year < 100),
              words[3].split(separator: ":").count >= 2 else { return false }
        return true
    }

    /// A numeric zone (`+0100`) or a named one (GMT, UT, UTC, EST, …).
    static func hasZone(_ value: String) -> Bool {
        let words = value.split(whereSeparator: { $0 == " " || $0 == "(" || $0 == ")" || $0 == "," })
        for w in words {
            if (w.first == "+" || w.first == "-") && w.count == 5 && w.dropFirst().allSatisfy(\.isNumber) { return true }
            if ["GMT", "UT", "UTC", "EST", "EDT", "CST", "CDT", "MST", "MDT", "PST", "PDT", "Z"].contains(w.uppercased()) { return true }
        }
        return false
    }
}
