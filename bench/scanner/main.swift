import Foundation
import Logging
import SMGClamAV
import SMGYara
import SMGMIME
import SMGVirusScan
#if canImport(Glibc)
import Glibc
#endif

/// smg-scanner-bench: messages/s of one scanner process's scanning work (ClamAV on the whole
/// message + MIME parse + YARA on every decoded part), for 10 KB, 100 KB and 1 MB messages.
///
///     swift build -c release --product smg-scanner-bench
///     .build/release/smg-scanner-bench [--seconds 5] [--concurrency 2] [--database DIR] [--rules FILE]
///                                      [--reload-test]
///
/// First prints how long the ClamAV engine took to load (`cl_load` + `cl_engine_compile`) and the
/// YARA rules to compile, and the resident memory after that. A production-sized synthetic
/// database: `python3 bench/make_signatures.py --out /tmp/smg-sigs` (see bench/README.md).
///
/// `--reload-test`: instead of the size table, `--concurrency` tasks scan 10 KB messages without
/// pause while another task touches one file of the database folder (its modification time) and
/// calls `ClamAVService.reloadIfChanged()`, which loads a new engine and swaps it in; prints scans/s,
/// p99 and maximum scan latency in the second before, during and the second after the reload.
/// The touched file gets its old modification time back afterwards.
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
let reloadTest = args.contains("--reload-test")

func inSeconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func decimals(_ value: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", value) }

/// Resident (`VmRSS`) and peak resident (`VmHWM`) memory of this process from /proc/self/status,
/// in MiB; 0 where unavailable. Read with open/read: procfs files report a size of 0.
func memoryMiB() -> (rss: Double, peak: Double) {
    let fd = open("/proc/self/status", O_RDONLY)
    guard fd >= 0 else { return (0, 0) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { buffer in read(fd, buffer.baseAddress, buffer.count) }
        guard n > 0 else { break }
        bytes += chunk[0..<n]
    }
    var rss = 0.0, peak = 0.0
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
        // "VmRSS:\t  123456 kB"
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count >= 2, let kib = Double(fields[1]) else { continue }
        if fields[0] == "VmRSS:" { rss = kib / 1024 }
        if fields[0] == "VmHWM:" { peak = kib / 1024 }
    }
    return (rss, peak)
}

var logger = Logger(label: "bench")
logger.logLevel = .warning
let startMemory = memoryMiB()
let clamav = ClamAVService(databaseDirectory: database, logger: logger)
let clamavLoadStart = ContinuousClock.now
guard await clamav.reloadIfChanged() else { fatalError("cannot load ClamAV signatures from \(database)") }
let clamavLoad = ContinuousClock.now - clamavLoadStart
let clamavMemory = memoryMiB()
let yaraCompileStart = ContinuousClock.now
let yara = try YaraRules(file: rules, externals: VirusScanner.yaraExternals, logger: logger)
let yaraCompile = ContinuousClock.now - yaraCompileStart
let loadedMemory = memoryMiB()
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
print("load: ClamAV engine \(decimals(inSeconds(clamavLoad))) s (cl_load + cl_engine_compile, \(database)), "
      + "YARA compile \(decimals(inSeconds(yaraCompile))) s (\(rules)); RSS \(decimals(startMemory.rss, 1)) MiB before, "
      + "\(decimals(clamavMemory.rss, 1)) MiB with ClamAV, \(decimals(loadedMemory.rss, 1)) MiB with both "
      + "(peak \(decimals(loadedMemory.peak, 1)) MiB)")

/// One scan of the reload test: when it ended (seconds since the test started) and how long it took (ms).
struct Sample: Sendable {
    var end: Double
    var latency: Double
}

/// What a task of the reload test returns: a scanning task its scans, the reloading task its timings.
enum ReloadTestPart: Sendable {
    case scans([Sample], errors: Int)
    /// The reload ran from `start` to `end`; scanning was stopped at `stop` (seconds since the test started).
    case reload(start: Double, end: Double, stop: Double, swapped: Bool, touched: String)
}

/// Sets the modification time of the first file (by name) in `directory` to now, so the
/// folder's fingerprint (`ClamAVService.fingerprint`: names, sizes, modification times) changes.
/// Returns the file and its previous modification time, or nil when nothing could be touched.
func touchOneFile(in directory: String) -> (path: String, modified: Date)? {
    let fm = FileManager.default
    guard let names = try? fm.contentsOfDirectory(atPath: directory) else { return nil }
    for name in names.sorted() {
        let path = directory + "/" + name
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
              let attributes = try? fm.attributesOfItem(atPath: path),
              let modified = attributes[.modificationDate] as? Date else { continue }
        do { try fm.setAttributes([.modificationDate: Date()], ofItemAtPath: path) } catch { return nil }
        return (path, modified)
    }
    return nil
}

/// Scans per second, p99 and maximum latency (ms) of the scans that ended in [from, to), and the
/// longest time (ms) in that window without any scan ending (a stall shows here).
func window(_ samples: [Sample], from: Double, to: Double)
    -> (rate: Double, p99: Double, max: Double, gap: Double, count: Int)
{
    let inside = samples.filter { $0.end >= from && $0.end < to }
    let latencies = inside.map(\.latency).sorted()
    let ends = [from] + inside.map(\.end).sorted() + [to]
    var gap = 0.0
    for i in 1..<ends.count { gap = max(gap, ends[i] - ends[i - 1]) }
    let p99 = latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * 0.99))]
    return (Double(inside.count) / max(to - from, 0.001), p99, latencies.last ?? 0, gap * 1000, inside.count)
}

/// `--reload-test`: does a signature reload stall scanning? See the comment at the top.
func runReloadTest(scanner: VirusScanner, clamav: ClamAVService, body: [UInt8], concurrency: Int, duration: Double,
                   logger: Logger) async {
    let directory = clamav.databaseDirectory
    // At least a second and a half of steady scanning before the reload.
    let reloadAt = max(1.5, duration / 3)
    let start = ContinuousClock.now
    var samples: [Sample] = []
    var errors = 0
    var reloadResult: (start: Double, end: Double, stop: Double, swapped: Bool, touched: String)? = nil
    await withTaskGroup(of: ReloadTestPart.self) { group in
        for _ in 0..<concurrency {
            group.addTask {
                var done: [Sample] = []
                var failed = 0
                while !Task.isCancelled {
                    let t0 = ContinuousClock.now
                    do { _ = try await scanner.scan(body, logger: logger) } catch { failed += 1 }
                    let t1 = ContinuousClock.now
                    done.append(Sample(end: inSeconds(t1 - start), latency: inSeconds(t1 - t0) * 1000))
                }
                return .scans(done, errors: failed)
            }
        }
        group.addTask {
            try? await Task.sleep(for: .seconds(reloadAt))
            let touched = touchOneFile(in: directory)
            let r0 = ContinuousClock.now
            let swapped = await clamav.reloadIfChanged()
            let r1 = ContinuousClock.now
            if let touched {
                try? FileManager.default.setAttributes([.modificationDate: touched.modified],
                                                       ofItemAtPath: touched.path)
            }
            // Scanning goes on until `duration` is over, and at least a second and a half after the swap.
            let stop = max(inSeconds(r1 - start) + 1.5, duration)
            try? await Task.sleep(until: start + Duration.seconds(stop), clock: .continuous)
            return .reload(start: inSeconds(r0 - start), end: inSeconds(r1 - start),
                           stop: inSeconds(ContinuousClock.now - start), swapped: swapped,
                           touched: touched?.path ?? "(nothing touched: folder not writable?)")
        }
        // The scanning tasks run until cancelled, so the reloading task is the first to finish.
        while let part = await group.next() {
            switch part {
            case .reload(let s, let e, let stop, let swapped, let touched):
                reloadResult = (s, e, stop, swapped, touched)
                group.cancelAll()
            case .scans(let done, let failed):
                samples += done
                errors += failed
            }
        }
    }
    let after = memoryMiB()
    guard let reload = reloadResult else { fatalError("the reloading task did not report") }
    // Scans that ended after the stop (the last one of each task) are left out of the figures.
    let total = reload.stop
    print("reload test: \(body.count)-byte messages, concurrency \(concurrency), \(decimals(total, 1)) s; touched "
          + "\(reload.touched); reloadIfChanged() took \(decimals(reload.end - reload.start)) s "
          + "(\(decimals(reload.start, 1))–\(decimals(reload.end, 1)) s), new engine swapped in: \(reload.swapped); "
          + "\(errors) scans failed; RSS now \(decimals(after.rss, 1)) MiB, peak \(decimals(after.peak, 1)) MiB")
    print("| window | scans/s | p99 latency | max latency | longest gap without a finished scan | scans |")
    print("|---|---|---|---|---|---|")
    let windows: [(String, Double, Double)] = [
        ("1 s before the reload", reload.start - 1, reload.start),
        ("during the reload (\(decimals(reload.end - reload.start)) s)", reload.start, reload.end),
        ("1 s after the reload", reload.end, reload.end + 1),
        ("whole run", 0, total),
    ]
    for (label, from, to) in windows {
        let w = window(samples, from: from, to: to)
        print("| \(label) | \(decimals(w.rate, 0)) | \(decimals(w.p99)) ms | \(decimals(w.max)) ms | "
              + "\(decimals(w.gap)) ms | \(w.count) |")
    }
    print("")
    print("| second | scans/s | p99 latency | max latency | reload running |")
    print("|---|---|---|---|---|")
    var second = 0.0
    while second + 1 <= total {
        let w = window(samples, from: second, to: second + 1)
        let reloading = reload.start < second + 1 && reload.end > second
        print("| \(Int(second))–\(Int(second) + 1) | \(decimals(w.rate, 0)) | \(decimals(w.p99)) ms | "
              + "\(decimals(w.max)) ms | \(reloading ? "yes" : "") |")
        second += 1
    }
}

if reloadTest {
    let body = message(size: 10 * 1024)
    let check = try await scanner.scan(body, logger: logger)
    precondition(!check.infected, "bench message must be clean: \(check.findings)")
    await runReloadTest(scanner: scanner, clamav: clamav, body: body, concurrency: concurrency, duration: seconds,
                        logger: logger)
    exit(0)
}

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
