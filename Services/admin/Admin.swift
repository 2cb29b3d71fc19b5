import Hummingbird
import HummingbirdTLS
import NIOSSL
import NIOCore
import Logging
import SMGAdmin
import SMGAccounts
import SMGCore
import SMGConfig
import SMGDKIMKeys
import SMGDNS
import SMGRedis
import SMGRuntime
import SMGStore
import Foundation

enum AdminKeys {
    static let listen = ConfigKey<String>.string(
        "admin.listen", default: "127.0.0.1:8443",
        help: "host:port of the web interface and API. Other than loopback only with admin.tls_certificate.")
    static let certificate = ConfigKey<String>.string(
        "admin.tls_certificate", default: "", help: "PEM certificate chain (e.g. the gateway's); set: HTTPS only.")
    static let key = ConfigKey<String>.string(
        "admin.tls_key", default: "", help: "PEM private key of admin.tls_certificate.", secret: false)
    static let sessionIdle = ConfigKey.duration(
        "admin.session_idle", default: "30m", min: .seconds(1), max: .seconds(86400),
        help: "A web session ends after this long without a request.")
    static let sessionMax = ConfigKey.duration(
        "admin.session_max", default: "12h", min: .seconds(1), max: .seconds(7 * 86400),
        help: "A web session ends this long after the login in any case.")
    static let loginAttempts = ConfigKey<Int>.int(
        "admin.login_attempts", default: 5, range: 1...1000,
        help: "Failed logins per client IP or operator name within admin.login_window before logins are refused (429).")
    static let loginWindow = ConfigKey.duration(
        "admin.login_window", default: "15m", min: .seconds(1), max: .seconds(86400), help: "The window of admin.login_attempts.")
    static let masterKeyFile = ConfigKey<String>.string(
        "dkim.master_key_file", default: "",
        help: "The DKIM master key file (as the signer's); needed to generate and rotate keys here.")

    static let all: [AnyConfigKey] = [listen.erased, certificate.erased, key.erased, sessionIdle.erased, sessionMax.erased,
                                      loginAttempts.erased, loginWindow.erased, masterKeyFile.erased]
}

/// Everything a route needs: the stores (the same module code `smgctl` calls), the process's
/// event log, and the audit trail.
struct Admin: Sendable {
    let process: GatewayProcess
    let redis: RedisClient
    let keys: Keyspace
    let accounts: AccountStore
    let operators: OperatorStore
    let sessions: SessionStore
    let throttle: LoginThrottle
    let audit: AuditLog
    let hasher: PasswordHasher
    let masterKey: DKIMMasterKey?
    let resolver: DNSResolver
    let secureCookies: Bool
    let sessionIdle: Duration

    init(process: GatewayProcess, secureCookies: Bool) throws {
        let config = process.config
        self.process = process
        redis = process.redis
        keys = process.store.keys
        accounts = AccountStore(redis: redis, keys: keys)
        operators = OperatorStore(redis: redis, keys: keys)
        sessionIdle = try config.get(AdminKeys.sessionIdle)
        sessions = SessionStore(redis: redis, keys: keys, idle: sessionIdle, maximum: try config.get(AdminKeys.sessionMax))
        throttle = LoginThrottle(redis: redis, keys: keys, limit: try config.get(AdminKeys.loginAttempts),
                                 window: try config.get(AdminKeys.loginWindow))
        audit = AuditLog(redis: redis, keys: keys)
        hasher = PasswordHasher()
        let masterPath = try config.get(AdminKeys.masterKeyFile)
        if masterPath.isEmpty {
            masterKey = nil
            process.logger.warning("dkim.master_key_file is not set: DKIM keys can be listed and checked, not generated")
        } else {
            do { masterKey = try DKIMMasterKey.load(path: masterPath) } catch {
                throw ConfigError(key: AdminKeys.masterKeyFile.name, source: "config", problem: "\(error)")
            }
        }
        resolver = try process.makeResolver(cache: nil)
        self.secureCookies = secureCookies
    }

    /// Records a change: the audit stream and the event log (taps see it). Secrets never go in.
    func audited(_ principal: Principal, _ action: String, target: String, before: JSONValue? = nil, after: JSONValue? = nil) async {
        let event = audit.event(by: principal, action: action, target: target, before: before, after: after,
                                site: process.site, process: process.instance)
        do {
            try await audit.append(event)
            try await process.record([event])
        } catch {
            process.logger.error("audit event not recorded", metadata: ["action": "\(action)", "target": "\(target)", "error": "\(error)"])
        }
        process.logger.info("change", metadata: ["operator": "\(principal.name)", "action": "\(action)", "target": "\(target)"])
    }
}

/// Builds the HTTP(S) server: middleware (security headers, errors, auth) and every route group.
enum AdminServer {
    struct Listener {
        var host: String
        var port: Int
        var certificate: String
        var key: String
    }

    /// The listen address and TLS files, checked together: a listen address other than loopback
    /// needs TLS (no operator password crosses a network in clear).
    static func listener(_ config: Config) throws -> Listener {
        let listen = try config.get(AdminKeys.listen)
        guard let (host, port) = HostPort.parse(listen) else {
            throw ConfigError(key: AdminKeys.listen.name, source: "config", problem: "\"\(listen)\" is not host:port")
        }
        let certificate = try config.get(AdminKeys.certificate), keyFile = try config.get(AdminKeys.key)
        let loopback = ["::1", "localhost"].contains(host) || host.hasPrefix("127.")
        if certificate.isEmpty != keyFile.isEmpty {
            throw ConfigError(key: certificate.isEmpty ? AdminKeys.certificate.name : AdminKeys.key.name, source: "config",
                              problem: "admin.tls_certificate and admin.tls_key go together")
        }
        if certificate.isEmpty && !loopback {
            throw ConfigError(key: AdminKeys.listen.name, source: "config",
                              problem: "\(listen) is not loopback: set admin.tls_certificate and admin.tls_key (no passwords over plain HTTP)")
        }
        return Listener(host: host, port: port, certificate: certificate, key: keyFile)
    }

    static func application(process: GatewayProcess) throws -> some ApplicationProtocol {
        let listener = try listener(process.config)
        let (host, port, certificate, keyFile) = (listener.host, listener.port, listener.certificate, listener.key)
        let listen = "\(host):\(port)"
        let admin = try Admin(process: process, secureCookies: true)
        let router = Router(context: AdminContext.self)
        router.add(middleware: SecurityHeadersMiddleware())
        router.add(middleware: ErrorMiddleware())
        router.add(middleware: AuthMiddleware(admin: admin))
        admin.sessionRoutes(router)
        admin.customerRoutes(router)
        admin.registerMoreRoutes(router)
        let configuration = ApplicationConfiguration(address: .hostname(host, port: port), serverName: "smg-admin")
        var logger = process.logger
        logger.logLevel = max(logger.logLevel, .notice)
        if certificate.isEmpty {
            process.logger.notice("admin listening", metadata: ["url": "http://\(listen)/"])
            return Application(router: router, server: .http1(), configuration: configuration, logger: logger)
        }
        let tls: TLSConfiguration
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
            tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        } catch {
            throw ConfigError(key: AdminKeys.certificate.name, source: "config", problem: "cannot load \(certificate) / \(keyFile): \(error)")
        }
        process.logger.notice("admin listening", metadata: ["url": "https://\(listen)/"])
        return Application(router: router, server: try .tls(.http1(), tlsConfiguration: tls), configuration: configuration, logger: logger)
    }
}
