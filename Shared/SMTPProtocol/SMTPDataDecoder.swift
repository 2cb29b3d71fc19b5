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
///
/// `normalizeBareLineFeeds` (Postfix 3.9's `smtpd_forbid_bare_newline = normalize`): a bare LF
/// is stored as CRLF and counted in `bareLineFeeds` instead of tainting the message. The line
/// after it is a line for dot-unstuffing, but it can never end the data: only a real
/// `CR LF . CR LF` does, so smuggling stays impossible. A bare CR taints in both modes.
public struct SMTPDataDecoder: Sendable {
    /// `softLineStart`: after a normalized bare LF (unstuffs a leading dot, never ends the data).
    enum State: Sendable { case lineStart, softLineStart, inLine, cr, dot, dotCR }

    public var maximumMessageSize: Int { message.maximumMessageSize }
    public let normalizeBareLineFeeds: Bool
    private var state: State = .lineStart
    private var message: SMTPMessageBuffer
    /// Bare LFs stored as CRLF (normalize mode).
    public private(set) var bareLineFeeds = 0

    public init(maximumMessageSize: Int, normalizeBareLineFeeds: Bool = false,
                allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        self.normalizeBareLineFeeds = normalizeBareLineFeeds
        self.message = SMTPMessageBuffer(maximumMessageSize: maximumMessageSize, allocator: allocator)
    }

    /// A bare LF: CRLF and a soft line start when normalizing, else the message is tainted.
    private mutating func bareLineFeed() {
        if normalizeBareLineFeeds {
            emit(UInt8(ascii: "\r")); emit(UInt8(ascii: "\n"))
            bareLineFeeds += 1
            state = .softLineStart
        } else {
            emit(UInt8(ascii: "\n")); taint(); state = .inLine
        }
    }

    /// Message bytes held right now (≤ `maximumMessageSize`).
    public var bufferedByteCount: Int { message.bufferedByteCount }
    /// Unstuffed bytes seen so far.
    public var byteCount: Int { message.size }

    private mutating func emit(_ bytes: UnsafeRawBufferPointer) { message.emit(bytes) }
    private mutating func emit(_ byte: UInt8) { message.emit(byte) }
    private mutating func taint() { message.taint() }

    /// Stops keeping the message (e.g. the process's memory budget is used up): what is held
    /// is freed, the rest is only counted and scanned for the end marker, and the outcome is
    /// still reported — the caller must not accept it (it knows it called this).
    public mutating func discardBody() {
        message.drop()
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
                        bareLineFeed()
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
                        bareLineFeed()
                    } else {
                        emit(b); state = .inLine
                    }
                case .softLineStart:
                    let b = raw[i]
                    i += 1
                    if b == dot {
                        state = .inLine  // stuffing removed; this line cannot be the end marker
                    } else if b == cr {
                        state = .cr
                    } else if b == lf {
                        bareLineFeed()
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
                        bareLineFeed()  // "CRLF . LF" is a line (".", unstuffed), never the end
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
        return message.outcome()
    }
}
