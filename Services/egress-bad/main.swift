import SMGCore
import SMGRuntime
import SMGDelivery

/// smg-egress-bad — delivers messages of the bad lane (`mail.outbound.bad`) with its own
/// source address and HELO name. Same engine as the other egress, another configuration.
await ServiceMain.run(program: "smg-egress-bad", keys: StageKeys.all + DeliveryKeys.all) { process in
    try await process.run(try DeliveryWorker.services(lane: .bad, process: process))
}
