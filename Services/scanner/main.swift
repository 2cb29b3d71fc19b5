import SMGCore
import SMGRuntime
import SMGStore

/// smg-scanner — SKELETON. Consumes `mail.accepted`, records `scanned.passthrough` and hands the
/// message on to `mail.scanned`. The two virus engines (R9) come with issue 5; until then this
/// stage scans nothing, and its event says so.
struct PassThroughScanner: StageWorker {
    func process(_ message: StoredMessage, context: StageContext) async throws -> StageOutcome {
        StageOutcome(
            events: [context.event("scanned.passthrough", id: message.id,
                                   facts: ["engines": [], "note": "skeleton: no virus engine yet"])],
            transition: .forward(topic: Topic.scanned,
                                 redriveAfterMilliseconds: context.settings.redriveAfter.milliseconds))
    }
}

await ServiceMain.run(program: "smg-scanner", keys: StageKeys.all) { process in
    let settings = try StageSettings(name: "scanner", inputTopic: Topic.accepted, outputTopics: [Topic.scanned],
                                     config: process.config)
    try await process.run([StageRunner(process: process, settings: settings, worker: PassThroughScanner())])
}
