internal import CYara
public import Logging
import SMGSync
import Foundation

/// Errors of the YARA engine, with a code callers can switch on.
public struct YaraError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public static let initFailed = Code(name: "init failed")
        public static let compileFailed = Code(name: "rule compile failed")
        public static let scanFailed = Code(name: "scan failed")
        public static let timeout = Code(name: "scan timed out")
        public var description: String { name }
    }
    public var code: Code
    public var message: String
    public var description: String { "yara \(code): \(message)" }

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }
}

/// A rule that matched, with its `description` meta when the rule has one.
public struct YaraMatch: Sendable, Hashable {
    public var rule: String
    public var description: String?
}

/// A compiled YARA rule set (`YR_RULES`), owned by this object and destroyed in deinit.
///
/// Thread rules (libyara docs, "Scanning data"): compiled rules may be used by several threads at
/// once, each with its own `YR_SCANNER` (up to YR_MAX_THREADS = 32 concurrent scans); a scanner
/// holds the per-scan external variables. `scan` makes one scanner per call and blocks: call it
/// from a dedicated thread, never from Swift's cooperative pool.
public final class YaraRules: @unchecked Sendable {
    let rules: UnsafeMutablePointer<YR_RULES>
    /// String external variables every rule may use (set per scan; "" when not given).
    public let externals: [String]
    public let ruleCount: Int

    /// The libyara version this module was built against.
    public static var libraryVersion: String { "\(YR_MAJOR_VERSION).\(YR_MINOR_VERSION).\(YR_MICRO_VERSION)" }

    private static let initResult: Int32 = yr_initialize()

    /// Compiles `source` (the text of one or more rule files) once. `externals` declares string
    /// variables (e.g. `filename`) the rules can test. Partial state is freed on every error.
    public init(source: String, externals: [String] = [], logger: Logger) throws {
        guard YaraRules.initResult == ERROR_SUCCESS else {
            throw YaraError(code: .initFailed, message: "yr_initialize: error \(YaraRules.initResult)")
        }
        var compiler: UnsafeMutablePointer<YR_COMPILER>? = nil
        guard yr_compiler_create(&compiler) == ERROR_SUCCESS, let compiler else {
            throw YaraError(code: .initFailed, message: "yr_compiler_create failed")
        }
        defer { yr_compiler_destroy(compiler) }
        let messages = CompileMessages()
        let box = Unmanaged.passUnretained(messages).toOpaque()
        yr_compiler_set_callback(compiler, { level, file, line, _, message, user in
            guard let user, let message else { return }
            let box = Unmanaged<CompileMessages>.fromOpaque(user).takeUnretainedValue()
            let kind = level == YARA_ERROR_LEVEL_ERROR ? "error" : "warning"
            box.lines.append("\(kind) line \(line): \(String(cString: message))")
            _ = file
        }, box)
        for name in externals {
            guard yr_compiler_define_string_variable(compiler, name, "") == ERROR_SUCCESS else {
                throw YaraError(code: .compileFailed, message: "cannot declare external \(name)")
            }
        }
        let errors = yr_compiler_add_string(compiler, source, nil)
        guard errors == 0 else {
            throw YaraError(code: .compileFailed, message: messages.lines.joined(separator: "; "))
        }
        var rules: UnsafeMutablePointer<YR_RULES>? = nil
        guard yr_compiler_get_rules(compiler, &rules) == ERROR_SUCCESS, let rules else {
            throw YaraError(code: .compileFailed, message: "yr_compiler_get_rules failed")
        }
        self.rules = rules
        self.externals = externals
        var count = 0
        var rule = rules.pointee.rules_table
        while let r = rule, (UInt32(r.pointee.flags) & UInt32(RULE_FLAGS_NULL)) == 0 {
            count += 1
            rule = r + 1
        }
        ruleCount = count
        for warning in messages.lines { logger.warning("yara rule compiler", metadata: ["message": .string(warning)]) }
        logger.info("yara rules compiled", metadata: ["rules": "\(count)", "libyara": .string(YaraRules.libraryVersion)])
    }

    /// Compiles the rule file at `path`.
    public convenience init(file path: String, externals: [String] = [], logger: Logger) throws {
        let source: String
        do { source = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw YaraError(code: .compileFailed, message: "cannot read \(path): \(error.localizedDescription)")
        }
        try self.init(source: source, externals: externals, logger: logger)
    }

    deinit { yr_rules_destroy(rules) }

    final class CompileMessages {
        var lines: [String] = []
    }

    final class Matches {
        var matches: [YaraMatch] = []
    }

    /// Scans `bytes` with every rule; `variables` sets the declared externals for this scan.
    /// Blocking; `timeoutSeconds` bounds the scan (libyara checks it during the scan).
    public func scan(_ bytes: [UInt8], variables: [String: String] = [:], timeoutSeconds: Int = 60) throws
        -> [YaraMatch]
    {
        var scanner: UnsafeMutablePointer<YR_SCANNER>? = nil
        guard yr_scanner_create(rules, &scanner) == ERROR_SUCCESS, let scanner else {
            throw YaraError(code: .scanFailed, message: "yr_scanner_create failed")
        }
        defer { yr_scanner_destroy(scanner) }
        for name in externals {
            let value = variables[name] ?? ""
            guard yr_scanner_define_string_variable(scanner, name, value) == ERROR_SUCCESS else {
                throw YaraError(code: .scanFailed, message: "cannot set external \(name)")
            }
        }
        let found = Matches()
        yr_scanner_set_callback(scanner, { _, message, data, user in
            if message == CALLBACK_MSG_RULE_MATCHING, let data, let user {
                let found = Unmanaged<Matches>.fromOpaque(user).takeUnretainedValue()
                let name = smg_yr_rule_identifier(data).map { String(cString: $0) } ?? "unknown"
                let description = smg_yr_rule_meta_string(data, "description").map { String(cString: $0) }
                found.matches.append(YaraMatch(rule: name, description: description))
            }
            return CALLBACK_CONTINUE
        }, Unmanaged.passUnretained(found).toOpaque())
        yr_scanner_set_timeout(scanner, Int32(max(1, timeoutSeconds)))
        // The buffer is our own memory, not a mapped file that could shrink under the scan, so
        // YARA's SIGSEGV/SIGBUS guard (two sigaction pairs per scanned part) buys nothing.
        yr_scanner_set_flags(scanner, Int32(SCAN_FLAGS_NO_TRYCATCH))
        let status: Int32 = withExtendedLifetime(found) {
            bytes.withUnsafeBufferPointer { buffer in
                yr_scanner_scan_mem(scanner, buffer.baseAddress, buffer.count)
            }
        }
        switch status {
        case ERROR_SUCCESS: return found.matches
        case ERROR_SCAN_TIMEOUT: throw YaraError(code: .timeout, message: "scan took longer than \(timeoutSeconds)s")
        default: throw YaraError(code: .scanFailed, message: "yr_scanner_scan_mem: error \(status)")
        }
    }
}
