import Foundation

/// Bounds of one parse: a hostile message costs at most this much.
public struct MIMELimits: Sendable, Hashable {
    /// Nesting of multiparts and `message/rfc822`; deeper entities are kept as opaque leaves.
    public var maxDepth: Int
    /// Entities per message; the rest are not parsed (a defect is noted).
    public var maxParts: Int
    /// Bytes of one header section; the rest of an oversized section is ignored.
    public var maxHeaderBytes: Int
    /// Decoded body bytes of all leaves together; parts past it are truncated.
    public var maxDecodedBytes: Int

    public init(maxDepth: Int = 16, maxParts: Int = 1000, maxHeaderBytes: Int = 256 * 1024,
                maxDecodedBytes: Int = 128 * 1024 * 1024) {
        self.maxDepth = maxDepth
        self.maxParts = maxParts
        self.maxHeaderBytes = maxHeaderBytes
        self.maxDecodedBytes = maxDecodedBytes
    }
}

/// One MIME entity: headers, and either children (multipart, message/rfc822) or a decoded body.
public struct MIMEPart: Sendable {
    public var headers: MIMEHeaders
    /// `type/subtype`, lower-cased, with its parameters (default `text/plain`, RFC 2045 §5.2).
    public var contentType: MIMEParameterizedValue
    public var disposition: MIMEParameterizedValue?
    /// Lower-cased `Content-Transfer-Encoding` (default `7bit`).
    public var transferEncoding: String
    /// The body after transfer decoding (leaves only; empty for containers).
    public var body: [UInt8]
    /// Nested entities: the parts of a multipart, or the one message inside `message/rfc822`.
    public var children: [MIMEPart]
    /// Position in the tree: "" for the top, "1", "1.2", … (like IMAP part numbers).
    public var path: String
    public var depth: Int
    /// Set when the body was cut at `MIMELimits.maxDecodedBytes`.
    public var truncated: Bool

    public var mimeType: String { contentType.value }
    public var isMultipart: Bool { mimeType.hasPrefix("multipart/") }

    /// The file name: `Content-Disposition` filename (RFC 2183/2231), else Content-Type name;
    /// encoded words decoded.
    public var filename: String? {
        let raw = disposition?.parameters["filename"] ?? contentType.parameters["name"]
        return raw.map { MIMEDecoding.encodedWords($0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// A short human name of this part for reports: filename, else `part <path> (<type>)`.
    public var label: String {
        if let filename { return filename }
        return path.isEmpty ? "message body (\(mimeType))" : "part \(path) (\(mimeType))"
    }

    /// This entity and every entity below it, depth first.
    public var all: [MIMEPart] { [self] + children.flatMap(\.all) }

    /// Entities with a body of their own (no children), depth first.
    public var leaves: [MIMEPart] { children.isEmpty ? [self] : children.flatMap(\.leaves) }
}

/// A parsed message: its top entity and what was wrong with the input.
public struct MIMEMessage: Sendable {
    public var root: MIMEPart
    /// Problems met while parsing (missing boundary, limits reached, …). Parsing went on.
    public var defects: [String]
    /// A size, depth or part-count limit cut the parse short: some content was not decoded, so a
    /// scanner cannot claim to have seen all of it (fail closed: the caller blocks by default).
    public var limitsExceeded: Bool = false

    public var headers: MIMEHeaders { root.headers }
    public var leaves: [MIMEPart] { root.leaves }
}

/// RFC 2045–2049 parser. Never fails and never traps: malformed input gives a best-effort tree
/// plus `defects`; every size is bounded by `MIMELimits`.
public enum MIMEParser {
    public static func parse(_ bytes: [UInt8], limits: MIMELimits = MIMELimits()) -> MIMEMessage {
        var state = State(limits: limits)
        let root = bytes.withUnsafeBufferPointer { buffer in
            parseEntity(buffer, 0..<buffer.count, depth: 0, path: "", defaultType: "text/plain", state: &state)
        }
        return MIMEMessage(root: root, defects: state.defects, limitsExceeded: state.limitsExceeded)
    }

    /// The header section of `bytes`: its lines with their line breaks, without the empty line.
    public static func headerSection(_ bytes: [UInt8]) -> [UInt8] {
        bytes.withUnsafeBufferPointer { buffer in
            let end = headerEnd(buffer, 0..<buffer.count, limit: buffer.count)
            return Array(buffer[0..<end.headersEnd])
        }
    }

    struct State {
        let limits: MIMELimits
        var parts = 0
        var decoded = 0
        var defects: [String] = []
        var limitsExceeded = false

        mutating func defect(_ text: String) {
            if defects.count < 100 { defects.append(text) }
        }

        /// A defect caused by a limit: part of the content stays unseen.
        mutating func limit(_ text: String) {
            limitsExceeded = true
            defect(text)
        }
    }

    typealias Buffer = UnsafeBufferPointer<UInt8>

    static func parseEntity(_ buf: Buffer, _ range: Range<Int>, depth: Int, path: String, defaultType: String,
                            state: inout State) -> MIMEPart {
        state.parts += 1
        let (headers, bodyStart) = parseHeaders(buf, range, state: &state)
        let bodyRange = bodyStart..<range.upperBound
        var contentType = headers["content-type"].map { MIMEParameterizedValue(parsing: $0) }
            ?? MIMEParameterizedValue(value: defaultType)
        if !contentType.value.contains("/") {
            if headers["content-type"] != nil { state.defect("part \(path.isEmpty ? "top" : path): bad Content-Type") }
            contentType = MIMEParameterizedValue(value: "text/plain", parameters: contentType.parameters)
        }
        let disposition = headers["content-disposition"].map { MIMEParameterizedValue(parsing: $0) }
        let encoding = (headers["content-transfer-encoding"] ?? "7bit").trimmingWSP().lowercased()
        var part = MIMEPart(headers: headers, contentType: contentType, disposition: disposition,
                            transferEncoding: encoding, body: [], children: [], path: path, depth: depth,
                            truncated: false)
        let childPath: (Int) -> String = { path.isEmpty ? "\($0)" : "\(path).\($0)" }

        if contentType.value.hasPrefix("multipart/") {
            guard depth < state.limits.maxDepth else {
                state.limit("part \(path): nesting deeper than \(state.limits.maxDepth); kept opaque")
                decodeLeaf(buf, bodyRange, into: &part, state: &state)
                return part
            }
            guard let boundary = contentType.parameters["boundary"], !boundary.isEmpty, boundary.utf8.count <= 200 else {
                state.defect("part \(path.isEmpty ? "top" : path): multipart without a usable boundary")
                decodeLeaf(buf, bodyRange, into: &part, state: &state)
                return part
            }
            let ranges = bodyParts(buf, bodyRange, boundary: Array(boundary.utf8), state: &state)
            let childDefault = contentType.value == "multipart/digest" ? "message/rfc822" : "text/plain"
            for (index, r) in ranges.enumerated() {
                guard state.parts < state.limits.maxParts else {
                    state.limit("more than \(state.limits.maxParts) parts; the rest is not parsed")
                    break
                }
                part.children.append(parseEntity(buf, r, depth: depth + 1, path: childPath(index + 1),
                                                 defaultType: childDefault, state: &state))
            }
            return part
        }

        if contentType.value == "message/rfc822" || contentType.value == "message/global" {
            guard depth < state.limits.maxDepth, state.parts < state.limits.maxParts else {
                state.limit("part \(path): message nested too deep or too many parts; kept opaque")
                decodeLeaf(buf, bodyRange, into: &part, state: &state)
                return part
            }
            if encoding == "base64" || encoding == "quoted-printable" {
                // Not allowed by RFC 2046 §5.2.1, but seen: decode, then parse the result.
                decodeLeaf(buf, bodyRange, into: &part, state: &state)
                let inner = part.body
                part.body = []
                let child = inner.withUnsafeBufferPointer { innerBuf in
                    parseEntity(innerBuf, 0..<innerBuf.count, depth: depth + 1, path: childPath(1),
                                defaultType: "text/plain", state: &state)
                }
                part.children = [child]
            } else {
                part.children = [parseEntity(buf, bodyRange, depth: depth + 1, path: childPath(1),
                                             defaultType: "text/plain", state: &state)]
            }
            return part
        }

        decodeLeaf(buf, bodyRange, into: &part, state: &state)
        return part
    }

    static func decodeLeaf(_ buf: Buffer, _ range: Range<Int>, into part: inout MIMEPart, state: inout State) {
        let budget = max(0, state.limits.maxDecodedBytes - state.decoded)
        let raw = UnsafeBufferPointer(rebasing: buf[range])
        // One byte past the budget tells whether the body was cut.
        let limit = budget == .max ? budget : budget + 1
        switch part.transferEncoding {
        case "base64": part.body = MIMEDecoding.base64(raw, limit: limit)
        case "quoted-printable": part.body = MIMEDecoding.quotedPrintable(raw, limit: limit)
        default: part.body = Array(raw.prefix(limit))
        }
        if part.body.count > budget {
            part.body.removeLast(part.body.count - budget)
            part.truncated = true
            state.limit("part \(part.path.isEmpty ? "top" : part.path): decoded size limit reached; truncated")
        }
        state.decoded += part.body.count
    }

    /// Where the header section ends: (end of the last header byte, start of the body).
    static func headerEnd(_ buf: Buffer, _ range: Range<Int>, limit: Int) -> (headersEnd: Int, bodyStart: Int) {
        var p = range.lowerBound
        let end = range.upperBound
        while p < end {
            if p - range.lowerBound > limit { return (p, p) }
            // An empty line ends the headers.
            if buf[p] == UInt8(ascii: "\n") { return (p, p + 1) }
            if buf[p] == UInt8(ascii: "\r"), p + 1 < end, buf[p + 1] == UInt8(ascii: "\n") { return (p, p + 2) }
            guard let nl = nextNewline(buf, from: p, to: end) else { return (end, end) }
            p = nl + 1
        }
        return (end, end)
    }

    static func nextNewline(_ buf: Buffer, from: Int, to: Int) -> Int? {
        guard from < to, let base = buf.baseAddress else { return nil }
        guard let hit = memchr(base + from, Int32(UInt8(ascii: "\n")), to - from) else { return nil }
        return base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
    }

    static func parseHeaders(_ buf: Buffer, _ range: Range<Int>, state: inout State) -> (MIMEHeaders, Int) {
        let (headersEnd, bodyStart) = headerEnd(buf, range, limit: state.limits.maxHeaderBytes)
        if headersEnd - range.lowerBound > state.limits.maxHeaderBytes { state.limit("header section too large; cut") }
        var fields: [MIMEHeaderField] = []
        var name: String? = nil
        var value: [UInt8] = []
        func flush() {
            if let n = name {
                var v = value
                while let last = v.last, last == 32 || last == 9 { v.removeLast() }
                let text = String(decoding: v.drop(while: { $0 == 32 || $0 == 9 }), as: UTF8.self)
                if fields.count < 2000 { fields.append(MIMEHeaderField(name: n, value: text)) }
            }
            name = nil
            value = []
        }
        var p = range.lowerBound
        var bodyAt = bodyStart
        while p < headersEnd {
            var lineEnd = nextNewline(buf, from: p, to: headersEnd) ?? headersEnd
            let next = lineEnd < headersEnd ? lineEnd + 1 : headersEnd
            if lineEnd > p, buf[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
            let line = UnsafeBufferPointer(rebasing: buf[p..<lineEnd])
            if let first = line.first, first == 32 || first == 9 {
                if name != nil { value.append(32); value.append(contentsOf: line.drop(while: { $0 == 32 || $0 == 9 })) }
            } else if let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 {
                flush()
                name = String(decoding: line[..<colon], as: UTF8.self).trimmingWSP()
                value = Array(line[(colon + 1)...])
            } else if p == range.lowerBound, line.starts(with: Array("From ".utf8)) {
                // An mbox "From " line before the headers: skip it.
            } else {
                // Not a header: the headers end here and this line starts the body (best effort).
                state.defect("header section ended by a line without a colon")
                bodyAt = p
                break
            }
            p = next
        }
        flush()
        return (MIMEHeaders(fields), bodyAt)
    }

    /// The ranges of the body parts between the `--boundary` delimiter lines (RFC 2046 §5.1.1).
    /// The CRLF before a delimiter belongs to the delimiter. Without a closing delimiter, the
    /// last part runs to the end (a defect).
    static func bodyParts(_ buf: Buffer, _ range: Range<Int>, boundary: [UInt8], state: inout State) -> [Range<Int>] {
        var delimiters: [(start: Int, after: Int, close: Bool)] = []
        var p = range.lowerBound
        let end = range.upperBound
        let dash = UInt8(ascii: "-")
        while p < end {
            let lineEnd = nextNewline(buf, from: p, to: end) ?? end
            let length = lineEnd - p
            if length >= boundary.count + 2, buf[p] == dash, buf[p + 1] == dash,
               UnsafeBufferPointer(rebasing: buf[(p + 2)..<(p + 2 + boundary.count)]).elementsEqual(boundary) {
                var q = p + 2 + boundary.count
                var close = false
                if q + 1 < lineEnd, buf[q] == dash, buf[q + 1] == dash { close = true; q += 2 }
                // Only whitespace may follow on a delimiter line.
                let rest = UnsafeBufferPointer(rebasing: buf[q..<lineEnd])
                if rest.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) {
                    var start = p
                    if start > range.lowerBound, buf[start - 1] == UInt8(ascii: "\n") {
                        start -= 1
                        if start > range.lowerBound, buf[start - 1] == UInt8(ascii: "\r") { start -= 1 }
                    }
                    delimiters.append((start, min(end, lineEnd + 1), close))
                    if close { break }
                    if delimiters.count > state.limits.maxParts { break }
                }
            }
            p = lineEnd + 1
        }
        if delimiters.isEmpty {
            state.defect("multipart boundary never found")
            return [range]
        }
        var parts: [Range<Int>] = []
        for (index, d) in delimiters.enumerated() where !d.close {
            let partEnd = index + 1 < delimiters.count ? delimiters[index + 1].start : end
            if index + 1 >= delimiters.count { state.defect("multipart without closing delimiter") }
            if d.after <= partEnd { parts.append(d.after..<partEnd) }
        }
        return parts
    }
}
