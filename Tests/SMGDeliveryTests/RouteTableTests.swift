import XCTest
@testable import SMGDelivery
import SMGNDR

final class RouteTableTests: XCTestCase {
    func testLookupOrderExactThenParentsThenDefault() throws {
        let table = try RouteTable([
            "example.com": "mx.example.com:2525",
            ".example.com": "[192.0.2.1]",
            ".org": "[2001:db8::1]:587",
            "*": "127.0.0.1:2526",
        ])
        XCTAssertEqual(table.lookup(domain: "EXAMPLE.com")?.description, "mx.example.com:2525")
        XCTAssertEqual(table.lookup(domain: "a.b.example.com")?.description, "192.0.2.1:25")
        XCTAssertEqual(table.lookup(domain: "lists.example.org")?.description, "[2001:db8::1]:587")
        XCTAssertEqual(table.lookup(domain: "elsewhere.net")?.description, "127.0.0.1:2526")
        XCTAssertNil(try RouteTable(["example.com": "h:25"]).lookup(domain: "other.example"))
    }

    func testBadRoutesAreErrors() {
        for bad in [["": "h:25"], ["a": "h:0"], ["a": "h:x"], ["a": "[h"], ["a": "[h]x"], ["a": ""], ["a": "h h:25"]] {
            XCTAssertThrowsError(try RouteTable(bad), "\(bad)")
        }
    }
}

final class EnhancedStatusTests: XCTestCase {
    func testEnhancedStatusOfReplies() {
        let cases: [(String?, String)] = [
            ("550 5.1.1 No such user", "5.1.1"), ("451 4.3.0 Try again later", "4.3.0"),
            ("554 Rejected", "5.0.0"), (nil, "5.0.0"), ("550 5.x.1 odd", "5.0.0"), ("", "5.0.0"),
        ]
        for (reply, status) in cases { XCTAssertEqual(NDRSender.enhancedStatus(of: reply), status, reply ?? "nil") }
    }
}
