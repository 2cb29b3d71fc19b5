import XCTest
import Foundation
@testable import SMGDKIM

/// Every signature is checked by two independent verifiers: dkimpy (Python) and OpenDKIM's
/// opendkim-testmsg (libopendkim, keys served by knotd in a private network namespace).
/// Both must accept what we sign and both must reject it once a signed header is changed.
final class DKIMInteropTests: XCTestCase {
    static let fixtures = DKIMVectorTests.fixtures

    /// Messages with the awkward shapes the issue lists. Each has a Date header: opendkim-testmsg
    /// refuses messages without the fields RFC 5322 §3.6 requires ("dkim_chunk(): Syntax error").
    static let messages: [(String, [UInt8])] = {
        var list: [(String, [UInt8])] = []
        let date = "Date: Mon, 23 Nov 2026 05:00:00 +0000\r\n"
        func add(_ name: String, _ text: String) { list.append((name, Array(text.utf8))) }
        add("plain", "From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: hello\r\n"
            + "Date: Mon, 23 Nov 2026 05:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHi Bob.\r\n")
        add("folded", "From: Alice\r\n <alice@example.com>\r\nTo: bob@example.net,\r\n\tcarol@example.net\r\n"
            + "Subject: This is a\r\n   folded\t subject\r\nDate: Mon, 23 Nov 2026 05:00:00 +0000\r\n\r\nBody\r\n")
        add("trailing-ws", date + "From: alice@example.com   \r\nSubject: trailing \t \r\nTo:  bob@example.net\t\r\n\r\n"
            + "line with spaces   \r\n\t tab line\t\r\n\r\n   \r\n\r\n")
        add("empty-body", date + "From: alice@example.com\r\nSubject: nothing\r\n\r\n")
        add("no-separator", date + "From: alice@example.com\r\nSubject: no body at all\r\n")
        add("separator-only", date + "From: alice@example.com\r\nSubject: no body at all\r\n\r\n")
        var eight: [UInt8] = Array((date + "From: alice@example.com\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMIME-Version: 1.0\r\n")
            .utf8)
        eight += Array("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".utf8)
        eight += Array("Grüße, café, 日本語\r\n".utf8) + [0xE9, 0xFF, 0x80, 0x0D, 0x0A]
        list.append(("8bit", eight))
        add("long-lines", date + "From: alice@example.com\r\nSubject: " + String(repeating: "long ", count: 200) + "\r\n\r\n"
            + String(repeating: "x", count: 10_000) + "\r\n" + String(repeating: "word ", count: 3000) + "\r\n")
        add("from-like", date + "From: alice@example.com\r\nResent-From: relay@example.org\r\nX-Original-From: x@example.net\r\n"
            + "Sender: s@example.com\r\nReply-To: r@example.com\r\nList-Id: <list.example.com>\r\n"
            + "Subject: many senders\r\n\r\nbody\r\n")
        add("two-froms", date + "From: alice@example.com\r\nFrom: mallory@example.org\r\nSubject: two\r\n\r\nbody\r\n")
        return list
    }()

    struct Keys {
        let rsa: DKIMSigningKey
        let ed: DKIMSigningKey
        var records: String {
            [rsa, ed].map { "\($0.selector)._domainkey.\($0.domain) \($0.key.dnsRecord.text)" }
                .joined(separator: "\n") + "\n"
        }
    }

    static func makeKeys() throws -> Keys {
        Keys(rsa: DKIMSigningKey(domain: "example.com", selector: "rsa2026", key: try .generate(.rsaSHA256)),
             ed: DKIMSigningKey(domain: "example.com", selector: "ed2026", key: try .generate(.ed25519SHA256)))
    }

    /// Runs a verifier; returns its per-file result lines keyed by file path.
    static func run(_ arguments: [String]) throws -> [String: String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw DKIMError(code: .badInput, message: "\(arguments[0]) exited \(process.terminationStatus): "
                            + String(decoding: errors, as: UTF8.self))
        }
        var results: [String: String] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
            if parts.count >= 2 { results[parts[1]] = parts[0] + (parts.count > 2 ? " " + parts[2] : "") }
        }
        return results
    }

    /// Verifies files with both verifiers; returns (dkimpy, opendkim) results per file.
    static func verifyBoth(records: String, files: [String], in dir: URL) throws -> ([String: String], [String: String]) {
        let recordsFile = dir.appendingPathComponent("records.txt")
        try Data(records.utf8).write(to: recordsFile)
        let dkimpy = try run(["python3", fixtures.appendingPathComponent("dkimpy-verify.py").path, recordsFile.path] + files)
        let opendkim = try run([fixtures.appendingPathComponent("opendkim-verify.sh").path, recordsFile.path] + files)
        return (dkimpy, opendkim)
    }

    func testBothVerifiersAcceptOurSignaturesAndRejectChangedHeaders() throws {
        let keys = try Self.makeKeys()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-dkim-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        var good: [String] = []
        var tampered: [String] = []
        let now = Int(Date().timeIntervalSince1970)
        let canons: [(DKIMCanonicalization, DKIMCanonicalization)] = [(.relaxed, .relaxed), (.simple, .simple),
                                                                      (.relaxed, .simple), (.simple, .relaxed)]
        for (name, octets) in Self.messages {
            for (hc, bc) in canons {
                var options = DKIMSigningOptions()
                options.headerCanonicalization = hc
                options.bodyCanonicalization = bc
                options.expireAfterSeconds = 86400
                let signer = DKIMSigner(options: options)
                let tag = "\(name)-\(hc.rawValue)-\(bc.rawValue)"
                // One file per key (OpenDKIM reports one result per message), and one with both.
                for (alg, keyList) in [("rsa", [keys.rsa]), ("ed", [keys.ed]), ("both", [keys.ed, keys.rsa])] {
                    let headers = try signer.signatureHeaders(for: octets, keys: keyList, time: now)
                    let signed = Array(headers.utf8) + octets
                    XCTAssertEqual(Array(signed.suffix(octets.count)), octets, "the message itself is never changed")
                    let file = dir.appendingPathComponent("\(tag)-\(alg).eml").path
                    try Data(signed).write(to: URL(fileURLWithPath: file))
                    good.append(file)
                    if alg != "both" {
                        // A signed header changed after signing, and a From header added (over-signing).
                        let text = String(decoding: signed, as: UTF8.self)
                        let changed = text.replacingOccurrences(of: "From: alice@", with: "From: alicf@")
                            .replacingOccurrences(of: "From: Alice", with: "From: Alicf")
                        XCTAssertNotEqual(changed, text)
                        let bad = dir.appendingPathComponent("\(tag)-\(alg)-changed.eml").path
                        try Data(changed.utf8).write(to: URL(fileURLWithPath: bad))
                        tampered.append(bad)
                        let added = headers + "From: mallory@example.org\r\n" + String(decoding: octets, as: UTF8.self)
                        let bad2 = dir.appendingPathComponent("\(tag)-\(alg)-added-from.eml").path
                        try Data(added.utf8).write(to: URL(fileURLWithPath: bad2))
                        tampered.append(bad2)
                    }
                }
            }
        }
        let (dkimpy, opendkim) = try Self.verifyBoth(records: keys.records, files: good + tampered, in: dir)
        for file in good {
            XCTAssertTrue(dkimpy[file]?.hasPrefix("PASS") == true, "dkimpy: \(file): \(dkimpy[file] ?? "no result")")
            let name = URL(fileURLWithPath: file).lastPathComponent
            if name.hasPrefix("two-froms") {
                // RFC 5322 §3.6 allows one From; libopendkim refuses such a message before any
                // signature check. dkimpy verifies it (every From instance is signed).
                XCTAssertEqual(opendkim[file], "FAIL opendkim-testmsg: dkim_chunk(): Syntax error", name)
            } else if name.hasPrefix("no-separator-simple-") {
                // A message without the empty line after its header: libopendkim drops the last
                // header field's CRLF under simple header canonicalization; dkimpy follows RFC 6376
                // §3.4.1 (fields are hashed as they are). With the empty line both pass (below).
                XCTAssertEqual(opendkim[file], "FAIL opendkim-testmsg: dkim_eom(): Bad signature", name)
            } else {
                XCTAssertEqual(opendkim[file], "PASS", "opendkim: \(file): \(opendkim[file] ?? "no result")")
            }
        }
        for file in tampered {
            XCTAssertTrue(dkimpy[file]?.hasPrefix("FAIL") == true, "dkimpy accepted \(file)")
            XCTAssertTrue(opendkim[file]?.hasPrefix("FAIL") == true, "opendkim accepted \(file): \(opendkim[file] ?? "")")
        }
        XCTAssertEqual(good.count, Self.messages.count * 4 * 3)
        if ProcessInfo.processInfo.environment["SMG_KEEP_DKIM_FILES"] != nil { print("kept \(dir.path)"); try? FileManager.default.copyItem(at: dir, to: URL(fileURLWithPath: "/tmp/smg-dkim-kept")) }
    }

    /// RSA-4096: its key record is longer than one TXT string (split at 255 octets in the zone).
    func testRSA4096WithSplitRecord() throws {
        let key = DKIMSigningKey(domain: "example.com", selector: "big", key: try .generate(.rsaSHA256, bits: 4096))
        XCTAssertGreaterThan(key.key.dnsRecord.strings.count, 1)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-dkim-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let octets = Self.messages[0].1
        let signed = Array(try DKIMSigner().signatureHeaders(for: octets, keys: [key], time: 1_790_000_000).utf8) + octets
        let file = dir.appendingPathComponent("rsa4096.eml").path
        try Data(signed).write(to: URL(fileURLWithPath: file))
        let (dkimpy, opendkim) = try Self.verifyBoth(
            records: "big._domainkey.example.com \(key.key.dnsRecord.text)\n", files: [file], in: dir)
        XCTAssertEqual(dkimpy[file], "PASS 1")
        XCTAssertEqual(opendkim[file], "PASS")
    }

    /// The RFC 8463 message as published passes both verifiers (the harness itself is sound),
    /// and fails both once its Subject is changed.
    func testVerifiersOnPublishedVector() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-dkim-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let records = String(decoding: try DKIMVectorTests.fixture("rfc8463-keys.txt"), as: UTF8.self)
        let text = String(decoding: try DKIMVectorTests.fixture("rfc8463-a3.eml"), as: UTF8.self)
        let good = dir.appendingPathComponent("a3.eml").path
        let bad = dir.appendingPathComponent("a3-changed.eml").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: good))
        try Data(text.replacingOccurrences(of: "Is dinner ready?", with: "Is dinner ready!").utf8)
            .write(to: URL(fileURLWithPath: bad))
        let (dkimpy, opendkim) = try Self.verifyBoth(records: records, files: [good, bad], in: dir)
        XCTAssertEqual(dkimpy[good], "PASS 2")
        XCTAssertEqual(opendkim[good], "PASS")
        XCTAssertTrue(dkimpy[bad]?.hasPrefix("FAIL") == true)
        XCTAssertTrue(opendkim[bad]?.hasPrefix("FAIL") == true)
    }
}
