import XCTest
import Foundation
@testable import SMGCore

final class MessageIDTests: XCTestCase {
    func testIdsAreUniqueAndSortInCreationOrder() {
        var ids: [MessageID] = []
        for _ in 0..<10_000 { ids.append(MessageID.make()) }
        XCTAssertEqual(Set(ids).count, ids.count)
        XCTAssertEqual(ids.sorted(), ids, "ids made one after another must sort in that order")
    }

    func testTimestampRoundTripsAndSameMillisecondStaysMonotonic() {
        var generator = MessageID.ULIDGenerator()
        let a = generator.next(milliseconds: 1_790_000_000_123)
        let b = generator.next(milliseconds: 1_790_000_000_123)
        let stepBack = generator.next(milliseconds: 1_790_000_000_000)
        XCTAssertEqual(a.timestampMilliseconds, 1_790_000_000_123)
        XCTAssertLessThan(a, b)
        XCTAssertLessThan(b, stepBack, "a clock stepping back does not break the order")
        XCTAssertEqual(stepBack.timestampMilliseconds, 1_790_000_000_123)
        XCTAssertEqual(a.rawValue.count, 26)
        XCTAssertEqual(MessageID(a.rawValue), a)
    }

    func testParsingRejectsNonULIDs() {
        XCTAssertNil(MessageID("hello"))
        XCTAssertNil(MessageID("01ARZ3NDEKTSV4RRFFQ69G5FAVX"))      // 27 chars
        XCTAssertNil(MessageID("01ARZ3NDEKTSV4RRFFQ69G5FAU"))       // U is not in the alphabet
        XCTAssertNil(MessageID("81ARZ3NDEKTSV4RRFFQ69G5FAV"))       // overflows 48-bit time
        XCTAssertEqual(MessageID("01arz3ndektsv4rrffq69g5fav")?.rawValue, "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    }
}

final class EventTests: XCTestCase {
    func testEventJSONRoundTripAndStableForm() throws {
        let id = MessageID("01ARZ3NDEKTSV4RRFFQ69G5FAV")!
        let event = Event(type: "delivered", id: id, site: "eu-de-02", process: "smg-egress-good@h:1",
                          time: Date(timeIntervalSince1970: 1_790_000_000.5),
                          facts: ["recipient": "a@example.org", "attempts": 2, "tls": true,
                                  "chain": ["x", 1], "nested": ["k": .null]])
        let json = event.jsonString()
        XCTAssertEqual(json, #"{"facts":{"attempts":2,"chain":["x",1],"nested":{"k":null},"recipient":"a@example.org","tls":true},"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","process":"smg-egress-good@h:1","site":"eu-de-02","time":"2026-09-21T14:13:20.500Z","type":"delivered"}"#)
        XCTAssertEqual(try Event.decode(Array(json.utf8)), event)
        XCTAssertEqual(event.tapTopic, "events.delivered")
    }

    /// The hand-written writer gives the bytes Foundation's encoder (the documented form) gives,
    /// for random facts: nested values, every control character, quotes, backslashes, slashes,
    /// non-ASCII, keys whose order depends on case, digits and punctuation, doubles of all sizes.
    func testHandWrittenJSONIsFoundationsByteForByte() throws {
        var rng = SystemRandomNumberGenerator()
        let pieces = ["a", "Z", "_", "9", "10", "/", "\"", "\\", "\n", "\u{1}", "\u{1f}", "\u{7f}", "ä", "😀", "\u{2028}", " "]
        func text(_ n: Int = 6) -> String { (0..<Int.random(in: 0...n, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined() }
        func value(_ depth: Int) -> JSONValue {
            switch Int.random(in: 0..<(depth > 2 ? 5 : 7), using: &rng) {
            case 0: return .string(text())
            case 1: return .int(Int.random(in: Int.min...Int.max, using: &rng) >> Int.random(in: 0...63, using: &rng))
            case 2: return .double([0.1, 2.0, -0.0, 1e-7, 1e21, 123456789.125, 1e16, 3.141592653589793, -2.5e-300]
                                    .randomElement(using: &rng)! * Double(Int.random(in: 1...3, using: &rng)))
            case 3: return .bool(Bool.random(using: &rng))
            case 4: return .null
            case 5: return .array((0..<Int.random(in: 0...3, using: &rng)).map { _ in value(depth + 1) })
            default: return .object(Dictionary((0..<Int.random(in: 0...4, using: &rng)).map { _ in (text(3), value(depth + 1)) },
                                               uniquingKeysWith: { a, _ in a }))
            }
        }
        for n in 0..<2000 {
            let facts = Dictionary((0..<Int.random(in: 0...6, using: &rng)).map { _ in (text(4), value(0)) },
                                   uniquingKeysWith: { a, _ in a })
            let event = Event(type: text(), id: n % 3 == 0 ? nil : MessageID.make(), site: text(), process: text(),
                              time: Date(timeIntervalSince1970: Double(Int.random(in: 0...4_000_000_000_000, using: &rng)) / 1000),
                              facts: facts)
            let foundation = try Event.encoder.encode(event)
            XCTAssertEqual(String(decoding: event.jsonBytes(), as: UTF8.self), String(decoding: foundation, as: UTF8.self))
        }
    }

    func testEventWithoutMessageId() throws {
        let event = Event(type: "blacklist.listed", id: nil, site: "eu-de-01", process: "p", facts: [:])
        let back = try Event.decode(event.jsonBytes())
        XCTAssertNil(back.id)
        XCTAssertFalse(event.jsonString().contains("\"id\""))
    }

    func testEnvelopeRoundTrip() throws {
        let facts = SubmissionFacts(clientAddress: "192.0.2.7", heloName: "app1", tls: true, authenticatedAs: "shop",
                                    site: "eu-de-01", ingress: "smg-ingress@h:1",
                                    receivedAt: Date(timeIntervalSince1970: 1_790_000_000), size: 10)
        let env = Envelope(customer: "c1", sender: "", recipients: [Recipient(address: "X@Example.ORG")],
                           submission: facts)
        XCTAssertEqual(try Envelope.decode(env.jsonBytes()), env)
        XCTAssertEqual(env.recipients[0].domain, "example.org")
    }
}

final class TimestampTests: XCTestCase {
    /// The hand-written RFC 3339 reader agrees with Foundation's on what we write and on the
    /// forms RFC 3339 allows, and refuses what is not a date-time.
    func testParseAgreesWithFoundationAndFormatRoundTrips() {
        let foundation = ISO8601DateFormatter()
        foundation.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            // 1970 … 2400, on a millisecond.
            let ms = Int64.random(in: 0..<13_569_465_600_000, using: &rng)
            let date = Date(timeIntervalSince1970: Double(ms) / 1000)
            let text = Timestamp.format(date)
            XCTAssertEqual(text, foundation.string(from: date), "format")
            XCTAssertEqual(Timestamp.parse(text).map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }, ms, text)
        }
        for text in ["2026-11-23T05:00:00Z", "2026-11-23T05:00:00.5+01:30", "2026-11-23t05:00:00.123456z",
                     "2024-02-29T23:59:59-08:00", "2000-01-01T00:00:00.000Z", "1999-12-31T23:59:59.999-00:00"] {
            let ours = Timestamp.parse(text)
            let theirs = foundation.date(from: text) ?? {
                let plain = ISO8601DateFormatter()
                return plain.date(from: text)
            }()
            XCTAssertNotNil(ours, text)
            if let ours, let theirs {
                XCTAssertEqual(ours.timeIntervalSince1970, theirs.timeIntervalSince1970, accuracy: 0.001, text)
            }
        }
        for bad in ["", "2026-11-23", "2026-11-23T05:00:00", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
                    "2023-02-29T00:00:00Z", "2026-11-23T24:00:00Z", "2026-11-23T05:00:00.Z", "2026-11-23T05:00:00Zx",
                    "2026-11-23T05:00:00+0100", "2026-11-23 05:00:00Z", "２026-11-23T05:00:00Z", "2026-11-23T05:60:00Z"] {
            XCTAssertNil(Timestamp.parse(bad), bad)
        }
    }
}

final class HexTests: XCTestCase {
    func testLowerHexIsWhatFoundationFormats() {
        XCTAssertEqual(Hex.lower([]), "")
        XCTAssertEqual(Hex.lower([0x00, 0x0f, 0xa0, 0xff]), "000fa0ff")
        let all = (0...255).map { UInt8($0) }
        XCTAssertEqual(Hex.lower(all), all.map { String(format: "%02x", $0) }.joined())
    }
}

final class CIDRTests: XCTestCase {
    func testTable() throws {
        let cases: [(String, String, Bool)] = [
            ("127.0.0.0/8", "127.0.0.1", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("192.0.2.0/25", "192.0.2.127", true),
            ("192.0.2.0/25", "192.0.2.128", false),
            ("192.0.2.9", "192.0.2.9", true),
            ("192.0.2.9", "192.0.2.10", false),
            ("::1/128", "::1", true),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.0.0.0/8", "2001:db8::1", false),
            ("0.0.0.0/0", "203.0.113.5", true),
            ("10.0.0.0/8", "not an ip", false),
        ]
        for (network, ip, expected) in cases {
            XCTAssertEqual(try CIDR(network).contains(ip), expected, "\(network) ∋ \(ip)")
        }
    }

    func testBadNetworksAreErrors() {
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "example.com/8", "10.0.0.0/-1"] {
            XCTAssertThrowsError(try CIDR(bad), bad)
        }
        XCTAssertThrowsError(try NetworkList(parsing: "127.0.0.0/8, nonsense"))
        XCTAssertEqual(try NetworkList(parsing: "127.0.0.0/8, ::1").networks.count, 2)
    }
}

final class HeaderHygieneTests: XCTestCase {
    func testRemovesNamedFieldsWithTheirFoldedLinesAndNeverTouchesTheBody() {
        let message = "Received: from a\r\n\tby b (10.0.0.1)\r\nX-Originating-IP: [10.0.0.1]\r\nSubject: keep\r\n"
            + "x-originating-ip : [10.0.0.2]\r\nFrom: a@b.example\r\n\r\nReceived: in the body stays\r\nX-Originating-IP: too\r\n"
        let out = String(decoding: HeaderHygiene.strip(Array(message.utf8), removing: ["received", "x-originating-ip"]),
                         as: UTF8.self)
        XCTAssertEqual(out, "Subject: keep\r\nFrom: a@b.example\r\n\r\nReceived: in the body stays\r\nX-Originating-IP: too\r\n")
        XCTAssertEqual(HeaderHygiene.strip(Array(message.utf8), removing: []), Array(message.utf8))
        XCTAssertEqual(String(decoding: HeaderHygiene.strip(Array("Received: x\r\n".utf8), removing: ["received"]), as: UTF8.self), "")
    }

    func testKeepSeesTheWholeFoldedFieldAndCountStopsAtTheBody() {
        let message = "Received: from app (10.0.0.1)\r\n\tby gw (smg-ingress) with ESMTPA id 1;\r\n\tMon, 3 Jun 2024\r\n"
            + "Received: from inner (10.0.0.9) by app\r\nRECEIVED : by x\r\nSubject: s\r\n\r\nReceived: body\r\n"
        let bytes = Array(message.utf8)
        XCTAssertEqual(HeaderHygiene.count("received", in: bytes), 3)
        XCTAssertEqual(HeaderHygiene.count("received", in: Array("Subject: s\r\n\r\n".utf8)), 0)
        let kept = HeaderHygiene.strip(bytes, removing: ["received"]) { field in
            String(decoding: field, as: UTF8.self).contains("(smg-ingress)")
        }
        XCTAssertEqual(String(decoding: kept, as: UTF8.self),
                       "Received: from app (10.0.0.1)\r\n\tby gw (smg-ingress) with ESMTPA id 1;\r\n\tMon, 3 Jun 2024\r\n"
                       + "Subject: s\r\n\r\nReceived: body\r\n")
        // No blank line: all header; a message without a line end at the end keeps its last octets.
        XCTAssertEqual(String(decoding: HeaderHygiene.strip(Array("A: 1\r\nReceived: x".utf8), removing: ["received"]), as: UTF8.self), "A: 1\r\n")
        XCTAssertEqual(String(decoding: HeaderHygiene.strip(Array("A: 1\r\nB: 2".utf8), removing: ["received"]), as: UTF8.self), "A: 1\r\nB: 2")
    }
}

final class RecipientStateTests: XCTestCase {
    func testRecipientStateRoundTripsWithItsRetryTime() {
        let next = Date(timeIntervalSince1970: 1_790_000_123)
        let r = Recipient(address: "a@b.example", state: .deferred, attempts: 2, lastReply: "451 4.3.0 later", nextAttempt: next)
        let back = Recipient.decode(json: r.jsonString())
        XCTAssertEqual(back, r)
        XCTAssertEqual(back?.nextAttempt, next, "a retry time must not move (it did when writer and reader disagreed)")
        XCTAssertNil(Recipient.decode(json: "{not json"))
    }
}

final class JSONReaderTests: XCTestCase {
    /// The hand-written envelope reader gives what `JSONDecoder` gives, on envelopes with every
    /// optional member present and absent and strings that need escapes (quotes, control
    /// characters, non-ASCII, characters outside the BMP).
    func testEnvelopeDecodeAgreesWithJSONDecoder() throws {
        var rng = SystemRandomNumberGenerator()
        let pieces = ["a", "\"", "\\", "\n", "\t", "\u{01}", "é", "€", "𝄞", "/", " ", "x@y.example"]
        func text() -> String { (0..<Int.random(in: 0...6, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined() }
        func maybe<T>(_ v: @autoclosure () -> T) -> T? { Bool.random(using: &rng) ? v() : nil }
        for _ in 0..<300 {
            let recipients = (0..<Int.random(in: 0...3, using: &rng)).map { _ in
                var r = Recipient(address: text(), state: [.pending, .delivered, .deferred, .bounced].randomElement(using: &rng)!,
                                  attempts: Int.random(in: 0...50, using: &rng), lastReply: maybe(text()),
                                  nextAttempt: maybe(Date(timeIntervalSince1970: Double(Int.random(in: 0...4_000_000_000_000, using: &rng)) / 1000)),
                                  remoteMTA: maybe(text()), notify: maybe(["SUCCESS", "DELAY"]), originalRecipient: maybe(text()))
                r.delayNotified = maybe(Bool.random(using: &rng))
                return r
            }
            let env = Envelope(customer: maybe(text()), sender: text(), recipients: recipients,
                               submission: SubmissionFacts(clientAddress: text(), heloName: maybe(text()), tls: Bool.random(using: &rng),
                                                           tlsVersion: maybe(text()), cipher: maybe(text()), authenticatedAs: maybe(text()),
                                                           site: text(), ingress: text(),
                                                           receivedAt: Date(timeIntervalSince1970: Double(Int.random(in: 0...4_000_000_000_000, using: &rng)) / 1000),
                                                           size: Int.random(in: 0...100_000_000, using: &rng)),
                               dsnReturn: maybe("FULL"), envelopeID: maybe(text()))
            let bytes = env.jsonBytes()
            let foundation = try Event.decoder.decode(Envelope.self, from: Data(bytes))
            XCTAssertEqual(try Envelope.decode(bytes), foundation)
            for r in env.recipients {
                XCTAssertEqual(Recipient.decode(json: r.jsonString()), try Event.decoder.decode(Recipient.self, from: Data(r.jsonString().utf8)))
            }
        }
    }

    /// Written by other hands (spaces, escapes we never write, members we do not know, null for an
    /// absent optional): still read as `JSONDecoder` reads it.
    func testEnvelopeFromOtherWriters() throws {
        let json = """
        { "sender" : "a\\u0040b.example", "customer": null, "unknown": [1, 2.5e3, {"x": true}],
          "recipients": [ {"address": "r@x.example", "state": "deferred", "attempts": 2, "lastReply": "451 \\ud834\\udd1e \\/ok",
                           "nextAttempt": "2026-12-07T01:02:03.5+01:00"} ],
          "submission": {"clientAddress": "192.0.2.1", "tls": false, "site": "s", "ingress": "i",
                         "receivedAt": "2026-12-07T01:02:03Z", "size": 10, "heloName": null} }
        """
        let mine = try Envelope.decode(Array(json.utf8))
        XCTAssertEqual(mine, try Event.decoder.decode(Envelope.self, from: Data(json.utf8)))
        XCTAssertEqual(mine.sender, "a@b.example")
        XCTAssertEqual(mine.recipients[0].lastReply, "451 𝄞 /ok")
        XCTAssertEqual(mine.recipients[0].nextAttempt, Date(timeIntervalSince1970: 1_796_601_723.5))
    }

    /// What `JSONDecoder` refuses is refused, with an error that says where.
    func testBadEnvelopesAreRefused() {
        let good = #"{"sender":"","recipients":[],"submission":{"clientAddress":"","tls":true,"site":"s","ingress":"i","receivedAt":"2026-12-07T01:02:03Z","size":1}}"#
        XCTAssertNoThrow(try Envelope.decode(Array(good.utf8)))
        let bad = [
            "", "{", "[]", "null", good + "x", String(good.dropLast()),
            good.replacingOccurrences(of: #""sender":"","#, with: ""),                       // required member missing
            good.replacingOccurrences(of: #""tls":true"#, with: #""tls":"yes""#),            // wrong type
            good.replacingOccurrences(of: #""size":1"#, with: #""size":1.5"#),               // not an integer
            good.replacingOccurrences(of: "2026-12-07T01:02:03Z", with: "yesterday"),        // not a time
            good.replacingOccurrences(of: #""sender":"""#, with: #""sender":"\ud834""#),     // lone surrogate
            good.replacingOccurrences(of: #""sender":"""#, with: "\"sender\":\"a\u{01}\""),  // raw control character
            good.replacingOccurrences(of: #""sender":"""#, with: #""sender":"\q""#),         // unknown escape
            good.replacingOccurrences(of: #""size":1"#, with: #""size":01"#),                // leading zero
            good.replacingOccurrences(of: #""recipients":[]"#, with: #""recipients":[{"address":"a","state":"lost","attempts":0}]"#),
        ]
        for text in bad {
            XCTAssertThrowsError(try Envelope.decode(Array(text.utf8)), text)
            XCTAssertThrowsError(try Event.decoder.decode(Envelope.self, from: Data(text.utf8)), "JSONDecoder accepts \(text)")
        }
        XCTAssertThrowsError(try Envelope.decode(Array(#"{"sender":"\u00"#.utf8)))
        XCTAssertThrowsError(try Envelope.decode([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D]))    // invalid UTF-8
        // Deep nesting is refused, not recursed into.
        XCTAssertThrowsError(try JSONReader.parse(Array((String(repeating: "[", count: 100_000)).utf8)))
        do {
            _ = try Envelope.decode(Array(good.replacingOccurrences(of: #""tls":true"#, with: #""tls":1"#).utf8))
            XCTFail("accepted tls: 1")
        } catch {
            XCTAssertTrue("\(error)".contains("envelope.submission.tls"), "\(error)")
        }
    }

    func testNumbersAndLiterals() throws {
        XCTAssertEqual(try JSONReader.parse(Array("[0, -7, 9223372036854775807, 1e2, -0.5, true, false, null, \"\"]".utf8)),
                       .array([.int(0), .int(-7), .int(Int.max), .double(100), .double(-0.5), .bool(true), .bool(false), .null, .string("")]))
        XCTAssertEqual(try JSONReader.parse(Array("99999999999999999999".utf8)), .double(1e20))
        for text in ["-", "1.", ".5", "1e", "tru", "nul", "+1", "[1,]", "{\"a\":1,}", "{1:2}"] {
            XCTAssertThrowsError(try JSONReader.parse(Array(text.utf8)), text)
        }
    }
}
