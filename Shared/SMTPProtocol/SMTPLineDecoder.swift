public import NIOCore

/// What `SMTPLineDecoder` found in the input.
public enum SMTPLineEvent: Sendable, Hashable {
    /// A complete command line, without its CRLF.
    case line([UInt8])
    /// A line longer than the limit ended; its bytes were discarded as they arrived.
    case tooLong
    /// A line ended in a bare LF (no CR before it); the line is discarded.
    case bareLineFeed
}

/// Splits command input into CRLF-terminated lines.
///
/// Owns at most `maximumLineLength` bytes of one partial line (the limit includes the
/// CRLF). A longer line is not buffered: its bytes are dropped as they arrive and
/// `.tooLong` is reported once when its LF finally arrives. Only CRLF ends a line; a bare LF
/// ends the line with `.bareLineFeed`; a bare CR stays in the line (the command parser then
/// refuses it as a control character). Not thread-safe; one per connection.
public struct SMTPLineDecoder: Sendable {
    public let maximumLineLength: Int
    private var partial: [UInt8] = []
    private var discarding = false

    /// `maximumLineLength` includes CRLF; values below RFC 5321's 512 are raised to 512.
    public init(maximumLineLength: Int) {
        self.maximumLineLength = max(512, maximumLineLength)
    }

    /// Bytes of an unfinished line held right now (≤ `maximumLineLength`).
    public var bufferedByteCount: Int { partial.count }

    /// Consumes bytes from `buffer` up to and including the next line end and returns the
    /// event, or consumes everything and returns nil when no line ended yet.
    public mutating func next(_ buffer: inout ByteBuffer) -> SMTPLineEvent? {
        let view = buffer.readableBytesView
        guard !view.isEmpty else { return nil }
        if let lf = view.firstIndex(of: UInt8(ascii: "\n")) {
            let chunk = view[view.startIndex..<lf]
            let consumed = lf - view.startIndex + 1
            defer { buffer.moveReaderIndex(forwardBy: consumed) }
            if discarding {
                discarding = false
                partial.removeAll(keepingCapacity: false)
                return .tooLong
            }
            // total line length including LF
            if partial.count + chunk.count + 1 > maximumLineLength {
                partial.removeAll(keepingCapacity: false)
                return .tooLong
            }
            partial.append(contentsOf: chunk)
            defer { partial.removeAll(keepingCapacity: true) }
            guard partial.last == UInt8(ascii: "\r") else {
                return .bareLineFeed
            }
            return .line(Array(partial.dropLast()))
        }
        // No line end: keep (or drop) the bytes.
        if !discarding {
            if partial.count + view.count > maximumLineLength - 1 {
                // Cannot fit even without... the LF still has to come: too long.
                discarding = true
                partial.removeAll(keepingCapacity: false)
            } else {
                partial.append(contentsOf: view)
            }
        }
        buffer.moveReaderIndex(forwardBy: view.count)
        return nil
    }

    /// Forgets any partial line (used when switching modes).
    public mutating func reset() {
        partial.removeAll(keepingCapacity: false)
        discarding = false
    }
}
