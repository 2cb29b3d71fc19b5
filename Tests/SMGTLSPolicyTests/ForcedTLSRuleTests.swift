import XCTest
@testable import SMGTLSPolicy

final class ForcedTLSRuleTests: XCTestCase {
    func testValidationNamesTheArgument() {
        func problem(_ rule: ForcedTLSRule) -> String? {
            do { _ = try rule.validated(); return nil } catch { return error.argument }
        }
        XCTAssertEqual(problem(ForcedTLSRule(id: "", level: .encrypt, action: .reject)), "--sender/--recipient")
        XCTAssertEqual(problem(ForcedTLSRule(id: "", recipient: "bad domain", level: .encrypt, action: .reject)), "--recipient")
        XCTAssertEqual(problem(ForcedTLSRule(id: "", sender: "a..b", level: .encrypt, action: .reject)), "--sender")
        XCTAssertEqual(problem(ForcedTLSRule(id: "", recipient: "x.test", level: .fingerprint, action: .hold)), "--fingerprint")
        XCTAssertEqual(problem(ForcedTLSRule(id: "", recipient: "x.test", level: .fingerprint, fingerprints: ["abc"], action: .hold)),
                       "--fingerprint")
        XCTAssertEqual(problem(ForcedTLSRule(id: "", recipient: "x.test", level: .verify, fingerprints: [String(repeating: "a", count: 64)],
                                             action: .hold)), "--fingerprint")
        XCTAssertNil(problem(ForcedTLSRule(id: "", recipient: "*.X.test.", level: .encrypt, action: .hold)))
    }

    func testPatternsAndNormalisation() throws {
        let rule = try ForcedTLSRule(id: "r1", sender: "Shop.Example", recipient: "*.Bank.test", level: .fingerprint,
                                     fingerprints: [String(repeating: "AB:", count: 31) + "AB"], action: .reject).validated()
        XCTAssertEqual(rule.recipient, "*.bank.test")
        XCTAssertEqual(rule.fingerprints, [String(repeating: "ab", count: 32)])
        XCTAssertTrue(rule.applies(senderDomain: "shop.example", recipientDomain: "mail.bank.test", mxHost: "mx.other"))
        XCTAssertFalse(rule.applies(senderDomain: "shop.example", recipientDomain: "bank.test", mxHost: nil), "*. is subdomains only")
        XCTAssertFalse(rule.applies(senderDomain: "other.example", recipientDomain: "mail.bank.test", mxHost: nil))
        XCTAssertFalse(rule.applies(senderDomain: "shop.example", recipientDomain: "evilbank.test", mxHost: nil))
    }

    func testProviderRulesMatchTheMXHostOnly() {
        let m365 = ForcedTLSRule.providers.first { $0.id == "provider:microsoft365" }!
        XCTAssertTrue(m365.applies(senderDomain: "a.test", recipientDomain: "contoso.com",
                                   mxHost: "contoso-com.mail.protection.outlook.com"))
        XCTAssertFalse(m365.applies(senderDomain: "a.test", recipientDomain: "mail.protection.outlook.com", mxHost: "mx.other.test"))
        XCTAssertFalse(m365.applies(senderDomain: "a.test", recipientDomain: "x.test", mxHost: nil))
        XCTAssertTrue(ForcedTLSRule.providers.allSatisfy { $0.level == .verify && $0.action == .hold })
    }
}
