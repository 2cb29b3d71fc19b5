import SMGRuntime
import SMGNDR

/// smg-admin — the operators' web interface and JSON API (R20, R22). See README.md.
await ServiceMain.run(program: "smg-admin", keys: AdminKeys.all + DNSKeys.all + NDRKeys.all,
                      check: { _ = try AdminServer.listener($0) }) { process in
    let application = try AdminServer.application(process: process)
    try await process.run([application])
}
