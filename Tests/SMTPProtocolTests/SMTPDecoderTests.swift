import XCTest
import NIOCore
@testable import SMTPProtocol

/// Runs the data decoder on `input` split at every possible point, plus byte by byte and in
/// one piece; all runs must agree. Returns the outcome and the bytes left after the end.
private func decodeAllSplits(_ input: [UInt8], max: Int = 1 << 20, normalize: Bool = false,
                             file: StaticString = #filePath, line: UInt = #line)
    -> (SMTPDataOutcome?, [UInt8])
{
    func run(_ chunks: [ArraySlice<UInt8>]) -> (SMTPDataOutcome?, [UInt8]) {
        var decoder = SMTPDataDecoder(maximumMessageSize: max, normalizeBareLineFeeds: normalize)
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

    /// Normalize mode: bare LFs become CRLF, but the same smuggling variants still never end
    /// the data — the smuggled commands stay message text, and the real end is the only end.
    func testNormalizeModeStoresCRLFAndStillOnlyCRLFDotCRLFEnds() {
        let (outcome, rest) = decodeAllSplits(bytes("Subject: x\n\nline one\nline two\r\n..dot\nend\r\n.\r\nNOOP\r\n"), normalize: true)
        XCTAssertEqual(outcome, message("Subject: x\r\n\r\nline one\r\nline two\r\n.dot\r\nend\r\n"))
        XCTAssertEqual(rest, bytes("NOOP\r\n"))
        for variant in ["\n.\r\n", "\n.\n", "\r\n.\n"] {
            let smuggled = "a" + variant + "MAIL FROM:<evil@x.example>\r\nDATA\r\nevil\r\n"
            let (outcome, rest) = decodeAllSplits(bytes(smuggled + ".\r\nNOOP\r\n"), normalize: true)
            guard case .message(let body)? = outcome else { return XCTFail("\(variant.debugDescription): \(String(describing: outcome))") }
            let text = String(buffer: body)
            XCTAssertTrue(text.contains("MAIL FROM:<evil@x.example>\r\nDATA\r\nevil\r\n"), variant.debugDescription)
            let withoutCRLF = text.replacingOccurrences(of: "\r\n", with: "")
            XCTAssertFalse(withoutCRLF.contains("\n") || withoutCRLF.contains("\r"), "no bare LF is stored")
            XCTAssertEqual(rest, bytes("NOOP\r\n"), variant.debugDescription)
        }
        // A bare CR still taints; the count of normalized LFs is kept.
        XCTAssertEqual(decodeAllSplits(bytes("a\rb\r\n.\r\n"), normalize: true).0, .bareLineEnding)
        var decoder = SMTPDataDecoder(maximumMessageSize: 1000, normalizeBareLineFeeds: true)
        var input = ByteBuffer(string: "a\nb\nc\r\n.\r\n")
        XCTAssertEqual(decoder.feed(&input), message("a\r\nb\r\nc\r\n"))
        XCTAssertEqual(decoder.bareLineFeeds, 2)
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

final class SMTPChunkAssemblerTests: XCTestCase {
    /// Every way of cutting the input into two appends gives the same outcome.
    func assemble(_ input: String, max: Int = 1000, normalize: Bool = false) -> (SMTPDataOutcome, Int) {
        let bytes = Array(input.utf8)
        var results: [(SMTPDataOutcome, Int)] = []
        for split in 0...bytes.count {
            var a = SMTPChunkAssembler(maximumMessageSize: max, normalizeBareLineFeeds: normalize)
            a.append(ByteBuffer(bytes: bytes[..<split]))
            a.append(ByteBuffer(bytes: bytes[split...]))
            results.append((a.finish(), a.bareLineFeeds))
        }
        for r in results { XCTAssertEqual(r.0, results[0].0, input.debugDescription) }
        return results[0]
    }

    func testChunksKeepOctetsAndLineEndsAreCheckedAcrossBoundaries() {
        XCTAssertEqual(assemble("a\r\n.\r\nb\r\n").0, .message(ByteBuffer(string: "a\r\n.\r\nb\r\n")), "no end marker, no unstuffing")
        XCTAssertEqual(assemble("no end").0, .message(ByteBuffer(string: "no end\r\n")))
        XCTAssertEqual(assemble("").0, .message(ByteBuffer()))
        for tainted in ["a\rb\r\n", "a\n", "end\r", "\r\r\n"] {
            XCTAssertEqual(assemble(tainted).0, .bareLineEnding, tainted.debugDescription)
        }
        let (normalized, count) = assemble("a\nb\r\nc\n", normalize: true)
        XCTAssertEqual(normalized, .message(ByteBuffer(string: "a\r\nb\r\nc\r\n")))
        XCTAssertEqual(count, 2)
        XCTAssertEqual(assemble("a\rb\r\n", normalize: true).0, .bareLineEnding, "a bare CR is refused in both modes")
        XCTAssertEqual(assemble(String(repeating: "x", count: 20), max: 10).0, .tooBig(size: 20))
    }
}
