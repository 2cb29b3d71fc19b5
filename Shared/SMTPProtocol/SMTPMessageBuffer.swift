public import NIOCore

/// The octets of one incoming message, as DATA (`SMTPDataDecoder`) and BDAT
/// (`SMTPChunkAssembler`) collect them: at most `maximumMessageSize` kept; once the message is
/// known to be refused (too big, tainted by a bare line end, or dropped for the memory budget)
/// what is held is freed and only counting goes on.
struct SMTPMessageBuffer: Sendable {
    let maximumMessageSize: Int
    private(set) var body: ByteBuffer
    private(set) var size = 0
    private(set) var tainted = false
    private var keeping = true

    init(maximumMessageSize: Int, allocator: ByteBufferAllocator) {
        self.maximumMessageSize = maximumMessageSize
        self.body = allocator.buffer(capacity: min(maximumMessageSize, 64 * 1024))
    }

    var bufferedByteCount: Int { body.readableBytes }
    var isKeeping: Bool { keeping }

    mutating func emit(_ bytes: UnsafeRawBufferPointer) {
        size += bytes.count
        guard keeping else { return }
        if size > maximumMessageSize || tainted {
            drop()
            return
        }
        body.writeBytes(bytes)
    }

    mutating func emit(_ byte: UInt8) {
        withUnsafeBytes(of: byte) { emit($0) }
    }

    /// A bare CR or LF (where not normalized): the message will be refused.
    mutating func taint() {
        tainted = true
        drop()
    }

    mutating func drop() {
        keeping = false
        body = ByteBuffer()
    }

    /// The outcome, handing the body over.
    mutating func outcome() -> SMTPDataOutcome {
        let result: SMTPDataOutcome
        if tainted {
            result = .bareLineEnding
        } else if size > maximumMessageSize {
            result = .tooBig(size: size)
        } else {
            result = .message(body)
        }
        body = ByteBuffer()
        return result
    }
}
