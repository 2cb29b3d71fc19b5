/// Removes header fields from a message's header section (R8: nothing that reveals the
/// customer's internal addresses leaves the gateway), and counts them. The body is never touched.
///
/// A field is its first line plus its folded continuation lines (starting with SP or HTAB).
/// Field names compare case-insensitively. Input and output use CRLF line ends; a message
/// without a blank line is all header.
public enum HeaderHygiene {
    /// The message without the fields named in `names`, except those `keep` says to keep (it sees
    /// the whole field, folded lines included).
    public static func strip<Bytes: Collection>(_ message: Bytes, removing names: Set<String>,
                                                keep: ((ArraySlice<UInt8>) -> Bool)? = nil) -> [UInt8]
    where Bytes.Element == UInt8 {
        let bytes = Array(message)
        guard !names.isEmpty else { return bytes }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        let body = forEachField(bytes) { name, field in
            if !names.contains(name) || keep?(field) == true { out.append(contentsOf: field) }
        }
        out.append(contentsOf: bytes[body...])
        return out
    }

    /// How many fields named `name` (lower-case) the header section has.
    public static func count(_ name: String, in message: [UInt8]) -> Int {
        var n = 0
        _ = forEachField(message) { fieldName, _ in if fieldName == name { n += 1 } }
        return n
    }

    /// Calls `visit` with each field's lower-cased name and its octets (every line with its line
    /// end); returns where the rest (the blank line and the body) starts. Lines before the first
    /// field that begin with white space are passed with the name "".
    static func forEachField(_ bytes: [UInt8], _ visit: (String, ArraySlice<UInt8>) -> Void) -> Int {
        var index = 0
        var fieldStart: Int?
        var fieldName = ""
        func flush(_ end: Int) {
            if let start = fieldStart { visit(fieldName, bytes[start..<end]) }
            fieldStart = nil
        }
        while index < bytes.count {
            // One line, including its CRLF (or LF).
            var end = index
            while end < bytes.count, bytes[end] != 0x0A { end += 1 }
            let lineEnd = min(end + 1, bytes.count)
            let line = bytes[index..<lineEnd]
            let content = line.last == 0x0A ? line.dropLast() : line[...]
            let text = content.last == 0x0D ? content.dropLast() : content
            if text.isEmpty {
                flush(index)
                return index
            }
            if let first = text.first, first == 0x20 || first == 0x09 {
                if fieldStart == nil { fieldStart = index; fieldName = "" }
            } else {
                flush(index)
                let colon = text.firstIndex(of: UInt8(ascii: ":"))
                let name = colon.map { String(decoding: text[text.startIndex..<$0], as: UTF8.self).lowercased() } ?? ""
                fieldStart = index
                fieldName = name.trimmingTrailingSpaces
            }
            index = lineEnd
        }
        flush(bytes.count)
        return bytes.count
    }
}

extension String {
    var trimmingTrailingSpaces: String {
        var s = Substring(self)
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
