import XCTest
@testable import SMGTLSPolicy

/// RFC 8461 §3: the TXT record and the policy grammar, and §4.1 MX matching.
final class MTASTSPolicyTests: XCTestCase {
    func testParsesTheRFCExample() throws {
        let policy = try MTASTSPolicy.parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n")
        XCTAssertEqual(policy.mode, .enforce)
        XCTAssertEqual(policy.mx, ["mail.example.com", "*.example.net", "backupmx.example.com"])
        XCTAssertEqual(policy.maxAge, 604800)
    }

    func testLFLineEndsUnknownKeysAndFirstValueWins() throws {
        let policy = try MTASTSPolicy.parse("version: STSv1\nmode: testing\nmode: enforce\nfoo: bar\nmx: MX.Example.COM\nmax_age: 86400")
        XCTAssertEqual(policy.mode, .testing)
        XCTAssertEqual(policy.mx, ["mx.example.com"])
    }

    func testInvalidPoliciesAreRefusedWithAReason() {
        let cases = [
            "mode: enforce\nmx: a.example\nmax_age: 1",                         // no version
            "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1",          // wrong version
            "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1",           // unknown mode
            "version: STSv1\nmode: enforce\nmx: a.example",                      // no max_age
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901", // 11 digits
            "version: STSv1\nmode: enforce\nmax_age: 100",                       // no mx
            "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 100",      // wildcard not leftmost
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: +100",      // digits only
            "<html>not a policy</html>",
        ]
        for text in cases {
            XCTAssertThrowsError(try MTASTSPolicy.parse(text), text)
        }
        XCTAssertNoThrow(try MTASTSPolicy.parse("version: STSv1\nmode: none\nmax_age: 100"))
    }

    func testMaxAgeIsCappedAtAboutAYear() throws {
        XCTAssertEqual(try MTASTSPolicy.parse("version: STSv1\nmode: testing\nmx: a.example\nmax_age: 9999999999").maxAge,
                       MTASTSPolicy.maximumAge)
    }

    func testWildcardCoversExactlyOneLeftmostLabel() throws {
        let policy = try MTASTSPolicy.parse("version: STSv1\nmode: enforce\nmx: *.example.net\nmx: mail.example.com\nmax_age: 1")
        XCTAssertTrue(policy.matches("mx1.example.net"))
        XCTAssertTrue(policy.matches("MX1.EXAMPLE.NET."))
        XCTAssertFalse(policy.matches("a.b.example.net"))
        XCTAssertFalse(policy.matches("example.net"))
        XCTAssertTrue(policy.matches("mail.example.com"))
        XCTAssertFalse(policy.matches("mail.example.com.evil.test"))
        XCTAssertFalse(policy.matches("xmail.example.com"))
    }

    func testTXTRecord() {
        XCTAssertEqual(MTASTSRecord.parse(["v=STSv1; id=20160831085700Z;"])?.id, "20160831085700Z")
        XCTAssertEqual(MTASTSRecord.parse(["v=spf1 -all", "v=STSv1; id=abc"])?.id, "abc")
        XCTAssertNil(MTASTSRecord.parse(["v=STSv1; id=a", "v=STSv1; id=b"]), "two records: no policy")
        XCTAssertNil(MTASTSRecord.parse(["v=STSv1; id=not-alnum"]))
        XCTAssertNil(MTASTSRecord.parse(["v=STSv1;"]))
        XCTAssertNil(MTASTSRecord.parse(["v=STSv10; id=abc"]), "another version")
        XCTAssertNil(MTASTSRecord.parse(["id=abc; v=STSv1"]), "v= must come first")
        XCTAssertNil(MTASTSRecord.parse(["v=STSv1; id=" + String(repeating: "a", count: 33)]))
    }
}
