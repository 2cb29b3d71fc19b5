import Foundation
import Logging
import SMGClamAV
import SMGYara
import SMGMIME
import SMGVirusScan

/// smg-scanner-bench: messages/s of one scanner process's scanning work (ClamAV on the whole
/// message + MIME parse + YARA on every decoded part), for 10 KB, 100 KB and 1 MB messages.
///
///     swift build -c release --product smg-scanner-bench
///     .build/release/smg-scanner-bench [--seconds 5] [--concurrency 2] [--database DIR] [--rules FILE]
///
/// The Redis round trips of the stage (claim+load, commit) are not included: see pipeline_bench.py.
let args = CommandLine.arguments
func option(_ name: String, _ fallback: String) -> String {
    if let i = args.firstIndex(of: name), i + 1 < args.count { return args[i + 1] }
    return fallback
}
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
let seconds = Double(option("--seconds", "5")) ?? 5
let concurrency = Int(option("--concurrency", "2")) ?? 2
let database = option("--database", root.appendingPathComponent("deploy/scanner/clamav").path)
let rules = option("--rules", root.appendingPathComponent("deploy/scanner/yara/smg.yar").path)

var logger = Logger(label: "bench")
logger.logLevel = .warning
let clamav = ClamAVService(databaseDirectory: database, logger: logger)
guard await clamav.reloadIfChanged() else { fatalError("cannot load ClamAV signatures from \(database)") }
let yara = try YaraRules(file: rules, externals: VirusScanner.yaraExternals, logger: logger)
let scanner = VirusScanner(clamav: clamav, yara: yara)

/// A typical business mail: a text part, an HTML part and a base64 PDF-like attachment, `size` bytes in total.
func message(size: Int) -> [UInt8] {
    var rng = SystemRandomNumberGenerator()
    let text = String(repeating: "Dear customer, please find the quarterly report attached. Regards, Accounting.\r\n",
                      count: max(1, size / 10 / 80))
    let html = "<html><body><p>" + text.replacingOccurrences(of: "\r\n", with: "</p>\r\n<p>") + "</p></body></html>"
    let attachmentSize = max(100, (size - text.utf8.count - html.utf8.count - 1200) * 3 / 4)
    var blob = Array("%PDF-1.7\n".utf8)
    while blob.count < attachmentSize { blob.append(UInt8.random(in: 0...255, using: &rng)) }
    let b64 = Data(blob).base64EncodedString(options: [.lineLength76Characters, .endLineWithCarriageReturn,
                                                       .endLineWithLineFeed])
    let lines = [
        "From: Accounting <acct@customer.example>", "To: someone@dest.example", "Subject: Quarterly report",
        "Message-ID: <bench@customer.example>", "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=\"M\"", "",
        "--M", "Content-Type: multipart/alternative; boundary=\"A\"", "",
        "--A", "Content-Type: text/plain; charset=utf-8", "", text,
        "--A", "Content-Type: text/html; charset=utf-8", "", html, "--A--",
        "--M", "Content-Type: application/pdf; name=\"report.pdf\"", "Content-Disposition: attachment; filename=\"report.pdf\"",
        "Content-Transfer-Encoding: base64", "", b64, "--M--", "",
    ]
    return Array(lines.joined(separator: "\r\n").utf8)
}

print("scanner bench: ClamAV \(ClamAVEngine.libraryVersion) (\(clamav.engine?.signatureCount ?? 0) signatures), "
      + "YARA \(YaraRules.libraryVersion) (\(yara.ruleCount) rules), concurrency \(concurrency), \(seconds)s per size")
print("| message size | messages/s | MB/s | mean latency |")
print("|---|---|---|---|")
for (label, size) in [("10 KB", 10 * 1024), ("100 KB", 100 * 1024), ("1 MB", 1024 * 1024)] {
    let body = message(size: size)
    let check = try await scanner.scan(body, logger: logger)
    precondition(!check.infected, "bench message must be clean: \(check.findings)")
    let start = ContinuousClock.now
    let deadline = start + .milliseconds(Int64(seconds * 1000))
    let counts = await withTaskGroup(of: (Int, Duration).self) { group in
        for _ in 0..<concurrency {
            group.addTask {
                var n = 0
                var busy = Duration.zero
                while ContinuousClock.now < deadline {
                    let t0 = ContinuousClock.now
                    _ = try? await scanner.scan(body, logger: logger)
                    busy += ContinuousClock.now - t0
                    n += 1
                }
                return (n, busy)
            }
        }
        var total = (0, Duration.zero)
        for await (n, busy) in group { total.0 += n; total.1 += busy }
        return total
    }
    let elapsed = ContinuousClock.now - start
    let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let rate = Double(counts.0) / secs
    let latency = (Double(counts.1.components.seconds) + Double(counts.1.components.attoseconds) / 1e18)
        / Double(max(1, counts.0)) * 1000
    print("| \(label) (\(body.count) bytes) | \(String(format: "%.0f", rate)) | "
          + "\(String(format: "%.1f", rate * Double(body.count) / 1_048_576)) | \(String(format: "%.2f", latency)) ms |")
}
