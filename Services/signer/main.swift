import SMGCore
import SMGRuntime
import SMGStore

/// smg-signer — SKELETON for DKIM. Consumes `mail.classified` and routes each message to
/// `mail.outbound.good` or `mail.outbound.bad` by the lane the classifier recorded. A message
/// without a lane, or with an unknown one, goes to the bad lane: spam must never leave through
/// good egress by accident. DKIM signing (R12) comes with its own issue; until then the `signed`
/// event says `signed: false`.
struct RoutingSigner: StageWorker {
    func process(_ message: StoredMessage, context: StageContext) async throws -> StageOutcome {
        let lane = message.fields["lane"].flatMap(Lane.init(rawValue:)) ?? .bad
        return StageOutcome(
            events: [context.event(EventType.signed, id: message.id,
                                   facts: ["signed": false, "reason": "skeleton: no DKIM yet",
                                           "lane": .string(lane.rawValue)])],
            transition: .forward(topic: lane.topic,
                                 redriveAfterMilliseconds: context.settings.redriveAfter.milliseconds))
    }
}

await ServiceMain.run(program: "smg-signer", keys: StageKeys.all) { process in
    let settings = try StageSettings(name: "signer", inputTopic: Topic.classified,
                                     outputTopics: [Topic.outboundGood, Topic.outboundBad], config: process.config)
    try await process.run([StageRunner(process: process, settings: settings, worker: RoutingSigner())])
}
