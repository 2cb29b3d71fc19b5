import SMGCore
import SMGRuntime
import SMGDelivery
import SMGNDR
import SMGStore
import SMGAccounts

/// smg-egress-bad — delivers messages of the bad lane (`mail.outbound.bad`) with its own
/// source address and HELO name. Same engine as the other egress, another configuration.
await ServiceMain.run(program: "smg-egress-bad", keys: StageKeys.all + DeliveryKeys.all) { process in
    let settings = try StageSettings(name: "egress-bad", inputTopic: Lane.bad.topic, outputTopics: [],
                                     config: process.config, leaseKey: DeliveryKeys.lease,
                                     lifetimeKey: DeliveryKeys.maxLifetime, expireRetries: false)
    let worker = try DeliveryWorker(
        lane: .bad, config: process.config,
        ndr: try NDRSender(config: process.config, site: process.site, instance: process.instance),
        resolver: try process.makeResolver(),
        poolStore: SourcePoolStore(redis: process.store.redis, keys: process.store.keys),
        brakes: BrakeStore(redis: process.store.redis, keys: process.store.keys))
    try await process.run([try StageRunner(process: process, settings: settings, worker: worker)])
}
