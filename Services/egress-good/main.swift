import SMGCore
import SMGRuntime
import SMGDelivery
import SMGNDR
import SMGStore
import SMGAccounts

/// smg-egress-good — delivers messages of the good lane (`mail.outbound.good`) with its own
/// source address and HELO name. Same engine as the other egress, another configuration.
await ServiceMain.run(program: "smg-egress-good", keys: StageKeys.all + DeliveryKeys.all) { process in
    let settings = try StageSettings(name: "egress-good", inputTopic: Lane.good.topic, outputTopics: [],
                                     config: process.config, leaseKey: DeliveryKeys.lease,
                                     lifetimeKey: DeliveryKeys.maxLifetime, expireRetries: false)
    let worker = try DeliveryWorker(
        lane: .good, config: process.config,
        ndr: try NDRSender(config: process.config, site: process.site, instance: process.instance),
        resolver: try process.makeResolver(),
        poolStore: SourcePoolStore(redis: process.store.redis, keys: process.store.keys),
        brakes: BrakeStore(redis: process.store.redis, keys: process.store.keys))
    try await process.run([try StageRunner(process: process, settings: settings, worker: worker)])
}
