import XCTest
import Foundation
import NIOSSL
import Crypto
@testable import SMTPClient

/// RFC 7671/7672 certificate matching with certificates openssl makes at test time: a CA, a leaf
/// for mx.dane.test signed by it, and an unrelated self-signed certificate.
final class DANEMatcherTests: XCTestCase {
    nonisolated(unsafe) static var dir = ""
    static func openssl(_ args: String...) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw NSError(domain: "openssl \(args)", code: Int(p.terminationStatus)) }
    }

    override class func setUp() {
        super.setUp()
        dir = NSTemporaryDirectory() + "dane-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        do {
            try openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
                        "-out", "ca.pem", "-days", "30", "-subj", "/CN=DANE Test CA",
                        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
            try openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "leaf.key",
                        "-out", "leaf.csr", "-subj", "/CN=mx.dane.test")
            try Data("subjectAltName=DNS:mx.dane.test\n".utf8).write(to: URL(fileURLWithPath: dir + "/ext.cnf"))
            try openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                        "-out", "leaf.pem", "-days", "30", "-extfile", "ext.cnf")
            try openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "other.key",
                        "-out", "other.pem", "-days", "30", "-subj", "/CN=other.test")
        } catch {
            XCTFail("openssl: \(error)")
        }
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: dir)
        super.tearDown()
    }

    func cert(_ name: String) throws -> NIOSSLCertificate { try NIOSSLCertificate.fromPEMFile(Self.dir + "/\(name).pem")[0] }

    func record(_ usage: UInt8, _ selector: UInt8, _ matching: UInt8, of certificate: NIOSSLCertificate) throws -> TLSARecord {
        let selected = selector == 0 ? try certificate.toDERBytes() : try certificate.extractPublicKey().toSPKIBytes()
        let data = matching == 0 ? selected : matching == 1 ? Array(SHA256.hash(data: selected)) : Array(SHA512.hash(data: selected))
        return TLSARecord(usage: usage, selector: selector, matchingType: matching, data: data)
    }

    func testDANEEEMatchesTheLeafBySelectorAndMatchingType() async throws {
        let leaf = try cert("leaf"), ca = try cert("ca")
        for (s, m) in [(1, 1), (0, 1), (1, 2), (0, 2), (1, 0), (0, 0)] as [(UInt8, UInt8)] {
            let r = try record(3, s, m, of: leaf)
            let failure = await DANEMatcher.verify(chain: [leaf, ca], records: [r], names: ["anything.test"])
            XCTAssertNil(failure, "3 \(s) \(m): DANE-EE needs no name match")
        }
    }

    func testMismatchAndUnusableUsagesFail() async throws {
        let leaf = try cert("leaf"), other = try cert("other")
        let wrong = try record(3, 1, 1, of: other)
        let failure = await DANEMatcher.verify(chain: [leaf], records: [wrong], names: ["mx.dane.test"])
        XCTAssertEqual(failure?.type, "tlsa-invalid")
        // PKIX-TA(0) / PKIX-EE(1) are not for SMTP, even when they match.
        let pkix = try record(1, 1, 1, of: leaf)
        XCTAssertFalse(pkix.isUsableForSMTP)
        let unusable = await DANEMatcher.verify(chain: [leaf], records: [pkix], names: ["mx.dane.test"])
        XCTAssertNotNil(unusable)
        // A record whose digest has the wrong length is unusable.
        XCTAssertFalse(TLSARecord(usage: 3, selector: 1, matchingType: 1, data: [1, 2, 3]).isUsableForSMTP)
    }

    func testDANETANeedsTheAnchorInTheChainAndTheMXName() async throws {
        let leaf = try cert("leaf"), ca = try cert("ca")
        let ta = try record(2, 0, 1, of: ca)
        let ok = await DANEMatcher.verify(chain: [leaf, ca], records: [ta], names: ["mx.dane.test"])
        XCTAssertNil(ok)
        let spki = await DANEMatcher.verify(chain: [leaf, ca], records: [try record(2, 1, 1, of: ca)], names: ["mx.dane.test"])
        XCTAssertNil(spki)
        let wrongName = await DANEMatcher.verify(chain: [leaf, ca], records: [ta], names: ["mx.elsewhere.test"])
        XCTAssertEqual(wrongName?.type, "tlsa-invalid")
        let notPresented = await DANEMatcher.verify(chain: [leaf], records: [ta], names: ["mx.dane.test"])
        XCTAssertNotNil(notPresented, "the TA must be in the chain the server sends")
        let otherAnchor = await DANEMatcher.verify(chain: [leaf, ca], records: [try record(2, 0, 1, of: try cert("other"))],
                                                   names: ["mx.dane.test"])
        XCTAssertNotNil(otherAnchor)
    }
}
