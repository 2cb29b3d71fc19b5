public import NIOCore

/// How a DATA phase ended (always at the real `CRLF.CRLF`).
public enum SMTPDataOutcome: Sendable, Hashable {
    /// The unstuffed message, CRLF line ends, at most `maximumMessageSize` bytes.
    case message(ByteBuffer)
    /// The message exceeded `maximumMessageSize`; `size` counts all unstuffed bytes seen.
    case tooBig(size: Int)
    /// A bare CR or bare LF occurred in the data; the message must be rejected.
    case bareLineEnding
}

/// Decodes the DATA phase: finds the end marker, dot-unstuffs, counts the size.
///
/// Policy against SMTP smuggling (Postfix CVE-2023-51764, Sendmail CVE-2023-51765, Exim
/// CVE-2023-51766): only `CR LF . CR LF` ends the data (the CRLF of the DATA command counts as
/// the first line end, so `.CRLF` right away is an empty message). A bare LF or a bare CR
/// (one not immediately followed by LF) anywhere never starts or ends a line for the purpose
/// of finding the end marker, and taints the message: the outcome is `.bareLineEnding`
/// (rejected with a 5xx), never a message. `<LF>.<LF>`, `<LF>.<CR><LF>`, `<CR><LF>.<LF>`,
/// `<CR>.<CR>` etc. therefore never end data early and are never accepted.
///
/// Memory: owns one `ByteBuffer` with at most `maximumMessageSize` bytes; once the message
/// is known to be rejected (too big or tainted) the buffer is dropped and only counting
/// continues. Bytes after the end marker are left in the input buffer (pipelining).
/// NUL and other octets pass through unchanged (8BITMIME). Not thread-safe.
public struct SMTPDataDecoder: Sendable {
    enum State: Sendable { case lineStart, inLine, cr, dot, dotCR }

    public let maximumMessageSize: Int
    private var state: State = .lineStart
    private var body: ByteBuffer
    private var size = 0
    private var tainted = false
    private var keeping = true

    public init(maximumMessageSize: Int, allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        self.maximumMessageSize = maximumMessageSize
        self.body = allocator.buffer(capacity: min(maximumMessageSize, 64 * 1024))
    }

    /// Message bytes held right now (≤ `maximumMessageSize`).
    public var bufferedByteCount: Int { body.readableBytes }
    /// Unstuffed bytes seen so far.
    public var byteCount: Int { size }

    private mutating func emit(_ bytes: UnsafeRawBufferPointer) {
        size += bytes.count
        guard keeping else { return }
        if size > maximumMessageSize || tainted {
            drop()
            return
        }
        body.writeBytes(bytes)
    }

    private mutating func emit(_ byte: UInt8) {
        withUnsafeBytes(of: byte) { emit($0) }
    }

    private mutating func taint() {
        tainted = true
        drop()
    }

    /// Stops keeping the message (e.g. the process's memory budget is used up): what is held
    /// is freed, the rest is only counted and scanned for the end marker, and the outcome is
    /// still reported — the caller must not accept it (it knows it called this).
    public mutating func discardBody() {
        drop()
    }

    private mutating func drop() {
        keeping = false
        body = ByteBuffer()
    }

    /// Consumes input; returns the outcome once the end marker was consumed, else nil
    /// (all input consumed).
    public mutating func feed(_ buffer: inout ByteBuffer) -> SMTPDataOutcome? {
        let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), dot = UInt8(ascii: ".")
        var finished = false
        let consumed = buffer.withUnsafeReadableBytes { raw -> Int in
            var i = 0
            let n = raw.count
            while i < n {
                switch state {
                case .inLine:
                    // Fast path: copy the run up to the next CR or LF.
                    var j = i
                    while j < n, raw[j] != cr, raw[j] != lf { j += 1 }
                    if j > i { emit(UnsafeRawBufferPointer(rebasing: raw[i..<j])) }
                    i = j
                    guard i < n else { break }
                    if raw[i] == cr {
                        state = .cr
                    } else {
                        emit(lf)
                        taint()  // bare LF
                    }
                    i += 1
                case .lineStart:
                    let b = raw[i]
                    i += 1
                    if b == dot {
                        state = .dot
                    } else if b == cr {
                        state = .cr
                    } else if b == lf {
                        emit(lf); taint(); state = .inLine
                    } else {
                        emit(b); state = .inLine
                    }
                case .cr:
                    let b = raw[i]
                    i += 1
                    if b == lf {
                        emit(cr); emit(lf); state = .lineStart
                    } else if b == cr {
                        emit(cr); taint()  // the previous CR was bare; stay in .cr
                    } else {
                        emit(cr); taint(); emit(b); state = .inLine
                    }
                case .dot:
                    let b = raw[i]
                    i += 1
                    if b == cr {
                        state = .dotCR
                    } else if b == lf {
                        emit(lf); taint(); state = .inLine
                    } else {
                        emit(b); state = .inLine  // the leading dot was stuffing
                    }
                case .dotCR:
                    let b = raw[i]
                    i += 1
                    if b == lf {
                        finished = true
                        return i
                    } else if b == cr {
                        emit(cr); taint(); state = .cr
                    } else {
                        emit(cr); taint(); emit(b); state = .inLine
                    }
                }
            }
            return i
        }
        buffer.moveReaderIndex(forwardBy: consumed)
        guard finished else { return nil }
        let outcome: SMTPDataOutcome
        if tainted {
            outcome = .bareLineEnding
        } else if size > maximumMessageSize {
            outcome = .tooBig(size: size)
        } else {
            outcome = .message(body)
        }
        body = ByteBuffer()
        return outcome
    }
}
