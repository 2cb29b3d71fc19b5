import SMGCore
import SMGRuntime
import SMGStore
import SMGNDR
import SMTPProtocol
import SMGVirusScan
import SMGClamAV
import SMGYara
import ServiceLifecycle
import Metrics
import Foundation

/// The scanner stage: both engines on every message.
///
/// - clean in both → `scanned.clean` (engines, versions, database version), forwarded to `mail.scanned`;
/// - infected in either → `scanned.infected` (engine, signature, MIME part, file name), every open
///   recipient `bounced`, an NDR into the pipeline (`ndr.sent`), the message is done — never delivered;
/// - an engine error or timeout → `scanner.error`, and the message stays in this stage and is tried
///   again after `stage.retry_delay` (fail closed: never passed on unscanned).
struct ScanWorker: StageWorker {
    let scanner: VirusScanner
    let ndr: NDRSender
    let infected = Counter(label: "smg_scanner_infected_total")

    func process(_ message: StoredMessage, context: StageContext) async throws -> StageOutcome {
        let id = message.id
        let report: ScanReport
        do {
            report = try await scanner.scan(message.body, logger: context.logger)
        } catch let error as ScanError {
            Counter(label: "smg_scanner_errors_total", dimensions: [("engine", error.engine)]).increment()
            context.logger.error("scan failed; message held for retry (fail closed)", metadata: [
                "engine": .string(error.engine), "error": .string(error.message),
            ])
            let retry = context.settings.retryDelay.milliseconds
            return StageOutcome(
                events: [context.event(EventType.scannerError, id: id, facts: [
                    "engine": .string(error.engine), "error": .string(error.message), "retry_after_ms": .int(retry),
                ])],
                transition: .retry(afterMilliseconds: retry))
        }
        var facts: [String: JSONValue] = [
            "engines": [.string(VirusScanner.clamavEngine), .string(VirusScanner.yaraEngine)],
            "versions": ["clamav": .string(ClamAVEngine.libraryVersion), "yara": .string(YaraRules.libraryVersion)],
            "clamav_db_version": .int(report.clamav.databaseVersion),
            "clamav_signatures": .int(report.clamav.signatureCount),
            "clamav_db_loaded": .string(Timestamp.format(report.clamav.loadedAt)),
            "yara_rules": .int(report.yara.ruleCount),
            "parts": .int(report.parts), "mime_defects": .int(report.mimeDefects),
        ]
        if !report.limitsExceeded.isEmpty { facts["limits_exceeded"] = .array(report.limitsExceeded.map { .string($0) }) }
        guard let first = report.findings.first else {
            return StageOutcome(
                events: [context.event(EventType.scannedClean, id: id, facts: facts)],
                transition: .forward(topic: Topic.scanned, redriveAfterMilliseconds: context.settings.redriveAfter.milliseconds))
        }

        infected.increment()
        facts["engine"] = .string(first.engine)
        facts["signature"] = .string(first.signature)
        facts["part"] = .string(first.part)
        facts["part_label"] = .string(first.label)
        if let filename = first.filename { facts["filename"] = .string(filename) }
        facts["findings"] = .array(report.findings.map { f in
            var o: [String: JSONValue] = ["engine": .string(f.engine), "signature": .string(f.signature),
                                          "part": .string(f.part)]
            if let name = f.filename { o["filename"] = .string(name) }
            return .object(o)
        })
        context.logger.warning("virus found; message rejected", metadata: [
            "engine": .string(first.engine), "signature": .string(first.signature), "part": .string(first.label),
        ])
        let reply = SMTPReply.virusFound(signature: first.signature, part: first.label, engine: first.engine).description
        var events = [context.event(EventType.scannedInfected, id: id, facts: facts)]
        let reason = "a virus was found: \(first.signature) in \(first.label) (found by \(first.engine))."
            + " The message was not delivered to any recipient."
        let bounce = context.bounceOpenRecipients(of: message, reply: reply, status: "5.7.1", reason: "virus", ndr: ndr,
                                                  kind: NDRSender.virusKind, ndrReason: reason)
        events += bounce.events
        let fields = bounce.fields, newMessages = bounce.newMessages
        return StageOutcome(events: events, fields: fields, newMessages: newMessages, transition: .done)
    }
}

/// Checks the signature folder every `interval` and swaps in a new engine when it changed.
struct SignatureReloader: Service {
    let clamav: ClamAVService
    let interval: Duration

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                await clamav.reloadIfChanged()
            }
        }
    }
}
