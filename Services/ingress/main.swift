import SMGCore
import SMGRuntime
import SMGAccounts
import SMTPServer
import NIOSSL
import Foundation

/// smg-ingress — the SMTP submission server (R1–R8): STARTTLS and implicit TLS, AUTH PLAIN/LOGIN
/// against customer accounts in Redis, per-customer policies (networks, sender domains, TLS,
/// reverse DNS, rate limit, limits), header hygiene, and durable accept.
await ServiceMain.run(program: "smg-ingress", keys: IngressKeys.all) { process in
    let config = process.config
    let tls = try loadTLS(certificate: try config.get(IngressKeys.tlsCertificate), key: try config.get(IngressKeys.tlsKey))
    let producer = try process.makeProducer(topic: Topic.accepted)
    let accounts = AccountStore(redis: process.redis, keys: process.store.keys)
    let window = try config.get(IngressKeys.authFailureWindow).milliseconds / 1000
    let throttle = AuthThrottle(redis: process.redis, keys: process.store.keys,
                                maxPerIP: try config.get(IngressKeys.authFailuresPerIP),
                                maxPerLogin: try config.get(IngressKeys.authFailuresPerLogin), windowSeconds: max(1, window))
    let authenticator = Authenticator(store: accounts, hasher: PasswordHasher(), throttle: throttle)
    // Refusal events go through one bounded buffer and one writer (never a task per refusal).
    let recorder = EventRecorder(process: process)
    let delegate = try IngressDelegate(process: process, producer: producer, authenticator: authenticator,
                                       rateLimiter: RateLimiter(redis: process.redis, keys: process.store.keys),
                                       resolver: try process.makeResolver(), recorder: recorder)

    var smtp = SMTPServerConfiguration(hostname: try config.get(IngressKeys.hostname))
    smtp.maxMessageSize = try config.get(IngressKeys.maxMessageSize)
    smtp.maxRecipients = try config.get(IngressKeys.maxRecipients)
    smtp.maxCommands = try config.get(IngressKeys.maxCommands)
    smtp.maxErrors = try config.get(IngressKeys.maxErrors)
    smtp.commandTimeout = .milliseconds(Int64(try config.get(IngressKeys.commandTimeout).milliseconds))
    smtp.dataTimeout = .milliseconds(Int64(try config.get(IngressKeys.dataTimeout).milliseconds))
    smtp.maxDataDuration = .milliseconds(Int64(try config.get(IngressKeys.maxDataTime).milliseconds))
    // Bare LFs are always stored as CRLF and counted; the delegate refuses the message when the
    // customer's (or the listener's) ingress.bare_newline is `reject`.
    smtp.normalizeBareLineFeeds = true
    smtp.tls = tls
    smtp.authMechanisms = ["PLAIN", "LOGIN"]
    smtp.allowPlaintextAuth = try config.get(IngressKeys.allowPlaintextAuth)
    smtp.requireAuth = try config.get(IngressKeys.requireAuth)
    smtp.dsn = try config.get(IngressKeys.dsn)
    // One budget for all listeners of this process: DATA buffered by all sessions together.
    smtp.inflightBudget = SMTPByteBudget(limit: try config.get(IngressKeys.maxInflightBytes))

    let (host, port) = HostPort.parse(try config.get(IngressKeys.listen))!
    var listeners = [IngressService.Listener(host: host, port: port, configuration: smtp)]
    let implicit = try config.get(IngressKeys.implicitTLSListen)
    if !implicit.isEmpty {
        guard tls != nil else {
            throw ConfigError(key: IngressKeys.implicitTLSListen.name, source: "config",
                              problem: "needs ingress.tls_certificate and ingress.tls_key")
        }
        let (h, p) = HostPort.parse(implicit)!
        var implicitConfiguration = smtp
        implicitConfiguration.implicitTLS = true
        listeners.append(.init(host: h, port: p, configuration: implicitConfiguration))
    }
    try await process.run([recorder, IngressService(process: process, delegate: delegate, listeners: listeners)])
}

/// The TLS context from PEM files; nil when no certificate is configured. TLS 1.2 at least.
func loadTLS(certificate: String, key: String) throws -> NIOSSLContext? {
    if certificate.isEmpty && key.isEmpty { return nil }
    guard !certificate.isEmpty else {
        throw ConfigError(key: IngressKeys.tlsCertificate.name, source: "config", problem: "needed with ingress.tls_key")
    }
    guard !key.isEmpty else {
        throw ConfigError(key: IngressKeys.tlsKey.name, source: "config", problem: "needed with ingress.tls_certificate")
    }
    let chain: [NIOSSLCertificate]
    do { chain = try NIOSSLCertificate.fromPEMFile(certificate) } catch {
        throw ConfigError(key: IngressKeys.tlsCertificate.name, source: certificate, problem: "cannot read PEM certificate: \(error)")
    }
    let privateKey: NIOSSLPrivateKey
    do { privateKey = try NIOSSLPrivateKey(file: key, format: .pem) } catch {
        throw ConfigError(key: IngressKeys.tlsKey.name, source: key, problem: "cannot read PEM private key: \(error)")
    }
    var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                 privateKey: .privateKey(privateKey))
    configuration.minimumTLSVersion = .tlsv12
    do { return try NIOSSLContext(configuration: configuration) } catch {
        throw ConfigError(key: IngressKeys.tlsCertificate.name, source: certificate, problem: "TLS setup failed: \(error)")
    }
}
