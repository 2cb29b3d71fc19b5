import XCTest
import NIOCore
@testable import SMTPProtocol

/// Runs the data decoder on `input` split at every possible point, plus byte by byte and in
/// one piece; all runs must agree. Returns the outcome and the bytes left after the end.
private func decodeAllSplits(_ input: [UInt8], max: Int = 1 << 20, file: StaticString = #filePath, line: UInt = #line)
    -> (SMTPDataOutcome?, [UInt8])
{
    func run(_ chunks: [ArraySlice<UInt8>]) -> (SMTPDataOutcome?, [UInt8]) {
        var decoder = SMTPDataDecoder(maximumMessageSize: max)
        var outcome: SMTPDataOutcome?
        var rest: [UInt8] = []
        for chunk in chunks {
            var buffer = ByteBuffer(bytes: chunk)
            if outcome == nil {
                outcome = decoder.feed(&buffer)
            }
            rest += buffer.readableBytesView
        }
        return (outcome, rest)
    }
    let whole = run([input[...]])
    let drip = run(input.indices.map { input[$0...$0] })
    XCTAssertEqual(drip.0, whole.0, "drip-fed differs", file: file, line: line)
    XCTAssertEqual(drip.1, whole.1, "drip-fed rest differs", file: file, line: line)
    if input.count <= 2000 {
        for split in 0...input.count {
            let r = run([input[..<split], input[split...]])
            XCTAssertEqual(r.0, whole.0, "split at \(split) differs", file: file, line: line)
            XCTAssertEqual(r.1, whole.1, "split at \(split) rest differs", file: file, line: line)
        }
    }
    return whole
}

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
private func message(_ s: String) -> SMTPDataOutcome { .message(ByteBuffer(string: s)) }

final class SMTPDataDecoderTests: XCTestCase {
    func testPlainMessageAndPipelinedRest() {
        let (outcome, rest) = decodeAllSplits(bytes("Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n"))
        XCTAssertEqual(outcome, message("Subject: x\r\n\r\nhello\r\n"))
        XCTAssertEqual(rest, bytes("QUIT\r\n"))
    }

    func testEmptyMessage() {
        XCTAssertEqual(decodeAllSplits(bytes(".\r\n")).0, message(""))
    }

    func testDotUnstuffing() {
        let (outcome, _) = decodeAllSplits(bytes("..leading\r\n...two\r\n\r\n. \r\n.x\r\n.\r\n"))
        XCTAssertEqual(outcome, message(".leading\r\n..two\r\n\r\n \r\nx\r\n"))
    }

    func testNulAndEightBitPassThrough() {
        let input: [UInt8] = bytes("a") + [0, 0xC3, 0xA4] + bytes("b\r\n.\r\n")
        XCTAssertEqual(decodeAllSplits(input).0, .message(ByteBuffer(bytes: bytes("a") + [0, 0xC3, 0xA4] + bytes("b\r\n"))))
    }

    /// SMTP smuggling variants: none ends the data early; each taints the message.
    func testSmugglingVariantsNeverEndDataEarly() {
        let variants = ["\n.\r\n", "\n.\n", "\r.\r", "\r\n.\n", "\r.\r\n", "\n.\r", "\r\n.\r", "\r\n.\rX"]
        for variant in variants {
            let smuggled = "a" + variant + "MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@y.example>\r\nDATA\r\nevil\r\n"
            let input = bytes(smuggled + ".\r\nNOOP\r\n")
            let (outcome, rest) = decodeAllSplits(input)
            XCTAssertEqual(outcome, .bareLineEnding, variant.debugDescription)
            XCTAssertEqual(rest, bytes("NOOP\r\n"), variant.debugDescription)
        }
    }

    func testBareLineEndingsTaint() {
        for body in ["a\nb\r\n", "a\rb\r\n", "a\r\r\n", "\n", ".\n", "x\r\n.\rb\r\n"] {
            XCTAssertEqual(decodeAllSplits(bytes(body + "\r\n.\r\n")).0, .bareLineEnding, body.debugDescription)
        }
    }

    func testTooBigKeepsReadingToTheRealEnd() {
        let body = String(repeating: "0123456789abcdef\r\n", count: 100)  // 1800 bytes
        let (outcome, rest) = decodeAllSplits(bytes(body + ".\r\nQUIT\r\n"), max: 1000)
        XCTAssertEqual(outcome, .tooBig(size: 1800))
        XCTAssertEqual(rest, bytes("QUIT\r\n"))
        // exactly at the limit is fine
        XCTAssertEqual(decodeAllSplits(bytes(body + ".\r\n"), max: 1800).0, message(body))
    }

    func testMemoryBoundedWhenTooBig() {
        var decoder = SMTPDataDecoder(maximumMessageSize: 10_000)
        var chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64 * 1024)
        for _ in 0..<50 {
            var c = chunk
            XCTAssertNil(decoder.feed(&c))
            XCTAssertLessThanOrEqual(decoder.bufferedByteCount, 10_000)
        }
        chunk = ByteBuffer(string: "\r\n.\r\n")
        XCTAssertEqual(decoder.feed(&chunk), .tooBig(size: 50 * 64 * 1024 + 2))
    }

    func testIncompleteDataReturnsNil() {
        var decoder = SMTPDataDecoder(maximumMessageSize: 100)
        var buffer = ByteBuffer(string: "hello\r\n.\r")
        XCTAssertNil(decoder.feed(&buffer))
        XCTAssertEqual(buffer.readableBytes, 0)
    }
}

final class SMTPLineDecoderTests: XCTestCase {
    private func events(_ input: [UInt8], max: Int = 512, chunk: Int) -> ([SMTPLineEvent], Int) {
        var decoder = SMTPLineDecoder(maximumLineLength: max)
        var out: [SMTPLineEvent] = []
        var peak = 0
        var i = 0
        while i < input.count {
            var buffer = ByteBuffer(bytes: input[i..<min(input.count, i + chunk)])
            while let e = decoder.next(&buffer) { out.append(e) }
            peak = Swift.max(peak, decoder.bufferedByteCount)
            i += chunk
        }
        return (out, peak)
    }

    func testLinesDripAndCoalesced() {
        let input = bytes("EHLO a\r\nNOOP\nRSET\r\nX\rY\r\n")
        let expected: [SMTPLineEvent] = [.line(bytes("EHLO a")), .bareLineFeed, .line(bytes("RSET")), .line(bytes("X\rY"))]
        for chunk in [1, 2, 3, 7, input.count] {
            XCTAssertEqual(events(input, chunk: chunk).0, expected, "chunk \(chunk)")
        }
    }

    func testLengthLimitIncludesCRLF() {
        let exact = String(repeating: "a", count: 510) + "\r\n"
        XCTAssertEqual(events(bytes(exact), chunk: 100).0, [.line(bytes(String(repeating: "a", count: 510)))])
        let over = String(repeating: "a", count: 511) + "\r\nNOOP\r\n"
        for chunk in [1, 100, 1000] {
            XCTAssertEqual(events(bytes(over), chunk: chunk).0, [.tooLong, .line(bytes("NOOP"))], "chunk \(chunk)")
        }
    }

    func testTenMegabyteLineIsNotBuffered() {
        let input = [UInt8](repeating: UInt8(ascii: "A"), count: 10 * 1024 * 1024) + bytes("\r\nQUIT\r\n")
        let (out, peak) = events(input, max: 2048, chunk: 65536)
        XCTAssertEqual(out, [.tooLong, .line(bytes("QUIT"))])
        XCTAssertLessThanOrEqual(peak, 2048)
    }
}
