import XCTest
import Foundation
@testable import SMGSpam

/// The built-in engine on hand-written messages, with the model the project ships.
final class SpamEngineTests: XCTestCase {
    static let shipped: BayesModel = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try! SpamModelFile.read(path: root.appendingPathComponent("deploy/spam/model.txt").path)
    }()

    static func message(subject: String, from: String = "Anna Berger <anna.berger@shop.example>",
                        to: String = "Lukas Meyer <lukas@partner.example>", extraHeaders: String = "",
                        contentType: String = "text/plain; charset=utf-8", body: String) -> [UInt8] {
        var text = "From: \(from)\r\nTo: \(to)\r\nSubject: \(subject)\r\n"
        text += "Date: Tue, 01 Dec 2026 09:15:00 +0100\r\nMessage-ID: <20261201091500.4711@shop.example>\r\n"
        text += "MIME-Version: 1.0\r\nContent-Type: \(contentType)\r\n\(extraHeaders)\r\n"
        text += body.replacingOccurrences(of: "\n", with: "\r\n")
        return Array(text.utf8)
    }

    static let business = message(subject: "Re: delivery schedule for the new shelves", body: """
        Hi Lukas,

        thanks for the call this morning. As discussed, we can ship the first twelve shelves on
        Thursday and the remaining ones next week, once the carpenter has finished the fittings.
        Could you confirm that someone is at the warehouse between 8 and 11 to sign for them?
        I attached nothing this time; the invoice follows with the second delivery.

        Best regards,
        Anna
        """)

    func testGTUBEIsSpamWithItsReason() {
        let raw = Self.message(subject: "test", body: "This is the GTUBE, the\nGeneric Test for Unsolicited Bulk Email\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n")
        let v = SpamEngine().classify(raw, model: Self.shipped)
        XCTAssertEqual(v.category, .spam)
        XCTAssertEqual(v.lane, .bad)
        XCTAssertTrue(v.reasons.first?.hasPrefix("GTUBE (+1000.0): contains the GTUBE") ?? false, "\(v.reasons)")
    }

    func testAPlainBusinessMessageIsClean() {
        let v = SpamEngine().classify(Self.business, model: Self.shipped)
        XCTAssertEqual(v.category, .clean, "\(v.score) \(v.reasons)")
        XCTAssertEqual(v.lane, .good)
        XCTAssertLessThan(v.probability, 0.5)
        XCTAssertTrue(v.reasons.contains { $0.contains("statistical spam probability") }, "\(v.reasons)")
    }

    func testTypicalSpamIsSpamWithReadableReasons() {
        let raw = Self.message(subject: "FREE!!! Lose weight fast - limited offer", from: "Best Deals <deals4u@bulk-offers.example>",
                               to: "undisclosed-recipients:;", contentType: "text/html; charset=us-ascii", body: """
            <html><body><span style="display:none">hidden words here</span>
            <p>Dear friend, you have been selected! Order now and get 80% off our incredible diet pills.
            No prescription needed, money back guarantee, act now while supplies last!</p>
            <a href="http://198.51.100.7/order">http://www.trusted-pharmacy.example/</a>
            <p>Click here to be removed from our mailing list.</p></body></html>
            """)
        let v = SpamEngine().classify(raw, model: Self.shipped)
        XCTAssertEqual(v.category, .spam, "\(v.score) \(v.reasons)")
        let names = Set(v.rules.map(\.name))
        for rule in ["HTML_ONLY_HIDDEN_TEXT", "URL_IP_LITERAL", "URL_TEXT_MISMATCH", "TO_UNDISCLOSED", "TEXT_PRESSURE", "REMOVE_FOOTER_NO_LIST"] {
            XCTAssertTrue(names.contains(rule), "\(rule) missing from \(names)")
        }
        XCTAssertTrue(v.reasons.contains { $0.contains("leads to 198.51.100.7") }, "\(v.reasons)")
    }

    func testListMailThatIsNotSuspectIsBulkAndTakesTheBulkLane() {
        let raw = Self.message(subject: "Our December newsletter", extraHeaders: "List-Unsubscribe: <mailto:leave@shop.example>\r\nList-Id: <news.shop.example>\r\n",
                               body: "Hi Lukas,\n\nthanks for the call this morning about the shelves; the carpenter has finished.\n")
        var policy = SpamPolicy()
        policy.bulkLane = .bad
        let v = SpamEngine(policy: policy).classify(raw, model: Self.shipped)
        XCTAssertEqual(v.category, .bulk, "\(v.score) \(v.reasons)")
        XCTAssertEqual(v.lane, .bad)
    }

    func testDangerousAttachmentAndShortenerRules() {
        let raw = Self.message(subject: "invoice", contentType: "multipart/mixed; boundary=b1", body: """
            --b1
            Content-Type: text/plain

            see https://bit.ly/3xYz and the attached file
            --b1
            Content-Type: application/octet-stream; name="invoice.pdf.exe"
            Content-Disposition: attachment; filename="invoice.pdf.exe"
            Content-Transfer-Encoding: base64

            TVqQAAMAAAAEAAAA
            --b1--
            """)
        let names = Set(SpamRules.evaluate(FeatureExtractor.extract(raw)).map(\.name))
        XCTAssertTrue(names.isSuperset(of: ["DANGEROUS_ATTACHMENT", "URL_SHORTENER"]), "\(names)")
        XCTAssertFalse(names.contains("MISSING_MESSAGE_ID"))
    }

    func testHeaderAnomalies() {
        let raw = Array("From: \"service@bank.example\" <x1@cheap-host.example>\r\nTo: Undisclosed recipients:;\r\nSubject: verify\r\nDate: yesterday\r\nX-Mailer: Microsoft Outlook Express 6.00\r\nX-Priority: 1 (Highest)\r\n\r\nplease verify your account\r\n".utf8)
        let names = Set(SpamRules.evaluate(FeatureExtractor.extract(raw)).map(\.name))
        XCTAssertTrue(names.isSuperset(of: ["MISSING_MESSAGE_ID", "DATE_MALFORMED", "FROM_NAME_ADDRESS_MISMATCH", "TO_UNDISCLOSED",
                                            "FORGED_OUTLOOK", "PRIORITY_HIGH"]), "\(names)")
        let zoneless = Array("Date: Tue, 01 Dec 2026 09:15:00\r\nMessage-ID: no-at-sign\r\n\r\nx\r\n".utf8)
        let more = Set(SpamRules.evaluate(FeatureExtractor.extract(zoneless)).map(\.name))
        XCTAssertTrue(more.isSuperset(of: ["DATE_NO_TIMEZONE", "MESSAGE_ID_MALFORMED"]), "\(more)")
        XCTAssertFalse(Set(SpamRules.evaluate(FeatureExtractor.extract(SpamEngineTests.business)).map(\.name))
            .contains { $0.hasPrefix("DATE") || $0.contains("MESSAGE_ID") })
    }

    func testTokensSkipRoutingHeadersAndKeepDomains() {
        let raw = Array("Received: from mx.secret-relay.example ([192.0.2.9])\r\nFrom: A <a@mail.shop.example>\r\nSubject: Hello World\r\n\r\nVisit http://www.shop.example/x and thanks\r\n".utf8)
        let tokens = FeatureExtractor.extract(raw).tokens
        XCTAssertTrue(tokens.isSuperset(of: ["s:hello", "s:world", "from:shop.example", "url:shop.example", "visit", "thanks"]), "\(tokens)")
        XCTAssertFalse(tokens.contains { $0.contains("secret-relay") || $0.contains("192.0.2.9") })
    }

    func testChiSquareCombining() {
        XCTAssertEqual(BayesScorer.chi2Q(0, 2), 1, accuracy: 1e-12)
        XCTAssertEqual(BayesScorer.chi2Q(2, 2), exp(-1), accuracy: 1e-12)
        // P(chi2 >= 10 | 4 dof) = e^-5 (1 + 5)
        XCTAssertEqual(BayesScorer.chi2Q(10, 4), exp(-5) * 6, accuracy: 1e-12)
        var model = BayesModel()
        model.learn(["cheap", "pills", "now"], spam: true, count: 50)
        model.learn(["meeting", "agenda", "now"], spam: false, count: 50)
        let scorer = BayesScorer()
        XCTAssertGreaterThan(scorer.score(["cheap", "pills"], model: model).probability, 0.99)
        XCTAssertLessThan(scorer.score(["meeting", "agenda"], model: model).probability, 0.01)
        XCTAssertEqual(scorer.score(["cheap", "agenda"], model: model).probability, 0.5, accuracy: 0.01)
        XCTAssertEqual(scorer.score(["unknown"], model: model).probability, 0.5)
    }

    func testModelFileRoundTripAndErrorsNameTheLine() throws {
        var model = BayesModel()
        model.learn(["a b", "s:x", "url:shop.example"], spam: true, count: 3)
        model.learn(["a b"], spam: false, count: 2)
        let decoded = try SpamModelFile.decode(SpamModelFile.encode(model))
        XCTAssertEqual(decoded.tokens, model.tokens)
        XCTAssertEqual(decoded.spamMessages, 3)
        XCTAssertEqual(decoded.hamMessages, 2)
        XCTAssertEqual(SpamModelFile.pruned(model, minimum: 4).tokens.keys.sorted(), ["a b"])
        XCTAssertThrowsError(try SpamModelFile.decode("\(SpamModelFile.magic)\nmessages 1 1\n1 x token\n", path: "m.txt")) { error in
            XCTAssertEqual("\(error)", "m.txt: line 3 must be \"<spam> <ham> <token>\"")
        }
        XCTAssertThrowsError(try SpamModelFile.decode("hello\n", path: "m.txt"))
    }

    func testShippedModelIsCompactTokenStatistics() throws {
        let model = Self.shipped
        XCTAssertTrue(model.isUsable)
        XCTAssertGreaterThan(model.tokens.count, 10_000)
        // Token statistics only: every token was seen in at least 3 messages (no single message's text).
        XCTAssertTrue(model.tokens.values.allSatisfy { $0.spam + $0.ham >= 3 })
    }

    func testCorpusReaderDropsMboxLineAndMakesCRLF() {
        let raw = CorpusReader.normalise(Array("From someone Mon Jan 1\nSubject: x\n\nbody\r\n".utf8))
        XCTAssertEqual(String(decoding: raw, as: UTF8.self), "Subject: x\r\n\r\nbody\r\n")
    }

    /// The byte search finds the first occurrence wherever it lies, on random texts over a small
    /// alphabet (many near misses) checked against a plain scan, and on bodies of one letter.
    func testSearchFindsFirstOccurrence() {
        var rng = SystemRandomNumberGenerator()
        func naive(_ needle: [UInt8], _ hay: [UInt8]) -> Int? {
            guard !needle.isEmpty else { return 0 }
            guard hay.count >= needle.count else { return nil }
            return (0...(hay.count - needle.count)).first { Array(hay[$0..<($0 + needle.count)]) == needle }
        }
        for _ in 0..<3000 {
            let hay = (0..<Int.random(in: 0...60, using: &rng)).map { _ in UInt8.random(in: 97...99, using: &rng) }
            let needle = (0..<Int.random(in: 0...6, using: &rng)).map { _ in UInt8.random(in: 97...99, using: &rng) }
            XCTAssertEqual(Search.firstIndex(of: needle, in: hay), naive(needle, hay), "\(needle) in \(hay)")
        }
        let xs = [UInt8](repeating: UInt8(ascii: "X"), count: 10_000)
        XCTAssertNil(Search.firstIndex(of: FeatureExtractor.gtubeString, in: xs))
        XCTAssertEqual(Search.firstIndex(of: FeatureExtractor.gtubeString, in: xs + FeatureExtractor.gtubeString + xs), 10_000)
        XCTAssertEqual(Search.firstIndex(of: Array("é".utf8), in: Array("caf\u{e9} é".utf8)), 3)
        XCTAssertTrue(Search.contains("an XXXXXXX-bodied GTUBE", "GTUBE"))
    }

    /// Capitals are counted per whitespace-separated word of 3+ letters, ASCII only.
    func testCountCapitals() {
        func counts(_ text: String) -> [Int] { let c = Words.countCapitals(text); return [c.words, c.capitals] }
        XCTAssertEqual(counts("FREE money NOW ok OK 1XXXX É\u{c9}\u{c9} A-B-C\n\tHELLO"), [9, 5])   // FREE NOW 1XXXX A-B-C HELLO
        XCTAssertEqual(counts(""), [0, 0])
        XCTAssertEqual(counts("   "), [0, 0])
    }
}
