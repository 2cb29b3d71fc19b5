import SMGCore
import SMGRuntime
import SMTPServer

/// smg-ingress — the SMTP submission server (R1–R8). This is the minimal ingress of the walking
/// skeleton: ESMTP, size and recipient limits, a listener-wide network allowlist, durable accept.
/// Authentication and customer policies come with their own issue.
await ServiceMain.run(program: "smg-ingress", keys: IngressKeys.all) { process in
    let producer = try process.makeProducer(topic: Topic.accepted)
    let delegate = try IngressDelegate(process: process, producer: producer)
    let (host, port) = HostPort.parse(try process.config.get(IngressKeys.listen))!
    var configuration = SMTPServerConfiguration(hostname: try process.config.get(IngressKeys.hostname))
    configuration.maxMessageSize = try process.config.get(IngressKeys.maxMessageSize)
    configuration.maxRecipients = try process.config.get(IngressKeys.maxRecipients)
    try await process.run([IngressService(process: process, delegate: delegate, configuration: configuration,
                                          host: host, port: port)])
}
