import SMGCore
import SMGRuntime
import SMGDelivery

/// smg-egress-good — delivers messages of the good lane (`mail.outbound.good`) with its own
/// source address and HELO name. Same engine as the other egress, another configuration.
await ServiceMain.run(program: "smg-egress-good", keys: StageKeys.all + DeliveryKeys.all) { process in
    try await process.run(try DeliveryWorker.services(lane: .good, process: process))
}
