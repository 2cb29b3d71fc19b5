import XCTest
import Foundation
import SMGCore
@testable import SMGStore
@testable import SMGNDR
import SMGMIME

/// What the sender asked for with RFC 3461 (NOTIFY, RET, ENVID, ORCPT) decides which reports
/// are written and what they contain.
final class DSNRequestTests: XCTestCase {
    let sender = NDRSender(domain: "gw.example", site: "s1", instance: "t1")
    let body = Array("From: a@c.example\r\nTo: x@d.example\r\nSubject: hi\r\n\r\nTHE BODY\r\n".utf8)

    func message(_ recipients: [Recipient], ret: String? = nil, envid: String? = nil) -> StoredMessage {
        let facts = SubmissionFacts(clientAddress: "192.0.2.1", heloName: nil, tls: true, authenticatedAs: "a", site: "s1",
                                    ingress: "i1", receivedAt: Date(timeIntervalSince1970: 1_795_000_000), size: body.count)
        return StoredMessage(id: MessageID.make(), envelope: Envelope(customer: "c", sender: "a@c.example", recipients: recipients,
                                                                      submission: facts, dsnReturn: ret, envelopeID: envid),
                             body: body, fields: [:])
    }

    func failed(_ address: String) -> DSNRecipient {
        DSNRecipient(address: address, status: "5.1.1", diagnostic: "550 5.1.1 no such user")
    }

    func testNotifyDecidesWhoIsReported() throws {
        let m = message([Recipient(address: "never@d.example", notify: ["NEVER"]),
                         Recipient(address: "success@d.example", notify: ["SUCCESS"]),
                         Recipient(address: "default@d.example"),
                         Recipient(address: "failure@d.example", notify: ["FAILURE"])])
        let all = ["never@d.example", "success@d.example", "default@d.example", "failure@d.example"].map(failed)
        let (report, sent) = try XCTUnwrap(sender.make(for: m, recipients: all, reason: "r", kind: "bounce"))
        XCTAssertEqual(sent.facts["recipients"], .array(["default@d.example", "failure@d.example"]))
        let text = String(decoding: report.body, as: UTF8.self)
        XCTAssertFalse(text.contains("never@d.example"))
        XCTAssertNil(sender.make(for: m, recipients: [failed("never@d.example"), failed("success@d.example")], reason: "r", kind: "bounce"),
                     "nobody wants a failure report: none is written")
        XCTAssertNil(sender.make(for: m, recipients: [failed("default@d.example")], reason: "r", kind: "success", notice: .success),
                     "no success notice without NOTIFY=SUCCESS")
        XCTAssertNil(sender.make(for: m, recipients: [failed("failure@d.example")], reason: "r", kind: "delay", notice: .delay))
        XCTAssertNotNil(sender.make(for: m, recipients: [failed("default@d.example")], reason: "r", kind: "delay", notice: .delay))
    }

    func testEnvelopeIDOriginalRecipientAndFullReturn() throws {
        let m = message([Recipient(address: "x@d.example", notify: ["FAILURE"], originalRecipient: "rfc822;X@old.example")],
                        ret: "FULL", envid: "QX-17")
        let (report, _) = try XCTUnwrap(sender.make(for: m, recipients: [failed("x@d.example")], reason: "r", kind: "bounce"))
        let parsed = MIMEParser.parse(report.body)
        XCTAssertEqual(parsed.root.children.map(\.mimeType), ["text/plain", "message/delivery-status", "message/rfc822"])
        let status = String(decoding: parsed.root.children[1].body, as: UTF8.self)
        XCTAssertTrue(status.hasPrefix("Original-Envelope-Id: QX-17\r\n"), status)
        XCTAssertTrue(status.contains("Original-Recipient: rfc822; X@old.example\r\nFinal-Recipient: rfc822; x@d.example\r\n"), status)
        XCTAssertTrue(String(decoding: report.body, as: UTF8.self).components(separatedBy: "message/rfc822")[1].contains("THE BODY"))
        // Infected mail is never returned, whatever RET says; without ENVID there is no Original-Envelope-Id.
        let (virus, _) = try XCTUnwrap(sender.make(for: m, recipients: [failed("x@d.example")], reason: "r", kind: NDRSender.virusKind))
        XCTAssertFalse(String(decoding: virus.body, as: UTF8.self).contains("THE BODY"))
        let plain = message([Recipient(address: "x@d.example")])
        let (headers, _) = try XCTUnwrap(sender.make(for: plain, recipients: [failed("x@d.example")], reason: "r", kind: "bounce"))
        let text = String(decoding: headers.body, as: UTF8.self)
        XCTAssertFalse(text.contains("Original-Envelope-Id"))
        XCTAssertFalse(text.contains("THE BODY"))
    }

    func testNoticesOfOneKindForOneMessageGetDistinctIDs() throws {
        let m = message([Recipient(address: "a@d.example", notify: ["SUCCESS"]), Recipient(address: "b@d.example", notify: ["SUCCESS"])])
        let relayed = { (a: String) in DSNRecipient(address: a, action: "relayed", status: "2.0.0") }
        let (first, _) = try XCTUnwrap(sender.make(for: m, recipients: [relayed("a@d.example")], reason: "r", kind: "success",
                                                   notice: .success, key: "a"))
        let (second, _) = try XCTUnwrap(sender.make(for: m, recipients: [relayed("b@d.example")], reason: "r", kind: "success",
                                                    notice: .success, key: "b"))
        XCTAssertNotEqual(first.id, second.id)
        XCTAssertTrue(String(decoding: first.body, as: UTF8.self).contains("Subject: Successful Mail Delivery Report"))
    }
}
