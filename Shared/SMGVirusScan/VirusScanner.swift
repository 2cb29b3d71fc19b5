public import SMGClamAV
public import SMGYara
public import SMGMIME
public import Logging
import Foundation

/// One engine's finding: which engine, which signature, in which MIME part.
public struct ScanFinding: Sendable, Hashable {
    public var engine: String
    public var signature: String
    /// Part number ("" = the whole message, "2", "3.1.2", …).
    public var part: String
    public var filename: String?
    /// A human name of the part: the file name, else "part 2 (application/zip)".
    public var label: String
}

/// The result of scanning one message with both engines.
public struct ScanReport: Sendable {
    public var findings: [ScanFinding]
    /// Scan limits were hit (zip bomb, oversized part) and `blockLimitsExceeded` is off.
    public var limitsExceeded: [String]
    public var parts: Int
    public var mimeDefects: Int
    public var clamav: ClamAVEngine
    public var yara: YaraRules

    public var infected: Bool { !findings.isEmpty }
}

/// An engine failed or timed out: the message must wait and be tried again (fail closed).
public struct ScanError: Error, CustomStringConvertible, Sendable {
    public var engine: String
    public var message: String
    public var description: String { "\(engine): \(message)" }

    public init(engine: String, message: String) {
        self.engine = engine
        self.message = message
    }
}

/// Runs both engines on a message: ClamAV (libclamav, in process) on the whole raw message with
/// its own mail/archive/OLE2/PDF parsing, and YARA on every decoded MIME part. Infected in
/// either → findings; an engine error → `ScanError`, never a clean verdict.
/// All CPU work runs on dedicated queues, never on Swift's cooperative pool.
public final class VirusScanner: Sendable {
    public static let clamavEngine = "clamav"
    public static let yaraEngine = "yara"

    public let clamav: ClamAVService
    public let yara: YaraRules
    public let mimeLimits: MIMELimits
    /// When a scan limit is exceeded (`Heuristics.Limits.Exceeded.*`): block (default) or pass.
    public let blockLimitsExceeded: Bool
    public let yaraTimeoutSeconds: Int
    let queue = DispatchQueue(label: "smg.scanner.parts", qos: .userInitiated, attributes: .concurrent)

    public init(clamav: ClamAVService, yara: YaraRules, mimeLimits: MIMELimits = MIMELimits(),
                blockLimitsExceeded: Bool = true, yaraTimeoutSeconds: Int = 60) {
        self.clamav = clamav
        self.yara = yara
        self.mimeLimits = mimeLimits
        self.blockLimitsExceeded = blockLimitsExceeded
        self.yaraTimeoutSeconds = yaraTimeoutSeconds
    }

    /// The external variables the shipped rules use.
    public static let yaraExternals = ["filename", "content_type"]

    public func scan(_ body: [UInt8], logger: Logger) async throws -> ScanReport {
        // 1. ClamAV on the whole message (its own MIME, archive, OLE2, PDF parsers).
        let clamVerdict: ClamAVVerdict
        let engine: ClamAVEngine
        do { (clamVerdict, engine) = try await clamav.scan(body, name: "message.eml") } catch {
            throw ScanError(engine: Self.clamavEngine, message: "\(error)")
        }
        // 2. Our MIME parse, and YARA on every decoded part.
        let yara = self.yara, limits = mimeLimits, timeout = yaraTimeoutSeconds
        let (message, yaraResult): (MIMEMessage, Result<[ScanFinding], YaraError>) = await withCheckedContinuation {
            continuation in
            queue.async {
                let message = MIMEParser.parse(body, limits: limits)
                var findings: [ScanFinding] = []
                do {
                    for part in message.leaves where !part.body.isEmpty {
                        let matches = try yara.scan(part.body, variables: [
                            "filename": part.filename ?? "", "content_type": part.mimeType,
                        ], timeoutSeconds: timeout)
                        findings += matches.map {
                            ScanFinding(engine: Self.yaraEngine, signature: $0.rule, part: part.path,
                                        filename: part.filename, label: part.label)
                        }
                    }
                    continuation.resume(returning: (message, .success(findings)))
                } catch let error as YaraError {
                    continuation.resume(returning: (message, .failure(error)))
                } catch {
                    continuation.resume(returning: (message, .failure(YaraError(code: .scanFailed, message: "\(error)"))))
                }
            }
        }
        var findings: [ScanFinding]
        switch yaraResult {
        case .success(let found): findings = found
        case .failure(let error): throw ScanError(engine: Self.yaraEngine, message: "\(error)")
        }
        // 3. Which part did ClamAV object to? Scan the decoded parts to name it (infected mail only).
        var limitsExceeded: [String] = []
        if case .infected(let signature) = clamVerdict {
            if clamVerdict.isLimitExceeded && !blockLimitsExceeded {
                limitsExceeded.append(signature)
                logger.notice("scan limit exceeded; passed by configuration", metadata: ["signature": .string(signature)])
            } else {
                var located: MIMEPart? = nil
                for part in message.leaves where !part.body.isEmpty && message.leaves.count > 1 {
                    if case .infected = try? await clamav.scan(part.body, name: part.filename).0 {
                        located = part
                        break
                    }
                }
                if located == nil, message.leaves.count == 1 { located = message.root.leaves.first }
                findings.insert(ScanFinding(engine: Self.clamavEngine, signature: signature, part: located?.path ?? "",
                                            filename: located?.filename,
                                            label: located?.label ?? "message"), at: 0)
            }
        }
        // 4. Our MIME limits: content YARA did not see. Blocked by default, like ClamAV's limits.
        if message.limitsExceeded {
            let signature = "SMG.MIME.LimitsExceeded"
            if blockLimitsExceeded {
                findings.append(ScanFinding(engine: Self.yaraEngine, signature: signature, part: "",
                                            filename: nil, label: "message"))
            } else {
                limitsExceeded.append(signature)
                logger.notice("MIME limit exceeded; passed by configuration")
            }
        }
        return ScanReport(findings: findings, limitsExceeded: limitsExceeded, parts: message.root.all.count,
                          mimeDefects: message.defects.count, clamav: engine, yara: yara)
    }
}
