import XCTest
import Foundation
import SMGCore
@testable import SMGTLSPolicy

/// RFC 8460: the TXT record, the report JSON and its gzip.
final class TLSRPTTests: XCTestCase {
    func testMailtoAddressesOfTheTXTRecord() {
        XCTAssertEqual(TLSRPT.mailtoAddresses(["v=TLSRPTv1; rua=mailto:reports@example.com,https://reporting.example.com/v1"]),
                       ["reports@example.com"])
        XCTAssertEqual(TLSRPT.mailtoAddresses(["v=TLSRPTv1;rua=mailto:a%40b@example.com, mailto:c@example.com?subject=x"]),
                       ["a@b@example.com", "c@example.com"])
        XCTAssertNil(TLSRPT.mailtoAddresses(["v=spf1 -all"]))
        XCTAssertNil(TLSRPT.mailtoAddresses(["v=TLSRPTv10; rua=mailto:a@b"]))
        XCTAssertNil(TLSRPT.mailtoAddresses(["v=TLSRPTv1; rua=mailto:a@b", "v=TLSRPTv1; rua=mailto:c@d"]))
        XCTAssertEqual(TLSRPT.mailtoAddresses(["v=TLSRPTv1; rua=https://only.example/"]), [])
    }

    func testReportFromCounters() throws {
        let policy = #"{"mx":["*.example.com"],"strings":["version: STSv1","mode: testing"],"type":"sts"}"#
        let counters = ["policy": policy, "ok": "7", "fail|certificate-expired|mx1.example.com|192.0.2.1|198.51.100.2": "2",
                        "fail|starttls-not-supported|mx2.example.com|192.0.2.2|": "1"]
        let report = try XCTUnwrap(TLSRPT.build(domain: "example.com", day: "2026-12-05", counters: counters,
                                                organization: "Org", contact: "postmaster@gw.test", submitter: "gw.test"))
        guard case .object(let o) = report, case .array(let policies)? = o["policies"], case .object(let p)? = policies.first,
              case .object(let summary)? = p["summary"], case .array(let details)? = p["failure-details"],
              case .object(let pol)? = p["policy"]
        else { return XCTFail("shape: \(report)") }
        XCTAssertEqual(o["organization-name"], "Org")
        XCTAssertEqual(o["date-range"], ["start-datetime": "2026-12-05T00:00:00Z", "end-datetime": "2026-12-05T23:59:59Z"])
        XCTAssertEqual(summary["total-successful-session-count"], 7)
        XCTAssertEqual(summary["total-failure-session-count"], 3)
        XCTAssertEqual(pol["policy-type"], "sts")
        XCTAssertEqual(pol["mx-host"], ["*.example.com"])
        XCTAssertEqual(details.count, 2)
        XCTAssertEqual(details.first, ["result-type": "certificate-expired", "failed-session-count": 2,
                                       "receiving-mx-hostname": "mx1.example.com", "receiving-ip": "192.0.2.1",
                                       "sending-mta-ip": "198.51.100.2"])
        XCTAssertNil(TLSRPT.build(domain: "x.test", day: "2026-12-05", counters: ["policy": policy], organization: "O",
                                  contact: "c", submitter: "s"), "no sessions, no report")
    }

    func testMailCarriesTheGzippedJSONThatGunzipReads() throws {
        let report: JSONValue = ["report-id": "x", "policies": []]
        let mail = String(decoding: TLSRPT.mail(report: report, domain: "example.com", day: "2026-12-05", submitter: "gw.test",
                                                from: "r <r@gw.test>", to: ["a@example.com"], now: Date()), as: UTF8.self)
        XCTAssertTrue(mail.contains("Content-Type: multipart/report; report-type=\"tlsrpt\""))
        XCTAssertTrue(mail.contains("TLS-Report-Domain: example.com\r\n"))
        XCTAssertTrue(mail.contains("filename=\"gw.test!example.com!1796428800!1796515199!20261205.json.gz\""))
        let gz = TLSRPT.gzip(Array(report.jsonText.utf8))
        XCTAssertEqual(Array(gz.prefix(2)), [0x1f, 0x8b])
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tlsrpt-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("r.json.gz")
        try Data(gz).write(to: file)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/gzip")
        p.arguments = ["-dc", file.path]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        XCTAssertEqual(String(decoding: data, as: UTF8.self), report.jsonText)
    }
}
