import SMGCore
import SMGRuntime
import SMGStore

/// smg-classifier — SKELETON. Consumes `mail.scanned`, records `classified` with category
/// `unclassified` and lane `good`, and hands the message on to `mail.classified`. The spam
/// engine (R10, R11) comes with its own issue; the lane field is already what the signer routes by.
struct PassThroughClassifier: StageWorker {
    func process(_ message: StoredMessage, context: StageContext) async throws -> StageOutcome {
        let lane = Lane.good
        return StageOutcome(
            events: [context.event(EventType.classified, id: message.id,
                                   facts: ["category": "unclassified", "score": 0, "lane": .string(lane.rawValue),
                                           "note": "skeleton: no spam engine yet"])],
            fields: ["lane": lane.rawValue, "category": "unclassified"],
            transition: .forward(topic: Topic.classified,
                                 redriveAfterMilliseconds: context.settings.redriveAfter.milliseconds))
    }
}

await ServiceMain.run(program: "smg-classifier", keys: StageKeys.all) { process in
    let settings = try StageSettings(name: "classifier", inputTopic: Topic.scanned, outputTopics: [Topic.classified],
                                     config: process.config)
    try await process.run([try StageRunner(process: process, settings: settings, worker: PassThroughClassifier())])
}
