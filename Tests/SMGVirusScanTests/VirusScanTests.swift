import XCTest
import Foundation
import Logging
@testable import SMGVirusScan
@testable import SMGClamAV
@testable import SMGYara
import SMGMIME
import SMGSync

/// The EICAR test string, assembled at run time so this file is not itself a "virus".
let eicar = Array(("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*").utf8)
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
let shippedDatabase = repoRoot.appendingPathComponent("deploy/scanner/clamav").path
let shippedRules = repoRoot.appendingPathComponent("deploy/scanner/yara/smg.yar").path
let logger = Logger(label: "test")

func tempDirectory() -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-scan-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Builds test mail and zips with real tools (Python's email and zipfile packages).
func python(_ script: String, _ args: [String] = []) throws -> [UInt8] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    process.arguments = ["-c", script] + args
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    XCTAssertEqual(process.terminationStatus, 0)
    return Array(data)
}

func base64Lines(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString(options: [.lineLength76Characters, .endLineWithCarriageReturn, .endLineWithLineFeed])
}

func mail(_ parts: [(headers: [String], body: String)], subject: String = "test") -> [UInt8] {
    var lines = ["From: a@customer.example", "To: b@dest.example", "Subject: \(subject)", "MIME-Version: 1.0",
                 "Content-Type: multipart/mixed; boundary=\"XYZ\"", "", "preamble"]
    for part in parts { lines += ["--XYZ"] + part.headers + ["", part.body] }
    lines += ["--XYZ--", ""]
    return Array(lines.joined(separator: "\r\n").utf8)
}

final class ClamAVEngineTests: XCTestCase {
    func testNoBuiltInEICARWithoutADatabase() throws {
        // A database with one unrelated signature: ClamAV 1.4 has no built-in EICAR detection,
        // which is why the project ships deploy/scanner/clamav/smg-test.ndb.
        let dir = tempDirectory()
        try "SMG.Test.Unrelated:0:*:736d672d6e657665722d6d617463686573\n".write(toFile: dir + "/other.ndb", atomically: true, encoding: .utf8)
        let engine = try ClamAVEngine(databaseDirectory: dir, limits: ClamAVLimits(), logger: logger)
        XCTAssertEqual(try engine.scan(eicar), .clean)
        // An empty folder is no database at all.
        let empty = tempDirectory()
        XCTAssertThrowsError(try ClamAVEngine(databaseDirectory: empty, limits: ClamAVLimits(), logger: logger))
    }

    func testShippedDatabaseDetectsEICARAndRealTestFiles() throws {
        let engine = try ClamAVEngine(databaseDirectory: shippedDatabase, limits: ClamAVLimits(), logger: logger)
        XCTAssertGreaterThanOrEqual(engine.signatureCount, 3)
        if case .infected(let name) = try engine.scan(eicar) {
            XCTAssertTrue(name.hasPrefix("SMG.Test.EICAR"), name)
        } else { XCTFail("EICAR not detected") }
        XCTAssertEqual(try engine.scan(Array("hello world".utf8)), .clean)
        XCTAssertEqual(try engine.scan([]), .clean)
        // Debian's clamav-testfiles: a real PE sample, and the same inside a zip and a tar.gz.
        for file in ["clam.exe", "clam.zip", "clam.tar.gz", "clam.7z"] {
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: "/usr/share/clamav-testfiles/\(file)")))
            // ClamAV marks signatures of a non-official database as such.
            XCTAssertEqual(try engine.scan(bytes, name: file), .infected(signature: "SMG.Test.ClamAVTestFile.UNOFFICIAL"),
                           file)
        }
    }

    func testServiceReloadsWhenTheFolderChangesAndFailsClosedWithout() async throws {
        let dir = tempDirectory() + "/db"
        let service = ClamAVService(databaseDirectory: dir, logger: logger)
        await service.reloadIfChanged()
        do {
            _ = try await service.scan(eicar)
            XCTFail("a scan without an engine must fail")
        } catch let error as ClamAVError { XCTAssertEqual(error.code, .noEngine) }

        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "SMG.Test.Other:0:*:736d672d6f74686572\n".write(toFile: dir + "/a.ndb", atomically: true, encoding: .utf8)
        let loaded = await service.reloadIfChanged()
        XCTAssertTrue(loaded)
        let first = try XCTUnwrap(service.engine)
        let (v1, _) = try await service.scan(eicar)
        XCTAssertEqual(v1, .clean)
        let unchanged = await service.reloadIfChanged()
        XCTAssertFalse(unchanged)

        // A scan in flight keeps the old engine; the new one serves the next scan.
        let inFlight = Task { try await service.scan(Array(repeating: 0x41, count: 5_000_000)) }
        try FileManager.default.copyItem(atPath: shippedDatabase + "/smg-test.ndb", toPath: dir + "/smg-test.ndb")
        let reloaded = await service.reloadIfChanged()
        XCTAssertTrue(reloaded)
        XCTAssertFalse(service.engine === first)
        let (old, _) = try await inFlight.value
        XCTAssertEqual(old, .clean)
        let (v2, _) = try await service.scan(eicar)
        XCTAssertEqual(v2, .infected(signature: "SMG.Test.EICAR.UNOFFICIAL"))
    }

    func testTimeoutIsAnError() async throws {
        let service = ClamAVService(databaseDirectory: shippedDatabase, timeout: .milliseconds(1), logger: logger)
        await service.reloadIfChanged()
        do {
            _ = try await service.scan(Array(repeating: 0x41, count: 20_000_000))
            XCTFail("expected a timeout")
        } catch let error as ClamAVError { XCTAssertEqual(error.code, .timeout) }
    }
}

final class YaraRulesTests: XCTestCase {
    func rules() throws -> YaraRules {
        try YaraRules(file: shippedRules, externals: VirusScanner.yaraExternals, logger: logger)
    }

    func testShippedRules() throws {
        let rules = try rules()
        XCTAssertGreaterThanOrEqual(rules.ruleCount, 8)
        func names(_ bytes: [UInt8], _ filename: String = "", _ type: String = "text/plain") throws -> [String] {
            try rules.scan(bytes, variables: ["filename": filename, "content_type": type]).map(\.rule)
        }
        XCTAssertEqual(try names(eicar), ["SMG_EICAR_Test_File"])
        XCTAssertEqual(try names(Array("Dear customer, the invoice.pdf is attached.".utf8)), [])
        XCTAssertEqual(try names(Array("data".utf8), "invoice.pdf.exe"),
                       ["SMG_Executable_Or_Script_Filename", "SMG_Double_Extension"])
        XCTAssertEqual(try names(Array("data".utf8), "report.docm"), ["SMG_Office_Macro_Filename"])
        XCTAssertEqual(try names(Array("#!/bin/sh\nrm -rf /\n".utf8), "install"), ["SMG_Script_Content"])
        let pe = Array(try Data(contentsOf: URL(fileURLWithPath: "/usr/share/clamav-testfiles/clam.exe")))
        XCTAssertEqual(try names(pe, "notes"), ["SMG_Executable_Attachment"])
        // An OLE2 compound file (magic D0 CF 11 E0 A1 B1 1A E1) with a VBA project stream.
        let ole: [UInt8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1] + [UInt8](repeating: 0, count: 504)
            + Array("_VBA_PROJECT".utf16.flatMap { [UInt8($0), 0] })
        XCTAssertEqual(try names(ole, "letter.doc"), ["SMG_Office_Macro_Content"])
        XCTAssertEqual(try names(Array("x".utf8), "", "application/vnd.ms-word.document.macroenabled.12"),
                       ["SMG_Office_Macro_Content"])
    }

    func testBadRulesAreACompileError() {
        XCTAssertThrowsError(try YaraRules(source: "rule broken { condition: nonsense( }", logger: logger)) { error in
            XCTAssertEqual((error as? YaraError)?.code, .compileFailed)
        }
    }
}

final class VirusScannerTests: XCTestCase {
    func scanner(limits: ClamAVLimits = ClamAVLimits(), block: Bool = true) async throws -> VirusScanner {
        let clamav = ClamAVService(databaseDirectory: shippedDatabase, limits: limits, logger: logger)
        await clamav.reloadIfChanged()
        let yara = try YaraRules(file: shippedRules, externals: VirusScanner.yaraExternals, logger: logger)
        return VirusScanner(clamav: clamav, yara: yara, blockLimitsExceeded: block)
    }

    func testCleanMailPassesBothEngines() async throws {
        let s = try await scanner()
        let report = try await s.scan(mail([(["Content-Type: text/plain"], "Hello, the minutes of today.")]),
                                      logger: logger)
        XCTAssertFalse(report.infected, "\(report.findings)")
        XCTAssertGreaterThan(report.parts, 1)
    }

    func testEICARInTheBody() async throws {
        let body = Array("From: a@x\r\nTo: b@y\r\nSubject: t\r\n\r\n".utf8) + eicar + Array("\r\n".utf8)
        let report = try await (try await scanner()).scan(body, logger: logger)
        XCTAssertEqual(Set(report.findings.map(\.engine)), ["clamav", "yara"])
        XCTAssertEqual(report.findings.first?.signature, "SMG.Test.EICAR.UNOFFICIAL")
    }

    func testEICARInABase64Attachment() async throws {
        let message = mail([(["Content-Type: text/plain"], "see attachment"),
                            (["Content-Type: application/octet-stream; name=\"test.txt\"",
                              "Content-Disposition: attachment; filename=\"test.txt\"",
                              "Content-Transfer-Encoding: base64"], base64Lines(eicar))])
        let report = try await (try await scanner()).scan(message, logger: logger)
        let clam = try XCTUnwrap(report.findings.first { $0.engine == "clamav" })
        XCTAssertEqual(clam.filename, "test.txt")
        XCTAssertEqual(clam.part, "2")
        let yara = try XCTUnwrap(report.findings.first { $0.engine == "yara" })
        XCTAssertEqual(yara.signature, "SMG_EICAR_Test_File")
        XCTAssertEqual(yara.part, "2")
    }

    /// `scanner.clamav.tmpdir`: libclamav makes its per-scan folder where it is told to (the
    /// scanner points it at /dev/shm), still finds what it found before, and leaves nothing behind.
    func testClamAVWorksInTheConfiguredTemporaryFolder() async throws {
        let dir = tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let seen = Locked<Set<String>>([])
        let watching = Locked(true)
        let watcher = Thread {
            while watching.withLock({ $0 }) {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
                seen.withLock { $0.formUnion(names) }
            }
        }
        watcher.start()
        let s = try await scanner(limits: ClamAVLimits(temporaryDirectory: dir))
        let message = mail([(["Content-Type: text/plain"], "see attachment"),
                            (["Content-Type: application/octet-stream; name=\"test.txt\"",
                              "Content-Disposition: attachment; filename=\"test.txt\"",
                              "Content-Transfer-Encoding: base64"], base64Lines(eicar))])
        var found: [ScanFinding] = []
        for _ in 0..<50 { found = try await s.scan(message, logger: logger).findings }
        watching.withLock { $0 = false }
        XCTAssertEqual(found.first { $0.engine == "clamav" }?.signature, "SMG.Test.EICAR.UNOFFICIAL")
        XCTAssertFalse(seen.withLock { $0 }.isEmpty, "libclamav never used the configured folder")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "scan folders left behind")
    }

    func testEICARInsideAZip() async throws {
        let zip = try python("""
            import io, sys, zipfile
            b = io.BytesIO()
            with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("readme.txt", "nothing here")
                z.writestr("eicar.com.txt", sys.argv[1])
            sys.stdout.buffer.write(b.getvalue())
            """, [String(decoding: eicar, as: UTF8.self)])
        let message = mail([(["Content-Type: application/zip; name=files.zip", "Content-Transfer-Encoding: base64",
                              "Content-Disposition: attachment; filename=files.zip"], base64Lines(zip))])
        let report = try await (try await scanner()).scan(message, logger: logger)
        // Deflated: only ClamAV (which unpacks archives) can see it.
        XCTAssertEqual(report.findings.map(\.engine), ["clamav"])
        XCTAssertEqual(report.findings.first?.signature, "SMG.Test.EICAR.UNOFFICIAL")
        XCTAssertEqual(report.findings.first?.filename, "files.zip")
    }

    func testEICARInANestedMessage() async throws {
        let inner = "From: x@y\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=IN\r\n\r\n--IN\r\n"
            + "Content-Type: text/plain\r\n\r\nhi\r\n--IN\r\nContent-Type: application/octet-stream\r\n"
            + "Content-Disposition: attachment; filename=\"e.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64Lines(eicar) + "\r\n--IN--\r\n"
        let message = mail([(["Content-Type: text/plain"], "forwarded"), (["Content-Type: message/rfc822"], inner)])
        let report = try await (try await scanner()).scan(message, logger: logger)
        XCTAssertTrue(report.findings.contains { $0.engine == "clamav" && $0.signature.hasPrefix("SMG.Test.EICAR") }, "\(report.findings)")
        XCTAssertTrue(report.findings.contains { $0.engine == "yara" && $0.part == "2.1.2" && $0.filename == "e.bin" },
                      "\(report.findings)")
    }

    func testZipBombEndsInAVerdict() async throws {
        // A nested bomb in the style of 42.zip: 20 levels of zip in zip, deeper than max recursion (16).
        let zip = try python("""
            import io, sys, zipfile
            data = bytes(10 << 20)
            for level in range(20):
                b = io.BytesIO()
                with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
                    for copy in range(2 if level < 4 else 1):
                        z.writestr(f"l{level}-{copy}.bin", data)
                data = b.getvalue()
            sys.stdout.buffer.write(data)
            """)
        XCTAssertLessThan(zip.count, 100_000)
        let message = mail([(["Content-Type: application/zip", "Content-Transfer-Encoding: base64",
                              "Content-Disposition: attachment; filename=bomb.zip"], base64Lines(zip))])
        let blocked = try await (try await scanner()).scan(message, logger: logger)
        XCTAssertEqual(blocked.findings.first?.signature, "Heuristics.Limits.Exceeded.MaxRecursion", "\(blocked.findings)")
        XCTAssertEqual(blocked.findings.first?.filename, "bomb.zip")
        let passed = try await (try await scanner(block: false)).scan(message, logger: logger)
        XCTAssertFalse(passed.infected)
        XCTAssertEqual(passed.limitsExceeded, ["Heuristics.Limits.Exceeded.MaxRecursion"])
    }

    func testFlatZipBombIsCaughtByTheYaraRule() async throws {
        // One member of 200 MB of zeros (about 200 KB deflated): libclamav only scans the first
        // max_file_size bytes of it and raises no alert, so the shipped YARA rule gives the verdict.
        let zip = try python("""
            import io, sys, zipfile
            b = io.BytesIO()
            with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("zeros.bin", bytes(200 << 20))
            sys.stdout.buffer.write(b.getvalue())
            """)
        let message = mail([(["Content-Type: application/zip", "Content-Transfer-Encoding: base64",
                              "Content-Disposition: attachment; filename=flat.zip"], base64Lines(zip))])
        let report = try await (try await scanner()).scan(message, logger: logger)
        XCTAssertEqual(report.findings.map(\.signature), ["SMG_Zip_Bomb_Ratio"])
        XCTAssertEqual(report.findings.first?.filename, "flat.zip")
    }

    func testFiftyMegabyteAttachmentStaysWithinLimits() async throws {
        var blob = [UInt8](repeating: 0, count: 50 * 1024 * 1024)
        var x: UInt32 = 12345
        for i in stride(from: 0, to: blob.count, by: 64) { x = x &* 1_103_515_245 &+ 12345; blob[i] = UInt8(truncatingIfNeeded: x >> 16) }
        let message = mail([(["Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64",
                              "Content-Disposition: attachment; filename=big.bin"], base64Lines(blob))])
        let report = try await (try await scanner()).scan(message, logger: logger)
        XCTAssertFalse(report.infected, "\(report.findings)")
        // With a smaller file limit the same message ends in a limits verdict.
        let small = try await scanner(limits: ClamAVLimits(maxScanSize: 100 * 1024 * 1024, maxFileSize: 10 * 1024 * 1024))
        let limited = try await small.scan(message, logger: logger)
        XCTAssertTrue(limited.findings.first?.signature.hasPrefix("Heuristics.Limits.Exceeded") ?? false,
                      "\(limited.findings)")
    }

    func testMalformedMIMEDoesNotCrash() async throws {
        let s = try await scanner()
        let inputs: [String] = [
            "Content-Type: multipart/mixed; boundary=\"\r\n\r\n--\r\n--\r\n",
            "Content-Type: multipart/mixed\r\n\r\nno boundary",
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!",
            ":\r\n:\r\n\r\n", "", "\r\n\r\n\r\n", "Content-Transfer-Encoding: quoted-printable\r\n\r\n=\r\n=Z",
        ]
        for input in inputs {
            let report = try await s.scan(Array(input.utf8), logger: logger)
            XCTAssertFalse(report.infected, input)
        }
    }

    func testAnEngineWithoutSignaturesFailsClosed() async throws {
        let clamav = ClamAVService(databaseDirectory: tempDirectory() + "/absent", logger: logger)
        await clamav.reloadIfChanged()
        let yara = try YaraRules(file: shippedRules, externals: VirusScanner.yaraExternals, logger: logger)
        let s = VirusScanner(clamav: clamav, yara: yara)
        do {
            _ = try await s.scan(Array("Subject: x\r\n\r\nclean".utf8), logger: logger)
            XCTFail("must not pass a message unscanned")
        } catch let error as ScanError { XCTAssertEqual(error.engine, "clamav") }
    }
}
