import SMGCore
import SMGRuntime
import SMGNDR
import SMGVirusScan
import SMGClamAV
import SMGYara
import SMGMIME

/// smg-scanner: consumes `mail.accepted`, scans every message with ClamAV and YARA
/// (see ScanWorker), and hands clean messages on to `mail.scanned`.
await ServiceMain.run(program: "smg-scanner", keys: StageKeys.all + ScannerKeys.all) { process in
    let config = process.config
    let settings = try StageSettings(name: "scanner", inputTopic: Topic.accepted, outputTopics: [Topic.scanned],
                                     config: config)
    let limits = ClamAVLimits(
        maxScanSize: UInt64(try config.get(ScannerKeys.maxScanSize)),
        maxFileSize: UInt64(try config.get(ScannerKeys.maxFileSize)),
        maxRecursion: UInt32(try config.get(ScannerKeys.maxRecursion)),
        maxFiles: UInt32(try config.get(ScannerKeys.maxFiles)),
        temporaryDirectory: try config.get(ScannerKeys.temporaryDirectory))
    let timeout = try config.get(ScannerKeys.timeout)
    let clamav = ClamAVService(databaseDirectory: try config.get(ScannerKeys.database), limits: limits,
                               timeout: timeout, slots: try config.get(ScannerKeys.scanSlots),
                               logger: process.logger)
    // Without signatures the scanner still runs, but holds every message until they load (fail closed).
    await clamav.reloadIfChanged()
    let rulesFile = try config.get(ScannerKeys.yaraRules)
    let yara: YaraRules
    do {
        yara = try YaraRules(file: rulesFile, externals: VirusScanner.yaraExternals, logger: process.logger)
    } catch {
        throw ConfigError(key: ScannerKeys.yaraRules.name, source: rulesFile, problem: "\(error)")
    }
    let scanner = VirusScanner(
        clamav: clamav, yara: yara,
        mimeLimits: MIMELimits(maxDepth: try config.get(ScannerKeys.mimeMaxDepth),
                               maxParts: try config.get(ScannerKeys.mimeMaxParts),
                               maxDecodedBytes: try config.get(ScannerKeys.mimeMaxDecoded)),
        blockLimitsExceeded: try config.get(ScannerKeys.blockLimitsExceeded),
        yaraTimeoutSeconds: max(1, Int(timeout.components.seconds)))
    let worker = ScanWorker(scanner: scanner, ndr: try NDRSender(config: config, site: process.site, instance: process.instance))
    let redis = process.redis
    try await process.run([
        try StageRunner(process: process, settings: settings, worker: worker),
        SignatureReloader(clamav: clamav, interval: try config.get(ScannerKeys.reloadInterval)),
    ], health: {
        // Unhealthy without signatures: messages are held (fail closed) until they load.
        guard let engine = clamav.engine else { return (false, "clamav: no signatures (\(clamav.lastError ?? "not loaded"))") }
        do { _ = try await redis.command("PING") } catch { return (false, "redis: \(error)") }
        return (true, "clamav \(engine.signatureCount) signatures (db \(engine.databaseVersion)), yara \(yara.ruleCount) rules")
    })
}
