public import NIOCore

/// The chunks of one BDAT transaction (RFC 3030 CHUNKING), assembled under the same rules as
/// DATA (`SMTPDataDecoder`): at most `maximumMessageSize` octets kept (beyond that only counted,
/// outcome `.tooBig`), a bare CR taints the message (`.bareLineEnding`), a bare LF is stored as
/// CRLF when `normalizeBareLineFeeds` (counted in `bareLineFeeds`) and taints otherwise. There is
/// no end marker and no dot-stuffing: the chunk sizes delimit the data, so smuggling by line
/// ends is impossible here by construction. A message that does not end in CRLF gets one (what
/// DATA would have stored). Not thread-safe.
public struct SMTPChunkAssembler: Sendable {
    public var maximumMessageSize: Int { message.maximumMessageSize }
    public let normalizeBareLineFeeds: Bool
    private var message: SMTPMessageBuffer
    private var afterCR = false
    /// Bare LFs stored as CRLF (normalize mode).
    public private(set) var bareLineFeeds = 0

    public init(maximumMessageSize: Int, normalizeBareLineFeeds: Bool = false,
                allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        self.normalizeBareLineFeeds = normalizeBareLineFeeds
        self.message = SMTPMessageBuffer(maximumMessageSize: maximumMessageSize, allocator: allocator)
    }

    /// Message octets held right now (≤ `maximumMessageSize`).
    public var bufferedByteCount: Int { message.bufferedByteCount }
    /// Octets of the message so far (after normalization).
    public var byteCount: Int { message.size }

    /// Stops keeping the message (memory budget used up); the outcome is still reported and the
    /// caller must not accept it.
    public mutating func discardBody() {
        message.drop()
    }

    private mutating func emit(_ bytes: UnsafeRawBufferPointer) { message.emit(bytes) }
    private mutating func emit(_ byte: UInt8) { message.emit(byte) }
    private mutating func taint() { message.taint() }

    /// Adds the octets of a chunk (any part of it; chunks may arrive in pieces).
    public mutating func append(_ raw: UnsafeRawBufferPointer) {
        let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")
        var i = 0
        let n = raw.count
        while i < n {
            if afterCR {
                afterCR = false
                if raw[i] == lf {
                    emit(lf)
                    i += 1
                    continue
                }
                taint()  // the CR before was bare
            }
            var j = i
            while j < n, raw[j] != cr, raw[j] != lf { j += 1 }
            if j > i { emit(UnsafeRawBufferPointer(rebasing: raw[i..<j])) }
            guard j < n else { break }
            if raw[j] == cr {
                emit(cr)
                afterCR = true
            } else if normalizeBareLineFeeds {
                emit(cr); emit(lf)
                bareLineFeeds += 1
            } else {
                emit(lf); taint()
            }
            i = j + 1
        }
    }

    public mutating func append(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { append($0) }
    }

    /// The outcome after the LAST chunk.
    public mutating func finish() -> SMTPDataOutcome {
        if afterCR { taint() }  // ended in a bare CR
        if !message.tainted, message.isKeeping, !endsInCRLF { emit(UInt8(ascii: "\r")); emit(UInt8(ascii: "\n")) }
        return message.outcome()
    }

    /// Whether the octets held end in CRLF (or there are none); no copy of the body is made.
    private var endsInCRLF: Bool {
        let n = message.body.readableBytes
        guard n > 0 else { return true }
        guard n >= 2 else { return false }
        return message.body.getInteger(at: message.body.writerIndex - 2, as: UInt16.self) == 0x0D0A
    }
}
