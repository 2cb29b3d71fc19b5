import XCTest
import NIOCore
@testable import SMTPProtocol

/// Deterministic pseudo-random input (xorshift64*), so failures are reproducible.
private struct XorShift: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
        return state &* 2685821657736338717
    }
}

final class SMTPFuzzTests: XCTestCase {
    /// Random sessions built from SMTP-ish fragments and noise, split into random chunks:
    /// the pure pipeline (line decoder → machine → data decoder) never traps and every
    /// buffer stays within its stated maximum.
    func testRandomSessionsStayWithinBounds() {
        let fragments = ["EHLO a\r\n", "MAIL FROM:<s@x.example>\r\n", "RCPT TO:<r@y.example>\r\n", "DATA\r\n", ".\r\n",
                         "\r\n.\r\n", "\n.\n", "\r", "\n", ".", "..", "\0", "RSET\r\n", "MAIL FROM:<> SIZE=99999999\r\n",
                         "RCPT TO:<\"q\\\"x\"@[1.2.3.4]>\r\n", String(repeating: "z", count: 700), "QUIT\r\n", "\u{FF}\u{FE}"]
        var rng = XorShift(state: 0x5EED_1234_ABCD_0001)
        let config = SMTPServerStateMachine.Configuration(hostname: "mx.test", maxMessageSize: 2000, maxRecipients: 3, maxErrors: 1000)
        for _ in 0..<300 {
            var input: [UInt8] = []
            for _ in 0..<Int.random(in: 1...60, using: &rng) {
                if Int.random(in: 0..<5, using: &rng) == 0 {
                    input += (0..<Int.random(in: 1...20, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                } else {
                    input += Array(fragments.randomElement(using: &rng)!.utf8)
                }
            }
            var machine = SMTPServerStateMachine(configuration: config)
            var lines = SMTPLineDecoder(maximumLineLength: 512)
            var data: SMTPDataDecoder?
            var queue = machine.handle(.connectionDecision(nil))
            var offset = 0
            var closed = false
            while offset < input.count, !closed {
                let n = Int.random(in: 1...64, using: &rng)
                var buffer = ByteBuffer(bytes: input[offset..<min(input.count, offset + n)])
                offset += n
                while !closed {
                    while let action = queue.first {
                        queue.removeFirst()
                        switch action {
                        case .send: break
                        case .askMailFrom: queue += machine.handle(.mailDecision(nil))
                        case .askRcptTo: queue += machine.handle(.rcptDecision(nil))
                        case .askData: queue += machine.handle(.dataDecision(SMTPReply(code: 250, "ok")))
                        case .startData: data = SMTPDataDecoder(maximumMessageSize: 2000)
                        case .startTLS: queue += machine.handle(.tlsStarted)
                        case .askAuth: queue += machine.handle(.authDecision(SMTPReply(.authFailed)))
                        case .refused: break
                        case .close: closed = true
                        case .readChunk, .discardChunk: break  // chunk octets are the I/O layer's (SMTPServerChunkingTests)
                        }
                    }
                    if closed { break }
                    if data != nil {
                        guard let outcome = data!.feed(&buffer) else { break }
                        XCTAssertLessThanOrEqual(data!.bufferedByteCount, 2000)
                        if case .message(let m) = outcome { XCTAssertLessThanOrEqual(m.readableBytes, 2000) }
                        data = nil
                        queue += machine.handle(.dataComplete(outcome))
                    } else {
                        guard let event = lines.next(&buffer) else { break }
                        queue += machine.handle(.line(event))
                    }
                }
                XCTAssertLessThanOrEqual(lines.bufferedByteCount, 512)
                XCTAssertLessThanOrEqual(data?.bufferedByteCount ?? 0, 2000)
            }
        }
    }
}
