import XCTest
import Foundation
@testable import SMGMIME

final class MIMEDecodingTests: XCTestCase {
    func testBase64IgnoresLineBreaksAndGarbage() {
        XCTAssertEqual(MIMEDecoding.base64(Array("SGVs\r\nbG8g\n d29y*bGQ=".utf8)), Array("Hello world".utf8))
        XCTAssertEqual(MIMEDecoding.base64(Array("SGVsbG8=".utf8), limit: 3), Array("Hel".utf8))
        XCTAssertEqual(MIMEDecoding.base64([UInt8]()), [])
    }

    func testQuotedPrintable() {
        let input = "caf=C3=A9 =\r\nsoft break, bad =ZZ escape, trailing =\n"
        XCTAssertEqual(String(decoding: MIMEDecoding.quotedPrintable(Array(input.utf8)), as: UTF8.self),
                       "café soft break, bad =ZZ escape, trailing ")
        XCTAssertEqual(String(decoding: MIMEDecoding.quotedPrintable(Array("a_b=3D".utf8), header: true), as: UTF8.self),
                       "a b=")
        XCTAssertEqual(MIMEDecoding.quotedPrintable(Array("=".utf8)), [])
        XCTAssertEqual(MIMEDecoding.quotedPrintable(Array("=4".utf8)), Array("=4".utf8))
    }

    func testEncodedWords() {
        let cases: [(String, String)] = [
            ("=?UTF-8?B?Y2Fmw6k=?=", "café"),
            ("=?iso-8859-1?Q?caf=E9?= au lait", "café au lait"),
            ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),                  // space between words dropped (§6.2)
            ("plain text", "plain text"),
            ("=?broken", "=?broken"),
            ("=?utf-8?X?abc?=", "=?utf-8?X?abc?="),
            ("Re: =?UTF-8*en?Q?Gr=C3=BC=C3=9Fe?=!", "Re: Grüße!"),
        ]
        for (input, expected) in cases {
            XCTAssertEqual(MIMEDecoding.encodedWords(input), expected, input)
        }
    }

    func testParameters() {
        let ct = MIMEParameterizedValue(parsing: "Multipart/Mixed; boundary=\"a;b\\\"c\"; charset=utf-8 ")
        XCTAssertEqual(ct.value, "multipart/mixed")
        XCTAssertEqual(ct.parameters["boundary"], "a;b\"c")
        XCTAssertEqual(ct.parameters["charset"], "utf-8")
        // RFC 2231 continuations with charset and percent-encoding.
        let cd = MIMEParameterizedValue(parsing:
            "attachment; filename*0*=UTF-8''Rechnung%20%C3%BC; filename*1=ber.pdf.exe; size=12")
        XCTAssertEqual(cd.value, "attachment")
        XCTAssertEqual(cd.parameters["filename"], "Rechnung über.pdf.exe")
        let single = MIMEParameterizedValue(parsing: "inline; filename*=iso-8859-1'de'caf%E9.txt")
        XCTAssertEqual(single.parameters["filename"], "café.txt")
    }
}

final class MIMEParserTests: XCTestCase {
    func crlf(_ lines: [String]) -> [UInt8] { Array(lines.joined(separator: "\r\n").utf8) }

    func testSimpleMessageWithFoldedHeaders() {
        let message = MIMEParser.parse(crlf([
            "From: a@example.com", "Subject: a long", "\tfolded subject", "Content-Type: text/plain;", " charset=utf-8",
            "", "hello", "world",
        ]))
        XCTAssertEqual(message.headers["subject"], "a long folded subject")
        XCTAssertEqual(message.root.mimeType, "text/plain")
        XCTAssertEqual(message.root.contentType.parameters["charset"], "utf-8")
        XCTAssertEqual(String(decoding: message.root.body, as: UTF8.self), "hello\r\nworld")
        XCTAssertEqual(message.leaves.count, 1)
        XCTAssertTrue(message.defects.isEmpty, "\(message.defects)")
    }

    func testNestedMultipartAndMessage() {
        let inner = [
            "From: inner@example.com", "Subject: inner", "Content-Type: multipart/alternative; boundary=ALT", "",
            "--ALT", "Content-Type: text/plain", "", "inner text", "--ALT",
            "Content-Type: text/html", "Content-Transfer-Encoding: quoted-printable", "", "<p>caf=C3=A9</p>", "--ALT--",
        ]
        let bytes = crlf([
            "From: a@example.com", "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=\"OUT\"", "",
            "preamble", "--OUT", "Content-Type: text/plain", "", "body text", "--OUT",
            "Content-Type: application/octet-stream; name=\"=?utf-8?B?ZmlsZS5iaW4=?=\"",
            "Content-Disposition: attachment", "Content-Transfer-Encoding: base64", "", "AAEC", "Aw==", "--OUT",
            "Content-Type: message/rfc822", "",
        ] + inner + ["--OUT--", "epilogue"])
        let message = MIMEParser.parse(bytes)
        XCTAssertTrue(message.defects.isEmpty, "\(message.defects)")
        XCTAssertEqual(message.root.children.count, 3)
        let leaves = message.leaves
        XCTAssertEqual(leaves.map(\.path), ["1", "2", "3.1.1", "3.1.2"])
        XCTAssertEqual(String(decoding: leaves[0].body, as: UTF8.self), "body text")
        XCTAssertEqual(leaves[1].body, [0, 1, 2, 3])
        XCTAssertEqual(leaves[1].filename, "file.bin")
        XCTAssertEqual(String(decoding: leaves[3].body, as: UTF8.self), "<p>café</p>")
        XCTAssertEqual(message.root.children[2].children[0].headers["subject"], "inner")
    }

    func testLFOnlyAndMissingClosingBoundary() {
        let text = "Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\nContent-Type: text/html\n\ntwo\n"
        let message = MIMEParser.parse(Array(text.utf8))
        XCTAssertEqual(message.leaves.map { String(decoding: $0.body, as: UTF8.self) }, ["one", "two\n"])
        XCTAssertFalse(message.defects.isEmpty)
    }

    func testLimitsHold() {
        // 40 nested multiparts, a limit of 8: parsing stops going deeper.
        var text = ""
        for i in 0..<40 { text += "Content-Type: multipart/mixed; boundary=b\(i)\r\n\r\n--b\(i)\r\n" }
        text += "\r\ninnermost\r\n"
        let deep = MIMEParser.parse(Array(text.utf8), limits: MIMELimits(maxDepth: 8))
        XCTAssertLessThanOrEqual(deep.root.all.map(\.depth).max() ?? 0, 8)
        XCTAssertFalse(deep.defects.isEmpty)

        // 5000 parts, a limit of 100.
        var many = "Content-Type: multipart/mixed; boundary=x\r\n\r\n"
        for i in 0..<5000 { many += "--x\r\n\r\npart \(i)\r\n" }
        many += "--x--\r\n"
        let wide = MIMEParser.parse(Array(many.utf8), limits: MIMELimits(maxParts: 100))
        XCTAssertLessThanOrEqual(wide.root.all.count, 100)

        // Decoded bytes are bounded.
        let big = "Content-Transfer-Encoding: base64\r\n\r\n" + String(repeating: "QUFB", count: 100_000)
        let cut = MIMEParser.parse(Array(big.utf8), limits: MIMELimits(maxDecodedBytes: 1000))
        XCTAssertEqual(cut.root.body.count, 1000)
        XCTAssertTrue(cut.root.truncated)
    }

    func testHeaderSection() {
        // Complete lines, each with its line break, without the empty line.
        XCTAssertEqual(MIMEParser.headerSection(crlf(["A: 1", "B: 2", "", "body"])), crlf(["A: 1", "B: 2", ""]))
    }

    /// Property test: random and mutated inputs never crash, and every result stays within the limits.
    func testRandomAndMutatedInputsNeverCrash() {
        var rng = SplitMix(seed: 0x5EED)
        let seeds: [[UInt8]] = [
            crlf(["Content-Type: multipart/mixed; boundary=q", "", "--q", "Content-Type: message/rfc822", "",
                  "Content-Type: multipart/alternative; boundary=r", "", "--r",
                  "Content-Transfer-Encoding: base64", "", "SGVsbG8=", "--r--", "--q",
                  "Content-Transfer-Encoding: quoted-printable", "Content-Disposition: attachment; filename*0*=utf-8''a%20;",
                  " filename*1=b.exe", "", "x=3Dy=\r\n", "--q--"]),
            crlf(["Subject: =?utf-8?Q?a?= =?utf-8?B?Yg==?=", "", "body"]),
        ]
        let alphabet = Array("-=?:;\"\\\r\n \t=ABab0QB*'%".utf8)
        let limits = MIMELimits(maxDepth: 6, maxParts: 50, maxHeaderBytes: 4096, maxDecodedBytes: 64 * 1024)
        for round in 0..<20_000 {
            var input: [UInt8]
            if round % 3 == 0 {
                input = (0..<Int(rng.next() % 600)).map { _ in
                    rng.next() % 2 == 0 ? alphabet[Int(rng.next() % UInt64(alphabet.count))] : UInt8(truncatingIfNeeded: rng.next())
                }
            } else {
                input = seeds[round % seeds.count]
                for _ in 0..<(1 + Int(rng.next() % 12)) {
                    guard !input.isEmpty else { break }
                    let at = Int(rng.next() % UInt64(input.count))
                    switch rng.next() % 4 {
                    case 0: input[at] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                    case 1: input.remove(at: at)
                    case 2: input.insert(contentsOf: input[at..<min(input.count, at + Int(rng.next() % 40))], at: at)
                    default: input = Array(input[..<at])
                    }
                }
            }
            let message = MIMEParser.parse(input, limits: limits)
            let all = message.root.all
            XCTAssertLessThanOrEqual(all.count, limits.maxParts + 1)
            XCTAssertLessThanOrEqual(all.map(\.depth).max() ?? 0, limits.maxDepth + 1)
            XCTAssertLessThanOrEqual(all.reduce(0) { $0 + $1.body.count }, limits.maxDecodedBytes)
            _ = all.map { ($0.filename, $0.label, $0.headers.fields.map(\.decodedValue)) }
        }
    }
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
