import SMGRuntime
import Foundation

/// Configuration of smg-scanner (besides the common and stage keys).
enum ScannerKeys {
    static let database = ConfigKey<String>.string(
        "scanner.clamav.database", default: "/var/lib/clamav",
        help: "ClamAV signature folder (freshclam's DatabaseDirectory); every .cvd/.cld/.ndb/.hdb/… in it is loaded.")
    static let reloadInterval = ConfigKey.duration(
        "scanner.clamav.reload_interval", default: "60s", min: .milliseconds(100), max: .seconds(86400),
        help: "How often the signature folder is checked for changes; a changed folder is loaded into a new engine and swapped in.")
    static let maxScanSize = ConfigKey<Int>.size(
        "scanner.clamav.max_scan_size", default: "200M", range: 1024...(4 << 30),
        help: "ClamAV: bytes scanned per message in total, archives included (CL_ENGINE_MAX_SCANSIZE).")
    static let maxFileSize = ConfigKey<Int>.size(
        "scanner.clamav.max_file_size", default: "100M", range: 1024...(4 << 30),
        help: "ClamAV: largest single file (also inside archives) that is scanned (CL_ENGINE_MAX_FILESIZE).")
    static let maxRecursion = ConfigKey<Int>.int(
        "scanner.clamav.max_recursion", default: 16, range: 1...255,
        help: "ClamAV: nesting depth of archives and containers (CL_ENGINE_MAX_RECURSION).")
    static let maxFiles = ConfigKey<Int>.int(
        "scanner.clamav.max_files", default: 10_000, range: 1...1_000_000,
        help: "ClamAV: files scanned inside one container (CL_ENGINE_MAX_FILES).")
    static let temporaryDirectory = ConfigKey<String>.string(
        "scanner.clamav.tmpdir", default: "/dev/shm",
        help: "Folder where libclamav makes its per-scan folder and extracted parts (CL_ENGINE_TMPDIR); a memory file system saves a disk write per scan. Empty = $TMPDIR or /tmp.",
        validate: { path in
            guard !path.isEmpty else { return nil }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
                return "not a folder"
            }
            return FileManager.default.isWritableFile(atPath: path) ? nil : "not writable"
        })
    static let blockLimitsExceeded = ConfigKey<Bool>.bool(
        "scanner.block_limits_exceeded", default: true,
        help: "A message that exceeds a scan limit (zip bomb: Heuristics.Limits.Exceeded.*) is blocked; false = passed on.")
    static let timeout = ConfigKey.duration(
        "scanner.timeout", default: "120s", min: .milliseconds(1), max: .seconds(3600),
        help: "Longest time one engine may take for a message; past it the message is held and retried (fail closed).")
    static let scanSlots = ConfigKey<Int>.int(
        "scanner.clamav.scan_slots", default: 0, range: 0...1024,
        help: "ClamAV scans that may run at once in this process (0 = number of CPU cores). A timed-out scan keeps its slot until libclamav returns; a scan finding no free slot within scanner.timeout is retried later.")
    static let yaraRules = ConfigKey<String>.string(
        "scanner.yara.rules", default: "/etc/smg/yara/smg.yar",
        help: "YARA rule file compiled at start (the project ships deploy/scanner/yara/smg.yar).")
    static let mimeMaxDepth = ConfigKey<Int>.int(
        "scanner.mime.max_depth", default: 16, range: 1...100,
        help: "MIME nesting (multipart, message/rfc822) parsed for YARA; deeper parts are scanned as opaque bytes.")
    static let mimeMaxParts = ConfigKey<Int>.int(
        "scanner.mime.max_parts", default: 1000, range: 1...100_000, help: "MIME parts parsed per message.")
    static let mimeMaxDecoded = ConfigKey<Int>.size(
        "scanner.mime.max_decoded", default: "128M", range: 1024...(4 << 30),
        help: "Decoded bytes of all MIME parts of a message together (bounds the scanner's memory per message).")

    static let all: [AnyConfigKey] = [
        database.erased, reloadInterval.erased, maxScanSize.erased, maxFileSize.erased, maxRecursion.erased,
        maxFiles.erased, temporaryDirectory.erased, blockLimitsExceeded.erased, timeout.erased, scanSlots.erased, yaraRules.erased, mimeMaxDepth.erased,
        mimeMaxParts.erased, mimeMaxDecoded.erased,
    ]
}
