import XCTest
import Foundation
@testable import SMGDKIM

/// Fixed vectors: RFC 6376 §3.4.5 canonicalization, empty bodies, RFC 8463 Appendix A.
final class DKIMVectorTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../Fixtures/dkim").standardized

    static func fixture(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: fixtures.appendingPathComponent(name)))
    }

    func testRFC6376Section345Examples() {
        let message = DKIMMessage(Array("A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n".utf8))
        XCTAssertEqual(message.fields.map(\.key), ["a", "b"])
        let relaxedHeaders = message.fields.flatMap { DKIMCanonicalization.relaxed.canonicalizeHeader($0.raw) }
        XCTAssertEqual(String(decoding: relaxedHeaders, as: UTF8.self), "a:X\r\nb:Y Z\r\n")
        let simpleHeaders = message.fields.flatMap { DKIMCanonicalization.simple.canonicalizeHeader($0.raw) }
        XCTAssertEqual(String(decoding: simpleHeaders, as: UTF8.self), "A: X\r\nB : Y\t\r\n\tZ  \r\n")
        XCTAssertEqual(String(decoding: DKIMCanonicalization.relaxed.canonicalizeBody(message.body), as: UTF8.self),
                       " C\r\nD E\r\n")
        XCTAssertEqual(String(decoding: DKIMCanonicalization.simple.canonicalizeBody(message.body), as: UTF8.self),
                       " C \r\nD \t E\r\n")
    }

    func testBodyEdgeCases() {
        let table: [(String, DKIMCanonicalization, String)] = [
            ("", .simple, "\r\n"), ("", .relaxed, ""),
            ("\r\n\r\n", .simple, "\r\n"), ("\r\n\r\n", .relaxed, ""),
            ("  \r\n\t\r\n", .relaxed, ""),
            ("abc", .simple, "abc\r\n"), ("abc  ", .relaxed, "abc\r\n"),
            ("a  b\t\r\n\r\nc\r\n\r\n", .relaxed, "a b\r\n\r\nc\r\n"),
            ("a  b\t\r\n\r\nc\r\n\r\n", .simple, "a  b\t\r\n\r\nc\r\n"),
        ]
        for (input, canon, expected) in table {
            XCTAssertEqual(String(decoding: canon.canonicalizeBody(Array(input.utf8)[...]), as: UTF8.self), expected,
                           "\(canon) of \(input.debugDescription)")
        }
    }

    func testEmptyBodyHashes() throws {
        let key = try DKIMPrivateKey(algorithm: .ed25519SHA256, secretBytes: Array(repeating: 7, count: 32))
        for (canon, bh) in [(DKIMCanonicalization.simple, "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY="),
                            (.relaxed, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")] {
            var options = DKIMSigningOptions()
            options.bodyCanonicalization = canon
            let sig = try DKIMSigner(options: options).sign(
                DKIMMessage(Array("From: a@example.com\r\n\r\n".utf8)),
                keys: [DKIMSigningKey(domain: "example.com", selector: "s", key: key)], time: 1)
            XCTAssertEqual(sig[0].bodyHash, bh)
        }
    }

    /// RFC 8463 Appendix A.3, both signatures, exact.
    func testRFC8463AppendixA3() throws {
        let seed = Data(base64Encoded: String(decoding: try Self.fixture("rfc8463-ed25519.seed.b64"), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines))!
        let ed = try DKIMPrivateKey(algorithm: .ed25519SHA256, secretBytes: Array(seed))
        XCTAssertEqual(Data(ed.publicKeyBytes).base64EncodedString(), "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
        let rsa = try DKIMPrivateKey(rsaPEM: String(decoding: try Self.fixture("rfc8463-rsa.pem"), as: UTF8.self))
        XCTAssertEqual(rsa.bits, 1024)
        XCTAssertTrue(rsa.dnsRecord.text.hasSuffix("p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"))

        var options = DKIMSigningOptions()
        options.identity = "@football.example.com"
        options.explicitHeaderList = ["from", "to", "subject", "date", "message-id", "from", "subject", "date"]
        options.headerListSeparator = " : "
        let signer = DKIMSigner(options: options)
        let unsigned = try Self.fixture("unsigned.eml")
        let sigs = try signer.sign(DKIMMessage(unsigned), keys: [
            DKIMSigningKey(domain: "football.example.com", selector: "brisbane", key: ed),
            DKIMSigningKey(domain: "football.example.com", selector: "test", key: rsa),
        ], time: 1528637909)
        XCTAssertEqual(sigs[0].bodyHash, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=")
        XCTAssertEqual(sigs[0].signature,
                       "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==")
        XCTAssertEqual(sigs[1].bodyHash, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=")
        XCTAssertEqual(sigs[1].signature,
                       "F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2JzdA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=")

        // Our header fields are the RFC's, byte for byte after relaxed canonicalization (the
        // folding is the signer's choice), and the signed message is the RFC's message.
        let published = DKIMMessage(try Self.fixture("rfc8463-a3.eml"))
        let theirs = published.fields.filter { $0.key == "dkim-signature" }
        XCTAssertEqual(theirs.count, 2)
        // (b= compared without its folding whitespace, which verifiers remove with the value.)
        func unfoldedSignature(_ raw: ArraySlice<UInt8>) -> String {
            let text = String(decoding: DKIMCanonicalization.relaxed.canonicalizeHeader(raw), as: UTF8.self)
            let parts = text.components(separatedBy: "b=")
            return parts.dropLast().joined(separator: "b=") + "b=" + parts.last!.filter { !$0.isWhitespace }
        }
        for (ours, theirs) in zip(sigs, theirs) {
            let mine = DKIMMessage(Array((ours.header + "\r\n").utf8)).fields[0]
            XCTAssertEqual(unfoldedSignature(mine.raw), unfoldedSignature(theirs.raw))
        }
        XCTAssertEqual(published.body, DKIMMessage(unsigned).body)
        XCTAssertEqual(Array(published.octets.suffix(unsigned.count)), unsigned)
    }

    func testHeaderListSignsPresentHeadersAndOverSigns() {
        let message = DKIMMessage(Array("""
            Received: x\r
            From: a@example.com\r
            To: b@example.net\r
            Subject: one\r
            List-Id: <l.example.com>\r
            List-Unsubscribe: <mailto:u@example.com>\r
            X-Other: y\r
            To: c@example.net\r
            \r
            body\r

            """.utf8))
        let names = DKIMSigner().headerList(for: message)
        XCTAssertEqual(names, ["from", "to", "to", "subject", "list-id", "list-unsubscribe",
                               "from", "subject", "to", "date"])
        XCTAssertFalse(names.contains("received"))
        XCTAssertFalse(names.contains("x-other"))
    }

    func testFromDomain() {
        let cases: [(String, String?)] = [
            ("From: Joe <joe@Football.Example.com>\r\n\r\n", "football.example.com"),
            ("From: joe@example.org\r\n\r\n", "example.org"),
            ("From: \"a@b\" <x@real.example>\r\n\r\n", "real.example"),
            ("To: x@y.example\r\n\r\n", nil),
            ("From: undisclosed\r\n\r\n", nil),
            // Two From fields, or one that does not parse: nothing to sign for.
            ("From: a@one.example\r\nFrom: b@two.example\r\n\r\n", nil),
            ("From: me@customer.example <x@other.example>\r\n\r\n", nil),
            ("From: <@customer.example:x@other.example>\r\n\r\n", "other.example"),
            ("From: x@[192.0.2.1]\r\n\r\n", nil),
        ]
        for (text, domain) in cases {
            XCTAssertEqual(DKIMMessage(Array(text.utf8)).fromDomain, domain, text)
        }
    }

    func testKeyPolicy() throws {
        XCTAssertThrowsError(try DKIMPrivateKey.generate(.rsaSHA256, bits: 512)) {
            XCTAssertEqual(($0 as? DKIMError)?.code, .weakKey)
        }
        XCTAssertThrowsError(try DKIMPrivateKey.generate(.rsaSHA256, bits: 1023)) {
            XCTAssertEqual(($0 as? DKIMError)?.code, .weakKey)
        }
        XCTAssertThrowsError(try DKIMPrivateKey.generate(.rsaSHA256, bits: 2000)) {
            XCTAssertEqual(($0 as? DKIMError)?.code, .unsupportedKeySize)
        }
        let rsa = try DKIMPrivateKey.generate(.rsaSHA256)
        XCTAssertEqual(rsa.bits, 2048)
        let again = try DKIMPrivateKey(algorithm: .rsaSHA256, secretBytes: rsa.secretBytes)
        XCTAssertEqual(again.publicKeyBytes, rsa.publicKeyBytes)
        let big = try DKIMPrivateKey.generate(.rsaSHA256, bits: 4096)
        XCTAssertEqual(big.bits, 4096)
        let record = big.dnsRecord
        XCTAssertGreaterThan(record.text.utf8.count, 255)
        XCTAssertTrue(record.strings.allSatisfy { $0.utf8.count <= 255 })
        XCTAssertEqual(record.strings.joined(), record.text)
        XCTAssertTrue(record.text.hasPrefix("v=DKIM1; k=rsa; p="))
        XCTAssertEqual(DKIMDNSRecord(parsing: record.text), record)
        XCTAssertEqual(DKIMDNSRecord(parsing: "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")?.keyType,
                       "ed25519")
        XCTAssertNil(DKIMDNSRecord(parsing: "v=spf1 -all"))
    }

    func testSignatureHeaderShape() throws {
        let key = try DKIMPrivateKey.generate(.ed25519SHA256)
        var options = DKIMSigningOptions()
        options.expireAfterSeconds = 3600
        let sig = try DKIMSigner(options: options).sign(
            DKIMMessage(Array("From: a@example.com\r\nSubject: s\r\n\r\nhi\r\n".utf8)),
            keys: [DKIMSigningKey(domain: "example.com", selector: "sel", key: key)], time: 1000)[0]
        XCTAssertTrue(sig.header.hasPrefix("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.com;"))
        XCTAssertTrue(sig.header.contains(" t=1000;"))
        XCTAssertTrue(sig.header.contains(" x=4600;"))
        XCTAssertFalse(sig.header.contains(" l="))
        XCTAssertTrue(sig.header.hasSuffix("\r\n"))
        for line in sig.header.split(separator: "\r\n") { XCTAssertLessThanOrEqual(line.count, 78, String(line)) }
    }
}
