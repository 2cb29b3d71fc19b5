import NIOCore
import NIOSSL
import X509
import Crypto
import Foundation
import SMGCore

/// What a TLS session to a next hop turned out to be; recorded in `delivery.attempt` and
/// `delivered` events (R13).
public struct TLSReport: Sendable, Hashable {
    /// `TLSv1.3`, `TLSv1.2`, …
    public var version: String
    /// IANA name of the negotiated cipher suite (read from the server's ServerHello).
    public var cipher: String
    /// SHA-256 of the peer's leaf certificate (DER), lower-case hex.
    public var peerCertificateSHA256: String?
    /// Whether the chain verified against the trust anchors and the name matched the MX host.
    public var verified: Bool
    /// Why it did not verify (nil when it did).
    public var verifyError: String?

    public init(version: String, cipher: String, peerCertificateSHA256: String?, verified: Bool, verifyError: String?) {
        self.version = version
        self.cipher = cipher
        self.peerCertificateSHA256 = peerCertificateSHA256
        self.verified = verified
        self.verifyError = verifyError
    }
}

/// The trust anchors egress verifies next hops against: the system store plus an optional PEM
/// file (a private CA, the tests' CA). Loaded once per process; immutable and `Sendable`.
public struct TLSTrust: Sendable {
    let roots: CertificateStore
    /// The client context (no client certificate; TLS 1.2 or newer; our verification callback
    /// decides, so the context itself does not verify).
    let context: NIOSSLContext

    public struct LoadError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(extraAnchorsFile: String?, includeSystem: Bool = true) throws {
        var certificates: [Certificate] = []
        if let extraAnchorsFile, !extraAnchorsFile.isEmpty {
            do {
                for c in try NIOSSLCertificate.fromPEMFile(extraAnchorsFile) {
                    certificates.append(try Certificate(derEncoded: try c.toDERBytes()))
                }
            } catch {
                throw LoadError(description: "cannot read trust anchors from \(extraAnchorsFile): \(error)")
            }
        }
        var store = includeSystem ? CertificateStore.systemTrustRoots : CertificateStore()
        store.append(contentsOf: certificates)
        roots = store
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .noHostnameVerification
        context = try NIOSSLContext(configuration: configuration)
    }

    /// Verifies `chain` (leaf first) for `hostname`; the reason when it does not verify.
    func verify(_ chain: [NIOSSLCertificate], hostname: String?) async -> (Bool, String?) {
        guard let leafRaw = chain.first else { return (false, "no certificate") }
        do {
            let leaf = try Certificate(derEncoded: try leafRaw.toDERBytes())
            let intermediates = CertificateStore(try chain.dropFirst().map { try Certificate(derEncoded: try $0.toDERBytes()) })
            var verifier = Verifier(rootCertificates: roots) {
                RFC5280Policy()
                ServerIdentityPolicy(serverHostname: hostname, serverIP: nil)
            }
            switch await verifier.validate(leaf: leaf, intermediates: intermediates) {
            case .validCertificate:
                return (true, nil)
            case .couldNotValidate(let failures):
                let reason = failures.first.map { "\($0.policyFailureReason)" } ?? "no chain to a trust anchor"
                return (false, reason.count > 300 ? String(reason.prefix(300)) : reason)
            }
        } catch {
            return (false, "unparsable certificate: \(error)")
        }
    }

    static func fingerprint(_ certificate: NIOSSLCertificate?) -> String? {
        guard let der = try? certificate?.toDERBytes() else { return nil }
        return Hex.lower(SHA256.hash(data: der))
    }
}

/// Watches the first bytes the server sends after STARTTLS and reads the cipher suite from its
/// ServerHello (sent in the clear in TLS 1.2 and 1.3), because NIOSSL does not expose the
/// negotiated suite. Passes every byte on unchanged and removes itself once it has seen the
/// ServerHello (or 16 KiB without one).
/// State is touched on its channel's event loop only (hence `@unchecked Sendable`).
final class TLSServerHelloObserver: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var seen: [UInt8] = []
    private var handshake: [UInt8] = []
    private var done = false
    /// The cipher suite code, once seen. Read on the channel's event loop.
    private(set) var cipherSuite: UInt16?

    init() {}

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !done {
            let buffer = unwrapInboundIn(data)
            seen.append(contentsOf: buffer.readableBytesView)
            parse()
            if done || seen.count > 16384 {
                done = true
                context.fireChannelRead(data)
                context.pipeline.syncOperations.removeHandler(self, promise: nil)
                return
            }
        }
        context.fireChannelRead(data)
    }

    private func parse() {
        // TLS records: type(1) version(2) length(2) fragment; handshake records are type 22.
        var offset = 0
        handshake.removeAll(keepingCapacity: true)
        while seen.count >= offset + 5 {
            let type = seen[offset]
            let length = Int(seen[offset + 3]) << 8 | Int(seen[offset + 4])
            guard seen.count >= offset + 5 + length else { break }
            if type == 22 { handshake.append(contentsOf: seen[(offset + 5)..<(offset + 5 + length)]) } else {
                done = true
                return
            }
            offset += 5 + length
            // Handshake: msg_type(1)=2 length(3) legacy_version(2) random(32) session_id(1+n) cipher_suite(2)
            if handshake.count >= 4 {
                guard handshake[0] == 2 else { done = true; return }
                if handshake.count >= 4 + 2 + 32 + 1 {
                    let sessionIDLength = Int(handshake[38])
                    let at = 39 + sessionIDLength
                    if handshake.count >= at + 2 {
                        cipherSuite = UInt16(handshake[at]) << 8 | UInt16(handshake[at + 1])
                        done = true
                        return
                    }
                }
            }
        }
    }

    /// IANA name of a cipher suite code (the common ones), else its hex code.
    static func name(of suite: UInt16) -> String {
        switch suite {
        case 0x1301: return "TLS_AES_128_GCM_SHA256"
        case 0x1302: return "TLS_AES_256_GCM_SHA384"
        case 0x1303: return "TLS_CHACHA20_POLY1305_SHA256"
        case 0xC02B: return "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        case 0xC02C: return "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        case 0xC02F: return "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        case 0xC030: return "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        case 0xCCA8: return "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        case 0xCCA9: return "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        case 0xC013: return "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        case 0xC014: return "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        case 0x009C: return "TLS_RSA_WITH_AES_128_GCM_SHA256"
        case 0x009D: return "TLS_RSA_WITH_AES_256_GCM_SHA384"
        default: return String(format: "0x%04X", suite)
        }
    }
}

extension TLSVersion {
    var name: String {
        switch self {
        case .tlsv1: return "TLSv1"
        case .tlsv11: return "TLSv1.1"
        case .tlsv12: return "TLSv1.2"
        case .tlsv13: return "TLSv1.3"
        }
    }
}
