public import Crypto
public import _CryptoExtras
import Foundation

/// A DKIM signing algorithm (RFC 6376 §3.3, RFC 8463).
public enum DKIMAlgorithm: String, Sendable, Hashable, CaseIterable, Codable {
    case rsaSHA256 = "rsa-sha256"
    case ed25519SHA256 = "ed25519-sha256"

    /// The `k=` of the key record.
    public var keyType: String { self == .rsaSHA256 ? "rsa" : "ed25519" }

    /// `rsa` or `ed25519` (as on the command line) → algorithm.
    public init?(keyType: String) {
        switch keyType.lowercased() {
        case "rsa", "rsa-sha256": self = .rsaSHA256
        case "ed25519", "ed25519-sha256": self = .ed25519SHA256
        default: return nil
        }
    }
}

/// Errors of DKIM signing and key management (SMGDKIM and SMGDKIMKeys).
public struct DKIMError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public static let weakKey = Code(name: "key too weak")
        public static let unsupportedKeySize = Code(name: "unsupported key size")
        public static let badKey = Code(name: "bad key")
        public static let badInput = Code(name: "bad input")
        public static let noFromDomain = Code(name: "no From domain")
        // Key management (SMGDKIMKeys).
        public static let masterKey = Code(name: "master key")
        public static let exists = Code(name: "exists")
        public static let notFound = Code(name: "not found")
        public static let ambiguous = Code(name: "ambiguous")
        /// The key still signs (retire only a `retiring` key: rotate first).
        public static let stillActive = Code(name: "still active")
        public static let invalidName = Code(name: "invalid name")
        public static let corrupt = Code(name: "corrupt key record")
        public static let decryption = Code(name: "decryption failed")
        public var description: String { name }
    }
    public var code: Code
    public var message: String
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "\(code): \(message)" }
}

/// A private signing key. RSA keys under 1024 bits are refused (RFC 8301 §3.2); new RSA keys
/// are 2048 (default) or 4096 bits.
public enum DKIMPrivateKey: Sendable {
    case rsa(_RSA.Signing.PrivateKey)
    case ed25519(DKIMEd25519Key)

    public static let minimumRSABits = 1024
    public static let allowedNewRSABits: Set<Int> = [2048, 3072, 4096]

    public var algorithm: DKIMAlgorithm {
        switch self {
        case .rsa: return .rsaSHA256
        case .ed25519: return .ed25519SHA256
        }
    }

    /// RSA modulus size, or 256 for Ed25519.
    public var bits: Int {
        switch self {
        case .rsa(let k): return k.keySizeInBits
        case .ed25519: return 256
        }
    }

    /// Generates a new key. `bits` applies to RSA only.
    public static func generate(_ algorithm: DKIMAlgorithm, bits: Int = 2048) throws -> DKIMPrivateKey {
        switch algorithm {
        case .ed25519SHA256:
            return .ed25519(DKIMEd25519Key(Curve25519.Signing.PrivateKey()))
        case .rsaSHA256:
            if bits < minimumRSABits {
                throw DKIMError(code: .weakKey, message: "RSA keys under \(minimumRSABits) bits are refused (got \(bits))")
            }
            guard allowedNewRSABits.contains(bits) else {
                throw DKIMError(code: .unsupportedKeySize,
                                message: "new RSA keys are 2048, 3072 or 4096 bits (got \(bits))")
            }
            return .rsa(try _RSA.Signing.PrivateKey(keySize: .init(bitCount: bits)))
        }
    }

    /// The private key's storage form: PKCS#1 DER for RSA, the 32-byte seed for Ed25519.
    public var secretBytes: [UInt8] {
        switch self {
        case .rsa(let k): return Array(k.derRepresentation)
        case .ed25519(let k): return Array(k.key.rawRepresentation)
        }
    }

    /// The inverse of `secretBytes`.
    public init(algorithm: DKIMAlgorithm, secretBytes: [UInt8]) throws {
        switch algorithm {
        case .ed25519SHA256:
            do { self = .ed25519(DKIMEd25519Key(try Curve25519.Signing.PrivateKey(rawRepresentation: secretBytes))) } catch {
                throw DKIMError(code: .badKey, message: "Ed25519 private key: \(error)")
            }
        case .rsaSHA256:
            let key: _RSA.Signing.PrivateKey
            do { key = try _RSA.Signing.PrivateKey(unsafeDERRepresentation: secretBytes) } catch {
                throw DKIMError(code: .badKey, message: "RSA private key: \(error)")
            }
            try self.init(rsa: key)
        }
    }

    /// An RSA key from PEM (PKCS#1 or PKCS#8), e.g. test vectors; at least 1024 bits.
    public init(rsaPEM pem: String) throws {
        let key: _RSA.Signing.PrivateKey
        do { key = try _RSA.Signing.PrivateKey(unsafePEMRepresentation: pem) } catch {
            throw DKIMError(code: .badKey, message: "RSA private key PEM: \(error)")
        }
        try self.init(rsa: key)
    }

    init(rsa key: _RSA.Signing.PrivateKey) throws {
        guard key.keySizeInBits >= Self.minimumRSABits else {
            throw DKIMError(code: .weakKey,
                            message: "RSA keys under \(Self.minimumRSABits) bits are refused (got \(key.keySizeInBits))")
        }
        self = .rsa(key)
    }

    /// The public key as it goes into `p=`: SubjectPublicKeyInfo DER for RSA (RFC 6376 §3.6.1),
    /// the raw 32 octets for Ed25519 (RFC 8463 §4.2).
    public var publicKeyBytes: [UInt8] {
        switch self {
        case .rsa(let k): return Array(k.publicKey.derRepresentation)
        case .ed25519(let k): return Array(k.key.publicKey.rawRepresentation)
        }
    }

    /// The DNS TXT record of the public key.
    public var dnsRecord: DKIMDNSRecord {
        DKIMDNSRecord(keyType: algorithm.keyType, publicKey: publicKeyBytes)
    }

    /// Signs the SHA-256 digest of the canonicalized header data.
    func sign(digest: SHA256.Digest) throws -> [UInt8] {
        switch self {
        case .rsa(let k):
            return Array(try k.signature(for: digest, padding: .insecurePKCS1v1_5).rawRepresentation)
        case .ed25519(let k):
            // RFC 8463 §3: Ed25519 (pure) over the SHA-256 hash of the header data.
            return Array(try k.key.signature(for: Array(digest)))
        }
    }
}

/// An Ed25519 private key. `Curve25519.Signing.PrivateKey` is an immutable value that swift-crypto
/// 3.12 does not mark `Sendable` on Linux; this box asserts what its immutability guarantees.
public struct DKIMEd25519Key: @unchecked Sendable {
    public let key: Curve25519.Signing.PrivateKey
    public init(_ key: Curve25519.Signing.PrivateKey) { self.key = key }
}

/// The DKIM key record published at `<selector>._domainkey.<domain>` (RFC 6376 §3.6.1).
public struct DKIMDNSRecord: Sendable, Hashable {
    public var keyType: String
    public var publicKey: [UInt8]

    public init(keyType: String, publicKey: [UInt8]) {
        self.keyType = keyType
        self.publicKey = publicKey
    }

    /// `v=DKIM1; k=rsa; p=…`
    public var text: String { "v=DKIM1; k=\(keyType); p=\(Data(publicKey).base64EncodedString())" }

    /// The record split into character-strings of at most 255 octets (RFC 1035 §3.3.14).
    public var strings: [String] {
        var out: [String] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            out.append(String(rest.prefix(255)))
            rest = rest.dropFirst(255)
        }
        return out
    }

    /// The record name for a selector and domain.
    public static func name(selector: String, domain: String) -> String { "\(selector)._domainkey.\(domain)" }

    /// A zone-file line: `<name>. IN TXT ( "…" "…" )`.
    public func zoneFileLine(selector: String, domain: String) -> String {
        let parts = strings.map { "\"\($0)\"" }.joined(separator: "\n  ")
        return "\(Self.name(selector: selector, domain: domain)). IN TXT (\n  \(parts) )"
    }

    /// Parses a published record (the TXT strings joined). Returns nil if it is not a DKIM key
    /// record or `p=` is not base64.
    public init?(parsing text: String) {
        var tags: [String: String] = [:]
        for part in text.split(separator: ";") {
            guard let eq = part.firstIndex(of: "=") else { continue }
            let name = part[..<eq].filter { !$0.isWhitespace }
            let value = part[part.index(after: eq)...].filter { !$0.isWhitespace }
            tags[String(name)] = String(value)
        }
        if let v = tags["v"], v != "DKIM1" { return nil }
        guard let p = tags["p"], let key = Data(base64Encoded: p) else { return nil }
        self.keyType = tags["k"] ?? "rsa"
        self.publicKey = Array(key)
    }
}
