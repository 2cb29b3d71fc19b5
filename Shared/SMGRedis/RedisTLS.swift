internal import NIOCore
internal import NIOSSL
import SMGSync

/// TLS for a Redis endpoint (`rediss://`, `rediss+sentinel://`): whom to trust, which client
/// certificate to show, and which name to check the server's certificate against.
///
/// Made once (reading and checking the PEM files, building the TLS context), then shared by every
/// connection of an endpoint; the files are not read again (a rotated CA or client certificate
/// takes a restart). A bare `rediss://` URL gets the system's roots, loaded at the first connect
/// (so a host without a system CA bundle can still parse the URL and set `caFile`).
///
/// Hostname verification is always on: the server's certificate must be valid for `serverName`,
/// or for the host connected to (a DNS name, or an IP address in the certificate's subjectAltName).
///
/// Equality and hashing look at the settings only (the paths and the server name).
public struct RedisTLS: Sendable, Hashable, CustomStringConvertible {
    /// Which setting a `SetupError` is about, so the caller can name its own configuration key.
    public enum Setting: String, Sendable {
        case caFile, certificate, key, serverName
    }

    /// A setting that cannot be used: unreadable file, no PEM in it, a key without its
    /// certificate, a key that does not belong to the certificate, an IP as server name.
    public struct SetupError: Error, CustomStringConvertible, Sendable {
        public var setting: Setting
        public var problem: String
        public init(_ setting: Setting, _ problem: String) {
            self.setting = setting
            self.problem = problem
        }
        public var description: String { "\(setting.rawValue): \(problem)" }
    }

    /// PEM bundle of the CAs to trust; nil = the system's roots.
    public let caFile: String?
    /// PEM client certificate (chain) for servers with `tls-auth-clients yes`; nil = none.
    public let certificateFile: String?
    /// PEM private key of `certificateFile`.
    public let keyFile: String?
    /// The name sent as SNI and checked against the server's certificate; nil = the host connected to.
    public let serverName: String?
    /// The TLS context, built once; thread-safe.
    private let box: ContextBox

    /// Reads and checks the files now. Empty strings count as not set.
    /// - Throws: `SetupError` naming the setting at fault.
    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil,
                serverName: String? = nil) throws {
        func set(_ s: String?) -> String? { s.flatMap { $0.isEmpty ? nil : $0 } }
        self.caFile = set(caFile)
        self.certificateFile = set(certificateFile)
        self.keyFile = set(keyFile)
        self.serverName = set(serverName)
        if let name = self.serverName, Self.isIPAddress(name) {
            throw SetupError(.serverName, "must be a DNS name (an IP address is checked against the address connected to)")
        }
        var config = Self.baseConfiguration()
        if let caFile = self.caFile {
            config.trustRoots = .certificates(try Self.certificates(caFile, .caFile))
        }
        switch (self.certificateFile, self.keyFile) {
        case (nil, nil):
            break
        case (.some, nil):
            throw SetupError(.key, "a client certificate needs its private key too")
        case (nil, .some):
            throw SetupError(.certificate, "a private key needs its client certificate too")
        case (.some(let certFile), .some(let keyFile)):
            let chain = try Self.certificates(certFile, .certificate)
            let key = try Self.privateKey(keyFile)
            config.certificateChain = chain.map { .certificate($0) }
            config.privateKey = .privateKey(key)
        }
        box = ContextBox(config)
        do {
            _ = try box.context()
        } catch {
            // BoringSSL refuses a key that does not belong to the certificate here.
            if let keyFile = self.keyFile, let certFile = self.certificateFile {
                throw SetupError(.key, "\(keyFile) cannot be used with the certificate in \(certFile) (not its key?): \(error)")
            }
            throw SetupError(.caFile, "cannot build the TLS context: \(error)")
        }
    }

    /// `rediss://` without settings: the system's roots (loaded at the first connect), the host's name.
    init(systemDefaults: Void) {
        caFile = nil
        certificateFile = nil
        keyFile = nil
        serverName = nil
        box = ContextBox(Self.baseConfiguration())
    }

    /// The TLS context. Only a `systemDefaults` one can fail here (no system CA bundle).
    func context() throws(RedisError) -> NIOSSLContext {
        do { return try box.context() } catch {
            throw RedisError(.connection, "TLS: cannot load the trust roots (\(caFile ?? "the system's; set a CA file")): \(error)",
                             commandNotSent: true)
        }
    }

    private static func baseConfiguration() -> TLSConfiguration {
        var config = TLSConfiguration.makeClientConfiguration()
        config.minimumTLSVersion = .tlsv12
        config.certificateVerification = .fullVerification
        // When the relay closes, wait at most this long for the server's close_notify.
        config.shutdownTimeout = .seconds(1)
        return config
    }

    /// Builds the context on first use and keeps it (a failure is kept too: files are read once).
    private final class ContextBox: Sendable {
        private let configuration: TLSConfiguration
        private let built = Locked<Result<NIOSSLContext, any Error>?>(nil)

        init(_ configuration: TLSConfiguration) { self.configuration = configuration }

        func context() throws -> NIOSSLContext {
            try built.withLock { built in
                if let built { return try built.get() }
                let result = Result { try NIOSSLContext(configuration: configuration) }
                built = result
                return try result.get()
            }
        }
    }

    public static func == (a: RedisTLS, b: RedisTLS) -> Bool {
        a.caFile == b.caFile && a.certificateFile == b.certificateFile && a.keyFile == b.keyFile
            && a.serverName == b.serverName
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(caFile)
        hasher.combine(certificateFile)
        hasher.combine(keyFile)
        hasher.combine(serverName)
    }

    public var description: String {
        "TLS(ca: \(caFile ?? "system roots"), client certificate: \(certificateFile ?? "none")"
            + (serverName.map { ", server name: \($0)" } ?? "") + ")"
    }

    /// The name for SNI and hostname verification when connecting to `host`; nil when that is an
    /// IP address (no SNI; the certificate must then name that address).
    func verificationName(connectingTo host: String) -> String? {
        if let serverName { return serverName }
        return Self.isIPAddress(host) ? nil : host
    }

    // MARK: - checks usable by configuration keys (nil = fine)

    /// Whether `path` is a readable PEM file with at least one certificate.
    public static func problemWithCertificateFile(_ path: String) -> String? {
        do { _ = try certificates(path, .caFile) } catch { return error.problem }
        return nil
    }

    /// Whether `path` is a readable PEM private key (without a passphrase).
    public static func problemWithKeyFile(_ path: String) -> String? {
        do { _ = try privateKey(path) } catch { return error.problem }
        return nil
    }

    // MARK: - internals

    private static func certificates(_ path: String, _ setting: Setting) throws(SetupError) -> [NIOSSLCertificate] {
        let certs: [NIOSSLCertificate]
        do { certs = try NIOSSLCertificate.fromPEMFile(path) } catch {
            throw SetupError(setting, "cannot read certificates (PEM) from \(path): \(error)")
        }
        guard !certs.isEmpty else { throw SetupError(setting, "no PEM certificate in \(path)") }
        return certs
    }

    private static func privateKey(_ path: String) throws(SetupError) -> NIOSSLPrivateKey {
        do { return try NIOSSLPrivateKey(file: path, format: .pem) } catch {
            throw SetupError(.key, "cannot read a private key (PEM, without passphrase) from \(path): \(error)")
        }
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}
