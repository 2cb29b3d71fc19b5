/// Removes header fields from a message's header section (R8: nothing that reveals the
/// customer's internal addresses leaves the gateway). The body is never touched.
///
/// A field is its first line plus its folded continuation lines (starting with SP or HTAB).
/// Field names compare case-insensitively. Input and output use CRLF line ends; a message
/// without a blank line is all header.
public enum HeaderHygiene {
    public static func strip<Bytes: Collection>(_ message: Bytes, removing names: Set<String>) -> [UInt8]
    where Bytes.Element == UInt8 {
        let bytes = Array(message)
        guard !names.isEmpty else { return bytes }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        var dropping = false
        while index < bytes.count {
            // One line, including its CRLF (or LF).
            var end = index
            while end < bytes.count, bytes[end] != 0x0A { end += 1 }
            let lineEnd = min(end + 1, bytes.count)
            let line = bytes[index..<lineEnd]
            let content = line.last == 0x0A ? line.dropLast() : line[...]
            let text = content.last == 0x0D ? content.dropLast() : content
            if text.isEmpty {
                // End of the header section: copy the rest unchanged.
                out.append(contentsOf: bytes[index...])
                return out
            }
            if let first = text.first, first == 0x20 || first == 0x09 {
                if !dropping { out.append(contentsOf: line) }
            } else {
                let colon = text.firstIndex(of: UInt8(ascii: ":"))
                let name = colon.map { String(decoding: text[text.startIndex..<$0], as: UTF8.self).lowercased() } ?? ""
                dropping = names.contains(name.trimmingTrailingSpaces)
                if !dropping { out.append(contentsOf: line) }
            }
            index = lineEnd
        }
        return out
    }
}

extension String {
    var trimmingTrailingSpaces: String {
        var s = Substring(self)
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
