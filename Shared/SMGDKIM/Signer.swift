import Crypto
import Foundation

/// How to sign: canonicalization, which headers, expiry. The defaults are the gateway's policy.
public struct DKIMSigningOptions: Sendable {
    public var headerCanonicalization: DKIMCanonicalization = .relaxed
    public var bodyCanonicalization: DKIMCanonicalization = .relaxed
    /// Header names signed as often as they occur (bottom-up). Names ending in `*` match a prefix
    /// (`List-*`).
    public var headers: [String] = DKIMSigningOptions.defaultHeaders
    /// Header names listed once more than they occur, so that an added instance breaks the
    /// signature (RFC 6376 §8.15). Also signed when absent (as a null header).
    public var overSigned: [String] = DKIMSigningOptions.defaultOverSigned
    /// `x=` as seconds after `t=`; nil = no expiry.
    public var expireAfterSeconds: Int? = nil
    /// `i=`; nil = none (the default identity `@d` applies).
    public var identity: String? = nil
    /// Emit `q=dns/txt` (the default query method; optional in RFC 6376).
    public var queryMethod: Bool = true
    /// When non-nil: exactly this `h=` list (names in order, repeats allowed); `headers` and
    /// `overSigned` are ignored. Used to reproduce published vectors.
    public var explicitHeaderList: [String]? = nil
    /// Separator between names in `h=`.
    public var headerListSeparator: String = ":"

    public static let defaultHeaders = [
        "From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
        "Content-Transfer-Encoding", "Reply-To", "In-Reply-To", "References", "List-*",
    ]
    public static let defaultOverSigned = ["From", "Subject", "To", "Date"]

    public init() {}
}

/// One key to sign with, and where its public half is published.
public struct DKIMSigningKey: Sendable {
    public var domain: String
    public var selector: String
    public var key: DKIMPrivateKey

    public init(domain: String, selector: String, key: DKIMPrivateKey) {
        self.domain = domain
        self.selector = selector
        self.key = key
    }
}

/// A produced signature: the `DKIM-Signature` header field to prepend (CRLF-terminated).
public struct DKIMSignature: Sendable {
    public var header: String
    public var domain: String
    public var selector: String
    public var algorithm: DKIMAlgorithm
    public var bodyHash: String
    public var signature: String
    public var signedHeaders: [String]
}

/// Signs messages (RFC 6376 §5, RFC 8463). Pure: it returns header fields to prepend and never
/// changes the message. Thread-safe (a value type with no state beyond its options).
public struct DKIMSigner: Sendable {
    public var options: DKIMSigningOptions

    public init(options: DKIMSigningOptions = DKIMSigningOptions()) {
        self.options = options
    }

    /// Signs `message` with every key (one `DKIM-Signature` each, in key order). `time` is `t=`
    /// (seconds since the epoch).
    public func sign(_ message: DKIMMessage, keys: [DKIMSigningKey], time: Int) throws -> [DKIMSignature] {
        let bodyHash = Data(SHA256.hash(data: options.bodyCanonicalization.canonicalizeBody(message.body)))
            .base64EncodedString()
        let names = headerList(for: message)
        let headerData = canonicalHeaders(message, names: names)
        return try keys.map { try sign(headerData: headerData, names: names, bodyHash: bodyHash, key: $0, time: time) }
    }

    /// Convenience: the signature header fields for raw message octets, concatenated.
    public func signatureHeaders(for octets: [UInt8], keys: [DKIMSigningKey], time: Int) throws -> String {
        try sign(DKIMMessage(octets), keys: keys, time: time).map(\.header).joined()
    }

    /// The `h=` list: each configured header as many times as present, over-signed ones once more.
    public func headerList(for message: DKIMMessage) -> [String] {
        if let explicit = options.explicitHeaderList { return explicit.map { $0.lowercased() } }
        var counts: [String: Int] = [:]
        var order: [String] = []
        for field in message.fields {
            if counts[field.key] == nil { order.append(field.key) }
            counts[field.key, default: 0] += 1
        }
        var out: [String] = []
        var seen = Set<String>()
        let patterns = options.headers.map { $0.lowercased() }
        func wanted(_ key: String) -> Bool {
            patterns.contains { $0.hasSuffix("*") ? key.hasPrefix($0.dropLast()) : $0 == key }
        }
        // Configured exact names in the configured order, then prefix matches in message order.
        for pattern in patterns where !pattern.hasSuffix("*") {
            guard !seen.contains(pattern) else { continue }
            seen.insert(pattern)
            out += Array(repeating: pattern, count: counts[pattern] ?? 0)
        }
        for key in order where !seen.contains(key) && wanted(key) && key != "dkim-signature" {
            seen.insert(key)
            out += Array(repeating: key, count: counts[key] ?? 0)
        }
        for name in options.overSigned.map({ $0.lowercased() }) {
            out.append(name)
        }
        return out
    }

    /// The canonicalized header fields in `h=` order; repeated names take instances bottom-up
    /// (RFC 6376 §5.4.2); a name with no instance left contributes nothing.
    func canonicalHeaders(_ message: DKIMMessage, names: [String]) -> [UInt8] {
        var remaining: [String: [DKIMMessage.Field]] = [:]
        for field in message.fields { remaining[field.key, default: []].append(field) }
        var out: [UInt8] = []
        for name in names {
            guard var list = remaining[name], let field = list.popLast() else { continue }
            remaining[name] = list
            out += options.headerCanonicalization.canonicalizeHeader(field.raw)
        }
        return out
    }

    func sign(headerData: [UInt8], names: [String], bodyHash: String, key: DKIMSigningKey,
              time: Int) throws -> DKIMSignature {
        let algorithm = key.key.algorithm
        var pieces: [Piece] = [
            Piece("v=1;"), Piece(" a=\(algorithm.rawValue);"),
            Piece(" c=\(options.headerCanonicalization.rawValue)/\(options.bodyCanonicalization.rawValue);"),
            Piece(" d=\(key.domain);"),
        ]
        if let identity = options.identity { pieces.append(Piece(" i=\(identity);")) }
        if options.queryMethod { pieces.append(Piece(" q=dns/txt;")) }
        pieces.append(Piece(" s=\(key.selector);"))
        pieces.append(Piece(" t=\(time);"))
        if let x = options.expireAfterSeconds { pieces.append(Piece(" x=\(time + x);")) }
        for (i, name) in names.enumerated() {
            let last = i == names.count - 1
            let text = (i == 0 ? " h=" : "") + name + (last ? ";" : options.headerListSeparator)
            pieces.append(Piece(text))
        }
        pieces.append(Piece(" bh=\(bodyHash);"))
        pieces.append(Piece(" b="))
        let prefix = fold(pieces, firstLineUsed: "DKIM-Signature: ".count)
        let unsigned = "DKIM-Signature: " + prefix
        var data = headerData
        switch options.headerCanonicalization {
        case .simple: data += Array(unsigned.utf8)
        case .relaxed: data += DKIMCanonicalization.relaxedHeader(Array(unsigned.utf8)[...], terminate: false)
        }
        let signature = Data(try key.key.sign(digest: SHA256.hash(data: data))).base64EncodedString()
        // The b= value may be folded freely: verifiers remove it whole, FWS included.
        var chunks: [Piece] = []
        var rest = Substring(signature)
        while !rest.isEmpty {
            chunks.append(Piece(String(rest.prefix(64)), glue: true))
            rest = rest.dropFirst(64)
        }
        let lastLine = prefix.split(separator: "\n", omittingEmptySubsequences: false).last.map(\.count)
            ?? prefix.count
        let tail = fold(chunks, firstLineUsed: lastLine + (prefix.contains("\n") ? 0 : "DKIM-Signature: ".count))
        return DKIMSignature(header: unsigned + tail + "\r\n", domain: key.domain, selector: key.selector,
                             algorithm: algorithm, bodyHash: bodyHash, signature: signature, signedHeaders: names)
    }

    struct Piece {
        var text: String
        /// The piece directly continues the previous one (a fold inserts CRLF SP before it).
        var glue: Bool
        init(_ text: String, glue: Bool = false) {
            self.text = text
            self.glue = glue
        }
    }

    /// Joins pieces into lines of at most 78 characters where possible: a fold replaces a piece's
    /// leading space by CRLF SP, or puts CRLF SP before a piece without one (inside `h=` and `b=`
    /// FWS is allowed between the parts).
    func fold(_ pieces: [Piece], firstLineUsed: Int) -> String {
        var out = ""
        var column = firstLineUsed
        for piece in pieces {
            let length = piece.text.count
            if column + length > 78 && column > 1 {
                let body = piece.text.hasPrefix(" ") ? String(piece.text.dropFirst()) : piece.text
                out += "\r\n " + body
                column = 1 + body.count
            } else {
                out += piece.text
                column += length
            }
        }
        return out
    }
}
