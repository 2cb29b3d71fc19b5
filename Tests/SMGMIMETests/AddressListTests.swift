import XCTest
@testable import SMGMIME

final class AddressListTests: XCTestCase {
    func addresses(_ value: String) throws -> [String] {
        try AddressList.mailboxes(value).map(\.description)
    }

    func testWellFormedAndObsoleteForms() throws {
        let cases: [(String, [String])] = [
            ("joe@example.org", ["joe@example.org"]),
            ("Joe Q. Public <john.q.public@Example.COM>", ["john.q.public@example.com"]),
            ("\"Joe, the \\\"plumber\\\"\" <joe@example.org>", ["joe@example.org"]),
            ("Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>", ["mary@x.test", "jdoe@example.org", "one@y.test"]),
            ("A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;", ["c@a.test", "joe@where.test", "jdoe@one.test"]),
            ("Undisclosed recipients:;, a@b.test", ["a@b.test"]),
            ("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>", ["pete@silly.test"]),
            ("\"Giant; \\\"Big\\\" Box\" <sysservices@example.net>", ["sysservices@example.net"]),
            ("<@route.test,@other.test:user@final.test>", ["user@final.test"]),
            ("John . Doe <jd@x.test>", ["jd@x.test"]),                       // obs-phrase
            ("a@b.test, , c@d.test,", ["a@b.test", "c@d.test"]),              // obs-addr-list
            ("john . q @ example . org", ["john.q@example.org"]),              // CFWS around dots (obsolete)
            ("\"a@other.example\"@customer.example", ["a@other.example@customer.example"]),
            ("user@[192.0.2.1]", ["user@[192.0.2.1]"]),
            ("=?utf-8?q?J=C3=BCrgen?=\r\n\t<juergen@m\u{FC}nchen.test>", ["juergen@m\u{FC}nchen.test"]),
            ("x@y.test (comment (nested) still comment)", ["x@y.test"]),
        ]
        for (value, expected) in cases {
            XCTAssertEqual(try addresses(value), expected, value)
        }
        let named = try AddressList.mailboxes("=?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <j@x.test>")
        XCTAssertEqual(named.first?.displayName, "Jürgen Müller")
        XCTAssertEqual(try AddressList.parse("Team: a@x.test;"), [.group(name: "Team", members: [
            AddressList.Mailbox(displayName: nil, localPart: "a", domain: "x.test", isDomainLiteral: false)])])
    }

    /// What a hostile client puts into From to show one address and have the gateway check another:
    /// each either parses to every mailbox it really names, or is an error — never a guess.
    func testHostileFromFieldsNameEveryMailboxOrFail() throws {
        let named: [(String, [String])] = [
            ("<someone@other.example>, <me@customer.example>", ["someone@other.example", "me@customer.example"]),
            ("\"me@customer.example\" <x@other.example>", ["x@other.example"]),
            ("x@other.example (me@customer.example)", ["x@other.example"]),
            ("me@customer.example (<x@other.example>)", ["me@customer.example"]),
            ("<@customer.example:x@other.example>", ["x@other.example"]),
            ("Friends: x@other.example, me@customer.example;", ["x@other.example", "me@customer.example"]),
            ("=?utf-8?q?me=40customer.example?= <x@other.example>", ["x@other.example"]),
            ("\"me@customer.example\\\" <x@other.example>\" <real@other.example>", ["real@other.example"]),
        ]
        for (value, expected) in named {
            XCTAssertEqual(try addresses(value), expected, value)
        }
        let broken = [
            "me@customer.example <x@other.example>",      // an address, then another without a comma
            "<me@customer.example",                        // unterminated
            "me@customer.example>",
            "me@customer.example (<x@other.example>",     // unterminated comment hides the rest
            "\"me@customer.example <x@other.example>",    // unterminated quoted string
            "<>", "", "   ", "(only a comment)",
            "undisclosed",                                 // a word, no address
            "a@b.test; c@d.test",
            "G1: G2: a@b.test;;",                          // a group in a group
            "a..b@x.test", ".a@x.test", "a.@x.test", "a@x..test", "a@x.test.", "a@.x.test",
            "a@b@c.test", "a@", "@b.test",
            "<a@b.test> trailing",
            "a\u{0}b@x.test", "a@x\u{7}.test",
            "a@[1.2[3]", "a@x.test]", "a\\@x.test", "=@[]", "a@[ ]",   // empty domain literals
            "Group: a@b.test",                             // no ';'
            "<a@b.test>>",
        ]
        for value in broken {
            XCTAssertThrowsError(try AddressList.parse(value), value.debugDescription)
        }
    }

    func testErrorsSayWhereAndBoundsHold() {
        XCTAssertThrowsError(try AddressList.parse("me@customer.example <x@other.example>")) { error in
            XCTAssertEqual((error as? AddressList.ParseError)?.reason, "expected ',' between addresses at '<'")
        }
        XCTAssertThrowsError(try AddressList.parse(String(repeating: "(", count: 100) + "a@b.test"))
        XCTAssertThrowsError(try AddressList.parse(String(repeating: "a@b.test,", count: 1_001)))
        XCTAssertThrowsError(try AddressList.parse(String(repeating: "x", count: 70_000) + "@b.test"))
        XCTAssertNoThrow(try AddressList.parse(String(repeating: "a@b.test,", count: 999)))
    }

    /// Random bytes never trap, and whatever parses has a non-empty local part and domain.
    func testRandomInputNeverTraps() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("ab@.,;:<>()\"\\[] \t\r\n=?é".unicodeScalars)
        for _ in 0..<20_000 {
            let n = Int.random(in: 0..<24, using: &rng)
            var s = String.UnicodeScalarView()
            for _ in 0..<n { s.append(alphabet.randomElement(using: &rng)!) }
            if let boxes = try? AddressList.mailboxes(String(s)) {
                for m in boxes { XCTAssertFalse(m.localPart.isEmpty || m.domain.isEmpty, String(s)) }
            }
        }
    }
}
