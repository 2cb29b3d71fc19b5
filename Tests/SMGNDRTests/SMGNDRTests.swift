import XCTest
import Foundation
import SMGCore
@testable import SMGNDR
import SMGMIME

final class DeliveryStatusNotificationTests: XCTestCase {
    let original = Array(("Received: from x\r\nFrom: Alice <alice@customer.example>\r\nTo: bob@dest.example\r\n"
        + "Subject: =?utf-8?q?Rechnung_M=C3=A4rz?=\r\nMessage-ID: <m1@customer.example>\r\n\r\nSECRET BODY\r\n").utf8)

    func dsn(sender: String = "alice@customer.example") -> DeliveryStatusNotification? {
        DeliveryStatusNotification(
            originalSender: sender, originalID: "01JD0000000000000000000000", originalMessage: original,
            arrivalDate: Date(timeIntervalSince1970: 1_795_000_000),
            recipients: [DSNRecipient(address: "bob@dest.example", status: "5.7.1",
                                      diagnostic: "554 5.7.1 Message rejected: virus X found in a.zip"),
                         DSNRecipient(address: "carol@dest.example", status: "5.1.1", diagnostic: "550 5.1.1 No such user",
                                      remoteMTA: "mx.dest.example")],
            reason: "a virus was found", domain: "gw.example", reportingMTA: "gw.example")
    }

    func testNullSenderGetsNoNDR() {
        XCTAssertNil(dsn(sender: ""))
        XCTAssertNil(dsn(sender: "<>"))
    }

    func testStructure() throws {
        let bytes = try XCTUnwrap(dsn()).render(messageID: "n1@gw.example", date: Date(timeIntervalSince1970: 1_795_000_100))
        let text = String(decoding: bytes, as: UTF8.self)
        XCTAssertFalse(text.contains("SECRET BODY"), "the original content must not be returned")
        let message = MIMEParser.parse(bytes)
        XCTAssertTrue(message.defects.isEmpty, "\(message.defects)")
        XCTAssertEqual(message.root.mimeType, "multipart/report")
        XCTAssertEqual(message.root.contentType.parameters["report-type"], "delivery-status")
        XCTAssertEqual(message.headers["from"], "Mail Delivery System <MAILER-DAEMON@gw.example>")
        XCTAssertEqual(message.root.children.map(\.mimeType), ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        let human = String(decoding: message.root.children[0].body, as: UTF8.self)
        XCTAssertTrue(human.contains("a virus was found"))
        XCTAssertTrue(human.contains("Rechnung März"))
        let status = String(decoding: message.root.children[1].body, as: UTF8.self)
        XCTAssertTrue(status.hasPrefix("Reporting-MTA: dns; gw.example\r\n"))
        XCTAssertTrue(status.contains("Arrival-Date: "))
        XCTAssertTrue(status.contains("\r\n\r\nFinal-Recipient: rfc822; bob@dest.example\r\nAction: failed\r\nStatus: 5.7.1\r\n"
            + "Diagnostic-Code: smtp; 554 5.7.1"))
        XCTAssertTrue(status.contains("Final-Recipient: rfc822; carol@dest.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            + "Remote-MTA: dns; mx.dest.example\r\n"))
        let headers = String(decoding: message.root.children[2].body, as: UTF8.self)
        XCTAssertTrue(headers.contains("Message-ID: <m1@customer.example>"))
    }

    func testDeliveryStatusPartStaysSevenBit() throws {
        let report = try XCTUnwrap(DeliveryStatusNotification(
            originalSender: "a@x.example", originalID: "01JD0000000000000000000000", originalMessage: original,
            arrivalDate: Date(), recipients: [DSNRecipient(address: "b@y.example", status: "5.7.1",
                                                           diagnostic: "554 5.7.1 virus in Über.zip\r\nInjected: yes")],
            reason: "r", domain: "gw.example", reportingMTA: "gw.example"))
        let status = MIMEParser.parse(report.render(messageID: "n@gw.example")).root.children[1].body
        XCTAssertTrue(status.allSatisfy { $0 < 0x80 })
        let text = String(decoding: status, as: UTF8.self)
        XCTAssertTrue(text.contains("Diagnostic-Code: smtp; 554 5.7.1 virus in ?ber.zip  Injected: yes\r\n"), text)
    }

    func testDerivedIDsAreValidStableAndDistinct() throws {
        let original = MessageID.make()
        let a = NDRSender.ndrID(for: original, kind: "virus")
        XCTAssertEqual(a, NDRSender.ndrID(for: original, kind: "virus"))
        XCTAssertNotEqual(a, original)
        XCTAssertNotEqual(a, NDRSender.ndrID(for: original, kind: "bounce"))
        XCTAssertEqual(a.timestampMilliseconds, original.timestampMilliseconds)
        XCTAssertNotNil(MessageID(a.rawValue))
    }

    func testRFC5322Date() {
        XCTAssertEqual(Timestamp.rfc5322(Date(timeIntervalSince1970: 0)), "Thu, 1 Jan 1970 00:00:00 +0000")
    }
}
