internal import CClamAV
public import Logging
import SMGSync
public import Foundation

/// Errors of the ClamAV engine, with a code callers can switch on.
public struct ClamAVError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public static let initFailed = Code(name: "init failed")
        public static let loadFailed = Code(name: "signature load failed")
        public static let compileFailed = Code(name: "engine compile failed")
        public static let scanFailed = Code(name: "scan failed")
        public static let noEngine = Code(name: "no engine loaded")
        public static let timeout = Code(name: "scan timed out")
        /// Every scan slot is taken (see `ClamAVService.slots`); temporary.
        public static let busy = Code(name: "all scan slots busy")
        public var description: String { name }
    }
    public var code: Code
    public var message: String
    public var description: String { "clamav \(code): \(message)" }

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }
}

/// Scan limits (`CL_ENGINE_MAX_*`). Past a limit, ClamAV stops and — with heuristic alerts on —
/// reports `Heuristics.Limits.Exceeded.*`, so a zip bomb ends in a verdict, not in exhausted memory.
public struct ClamAVLimits: Sendable, Hashable {
    /// Bytes scanned per file in total, archives included (`CL_ENGINE_MAX_SCANSIZE`).
    public var maxScanSize: UInt64
    /// Largest single (extracted) file that is scanned (`CL_ENGINE_MAX_FILESIZE`).
    public var maxFileSize: UInt64
    /// Archive/container nesting depth (`CL_ENGINE_MAX_RECURSION`).
    public var maxRecursion: UInt32
    /// Files inside one container (`CL_ENGINE_MAX_FILES`).
    public var maxFiles: UInt32
    /// Where libclamav makes its per-scan folder and the parts it extracts (`CL_ENGINE_TMPDIR`);
    /// nil = its default ($TMPDIR or /tmp). Every scan of a mail creates and removes a folder and
    /// files there, so a memory file system (/dev/shm) saves a journal write per scan.
    public var temporaryDirectory: String?

    public init(maxScanSize: UInt64 = 200 * 1024 * 1024, maxFileSize: UInt64 = 100 * 1024 * 1024,
                maxRecursion: UInt32 = 16, maxFiles: UInt32 = 10_000, temporaryDirectory: String? = nil) {
        self.maxScanSize = maxScanSize
        self.maxFileSize = maxFileSize
        self.maxRecursion = maxRecursion
        self.maxFiles = maxFiles
        self.temporaryDirectory = temporaryDirectory
    }
}

/// What ClamAV said about some bytes.
public enum ClamAVVerdict: Sendable, Hashable {
    case clean
    case infected(signature: String)

    /// `Heuristics.Limits.Exceeded.*`: a scan limit was hit (zip bomb, oversized file).
    public var isLimitExceeded: Bool {
        if case .infected(let name) = self { return name.hasPrefix("Heuristics.Limits.Exceeded") }
        return false
    }
}

/// One compiled libclamav engine (`struct cl_engine`), owned by this object and freed in deinit.
///
/// Thread rules (clamav.h / libclamav docs): after `cl_engine_compile` the engine is read-only
/// and "may be used by multiple threads for scanning at the same time"; it must not be modified
/// or freed while a scan runs. So an engine is immutable once made, every scan holds a strong
/// reference to it, and the last reference (the last in-flight scan after a reload) frees it.
/// `scan` blocks: call it from a dedicated thread, never from Swift's cooperative pool.
public final class ClamAVEngine: @unchecked Sendable {
    let engine: OpaquePointer
    public let databaseDirectory: String
    public let limits: ClamAVLimits
    /// Signatures loaded.
    public let signatureCount: Int
    /// Version of the loaded database (`daily` version; 0 for a database without a .cvd/.cld).
    public let databaseVersion: Int
    public let loadedAt: Date

    /// The libclamav version (`cl_retver`).
    public static var libraryVersion: String { initialize(); return String(cString: cl_retver()) }

    /// `cl_init` runs once per process.
    private static let initResult: cl_error_t = cl_init(UInt32(CL_INIT_DEFAULT))
    static func initialize() { _ = initResult }

    /// Loads every signature file in `databaseDirectory` and compiles the engine. Blocking (a full
    /// production database takes seconds and about 1 GB); partial state is freed on every error.
    public init(databaseDirectory: String, limits: ClamAVLimits, logger: Logger) throws {
        let status = ClamAVEngine.initResult
        guard status == CL_SUCCESS else {
            throw ClamAVError(code: .initFailed, message: String(cString: cl_strerror(status)))
        }
        guard let engine = cl_engine_new() else {
            throw ClamAVError(code: .initFailed, message: "cl_engine_new returned NULL")
        }
        var ok = false
        defer { if !ok { cl_engine_free(engine) } }
        let settings: [(cl_engine_field, Int64)] = [
            (CL_ENGINE_MAX_SCANSIZE, Int64(limits.maxScanSize)), (CL_ENGINE_MAX_FILESIZE, Int64(limits.maxFileSize)),
            (CL_ENGINE_MAX_RECURSION, Int64(limits.maxRecursion)), (CL_ENGINE_MAX_FILES, Int64(limits.maxFiles)),
        ]
        for (field, value) in settings {
            let set = cl_engine_set_num(engine, field, value)
            guard set == CL_SUCCESS else {
                throw ClamAVError(code: .loadFailed, message: "cl_engine_set_num(\(field)): \(String(cString: cl_strerror(set)))")
            }
        }
        if let tmp = limits.temporaryDirectory, !tmp.isEmpty {
            let set = cl_engine_set_str(engine, CL_ENGINE_TMPDIR, tmp)
            guard set == CL_SUCCESS else {
                throw ClamAVError(code: .loadFailed, message: "cl_engine_set_str(CL_ENGINE_TMPDIR, \(tmp)): \(String(cString: cl_strerror(set)))")
            }
        }
        var signatures: UInt32 = 0
        // CL_DB_STDOPT (a macro Swift does not import).
        let standard = UInt32(CL_DB_PHISHING | CL_DB_PHISHING_URLS | CL_DB_BYTECODE)
        let loaded = cl_load(databaseDirectory, engine, &signatures, standard)
        guard loaded == CL_SUCCESS else {
            throw ClamAVError(code: .loadFailed,
                              message: "\(databaseDirectory): \(String(cString: cl_strerror(loaded)))")
        }
        guard signatures > 0 else {
            throw ClamAVError(code: .loadFailed, message: "\(databaseDirectory): no signatures")
        }
        // Names of matches, also of heuristic alerts that cl_scanmap_callback reports without one.
        cl_engine_set_clcb_virus_found(engine) { _, name, context in
            guard let name, let context else { return }
            let found = Unmanaged<FoundNames>.fromOpaque(context).takeUnretainedValue()
            found.names.append(String(cString: name))
        }
        let compiled = cl_engine_compile(engine)
        guard compiled == CL_SUCCESS else {
            throw ClamAVError(code: .compileFailed, message: String(cString: cl_strerror(compiled)))
        }
        var err: Int32 = 0
        let version = cl_engine_get_num(engine, CL_ENGINE_DB_VERSION, &err)
        ok = true
        self.engine = engine
        self.databaseDirectory = databaseDirectory
        self.limits = limits
        signatureCount = Int(signatures)
        databaseVersion = err == 0 ? Int(version) : 0
        loadedAt = Date()
        logger.info("clamav engine loaded", metadata: [
            "database": .string(databaseDirectory), "signatures": "\(signatures)", "db_version": "\(databaseVersion)",
            "libclamav": .string(ClamAVEngine.libraryVersion),
        ])
    }

    deinit { cl_engine_free(engine) }

    /// What the virus-found callback saw during one scan (one object per scan: thread-safe).
    final class FoundNames {
        var names: [String] = []
    }

    /// Scans `bytes` in memory (`cl_fmap_open_memory` + `cl_scanmap_callback`) with mail, archive,
    /// OLE2, PDF, HTML and PE parsing and heuristic alerts for exceeded limits. Blocking.
    public func scan(_ bytes: [UInt8], name: String? = nil) throws -> ClamAVVerdict {
        var options = cl_scan_options()
        options.general = UInt32(CL_SCAN_GENERAL_HEURISTICS)
        options.parse = UInt32(CL_SCAN_PARSE_ARCHIVE | CL_SCAN_PARSE_MAIL | CL_SCAN_PARSE_OLE2 | CL_SCAN_PARSE_PDF
            | CL_SCAN_PARSE_HTML | CL_SCAN_PARSE_PE | CL_SCAN_PARSE_ELF | CL_SCAN_PARSE_XMLDOCS
            | CL_SCAN_PARSE_HWP3 | CL_SCAN_PARSE_SWF | CL_SCAN_PARSE_ONENOTE)
        options.heuristic = UInt32(CL_SCAN_HEURISTIC_EXCEEDS_MAX)
        var virus: UnsafePointer<CChar>? = nil
        var scanned: UInt = 0
        guard !bytes.isEmpty else { return .clean }
        let found = FoundNames()
        let status: cl_error_t = withExtendedLifetime(found) {
            bytes.withUnsafeBytes { raw in
                guard let start = raw.baseAddress, let map = cl_fmap_open_memory(start, raw.count) else { return CL_EMEM }
                defer { cl_fmap_close(map) }
                return cl_scanmap_callback(map, name, &virus, &scanned, engine, &options,
                                           Unmanaged.passUnretained(found).toOpaque())
            }
        }
        switch status {
        case CL_CLEAN: return .clean
        case CL_VIRUS:
            let signature = virus.map { String(cString: $0) } ?? found.names.first
                ?? (UInt64(bytes.count) > limits.maxFileSize ? "Heuristics.Limits.Exceeded.MaxFileSize" : "unknown")
            return .infected(signature: signature)
        default: throw ClamAVError(code: .scanFailed, message: String(cString: cl_strerror(status)))
        }
    }
}
