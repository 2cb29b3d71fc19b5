import NIOSSL
import X509
import Crypto
import Foundation
import SMGCore

/// A TLSA record as DANE uses it (RFC 6698 §2.1), independent of the DNS module.
public struct TLSARecord: Sendable, Hashable, CustomStringConvertible {
    public var usage: UInt8
    public var selector: UInt8
    public var matchingType: UInt8
    public var data: [UInt8]

    public init(usage: UInt8, selector: UInt8, matchingType: UInt8, data: [UInt8]) {
        self.usage = usage
        self.selector = selector
        self.matchingType = matchingType
        self.data = data
    }

    /// RFC 7672 §3.1: SMTP uses DANE-TA(2) and DANE-EE(3) only; selectors 0/1, matching 0/1/2.
    public var isUsableForSMTP: Bool {
        (usage == 2 || usage == 3) && selector <= 1 && matchingType <= 2
            && (matchingType != 1 || data.count == 32) && (matchingType != 2 || data.count == 64)
    }

    /// `3 1 1 <hex>`, as in a zone file.
    public var description: String { "\(usage) \(selector) \(matchingType) \(Hex.lower(data))" }
}

/// What a destination's TLS policy demands of one session; checked during the handshake, before
/// any SMTP command is sent over the encrypted channel. All set parts must hold.
public struct TLSRequirement: Sendable, Hashable {
    /// STARTTLS is mandatory: a server without it, or a failed handshake, fails the session (no
    /// plaintext retry).
    public var required: Bool
    /// WebPKI: the chain must verify against the trust anchors and the leaf must name one of these.
    public var verifyNames: [String]?
    /// The leaf certificate's SHA-256 (lower-case hex) must be one of these (pinned).
    public var fingerprints: Set<String>?
    /// DANE: the usable TLSA records of the host (RFC 7672); one must match. Empty = the host
    /// has only unusable records: TLS is mandatory, unauthenticated (RFC 7672 §2.2).
    public var dane: [TLSARecord]?
    /// Reference identifiers for DANE-TA name checks (the MX host; RFC 7672 §3.2.2).
    public var daneNames: [String]

    public init(required: Bool = false, verifyNames: [String]? = nil, fingerprints: Set<String>? = nil,
                dane: [TLSARecord]? = nil, daneNames: [String] = []) {
        self.required = required
        self.verifyNames = verifyNames
        self.fingerprints = fingerprints
        self.dane = dane
        self.daneNames = daneNames
    }

    /// Opportunistic TLS: anything goes, recorded.
    public static let none = TLSRequirement()

    /// A short stable text for cache keys and logs.
    public var key: String {
        guard required else { return "may" }
        var parts = ["must"]
        if let dane { parts.append("dane:" + dane.map(\.description).sorted().joined(separator: ",")) }
        if let verifyNames { parts.append("verify:" + verifyNames.joined(separator: ",")) }
        if let fingerprints { parts.append("pin:" + fingerprints.sorted().joined(separator: ",")) }
        return parts.joined(separator: ";")
    }

    /// Checks `chain` (leaf first) against the requirement: nil when it holds, else why not, as
    /// an RFC 8460 result type and a sentence.
    func check(_ chain: [NIOSSLCertificate], trust: TLSTrust, webPKI: (Bool, String?)) async -> TLSPolicyFailure? {
        guard required else { return nil }
        guard let leaf = chain.first else { return TLSPolicyFailure(type: "validation-failure", detail: "no certificate") }
        if let dane, !dane.isEmpty {
            if let failure = await DANEMatcher.verify(chain: chain, records: dane, names: daneNames) { return failure }
        } else if let verifyNames {
            // WebPKI for the MX name; `webPKI` was computed for the session's host name already.
            var (ok, reason) = webPKI
            if !ok {
                for name in verifyNames {
                    (ok, reason) = await trust.verify(chain, hostname: name)
                    if ok { break }
                }
            }
            if !ok {
                let r = reason ?? "not verified"
                return TLSPolicyFailure(type: TLSPolicyFailure.type(ofVerifyError: r),
                                        detail: "certificate does not verify for \(verifyNames.joined(separator: ", ")): \(r)")
            }
        }
        if let fingerprints {
            let actual = TLSTrust.fingerprint(leaf) ?? ""
            if !fingerprints.contains(actual) {
                return TLSPolicyFailure(type: "validation-failure",
                                        detail: "certificate SHA-256 \(actual) is not a pinned fingerprint")
            }
        }
        return nil
    }
}

/// Why a session did not meet its TLS requirement.
public struct TLSPolicyFailure: Sendable, Hashable, CustomStringConvertible {
    /// RFC 8460 §4.3 result type: starttls-not-supported, certificate-host-mismatch, …
    public var type: String
    public var detail: String
    public init(type: String, detail: String) {
        self.type = type
        self.detail = detail
    }
    public var description: String { "\(type): \(detail)" }
}

extension TLSPolicyFailure {
    /// The RFC 8460 result type for a WebPKI verification error text.
    public static func type(ofVerifyError error: String?) -> String {
        let e = (error ?? "").lowercased()
        if e.contains("name") || e.contains("host") || e.contains("identity") { return "certificate-host-mismatch" }
        if e.contains("expir") || e.contains("not valid after") || e.contains("validity") { return "certificate-expired" }
        return "certificate-not-trusted"
    }
}

/// DANE certificate matching (RFC 6698 §2.1, RFC 7671, RFC 7672 §3).
public enum DANEMatcher {
    /// The bytes a record's selector picks from `certificate`, hashed per its matching type.
    static func associationData(_ certificate: NIOSSLCertificate, selector: UInt8, matchingType: UInt8) -> [UInt8]? {
        let selected: [UInt8]
        do {
            switch selector {
            case 0: selected = try certificate.toDERBytes()
            case 1: selected = try certificate.extractPublicKey().toSPKIBytes()
            default: return nil
            }
        } catch { return nil }
        switch matchingType {
        case 0: return selected
        case 1: return Array(SHA256.hash(data: selected))
        case 2: return Array(SHA512.hash(data: selected))
        default: return nil
        }
    }

    static func matches(_ certificate: NIOSSLCertificate, _ record: TLSARecord) -> Bool {
        associationData(certificate, selector: record.selector, matchingType: record.matchingType) == record.data
    }

    /// Nil when `chain` is authenticated by one of `records`: DANE-EE(3) matches the leaf (no name
    /// or expiry checks, RFC 7672 §3.1.1); DANE-TA(2) matches a certificate of the chain that then
    /// is the trust anchor of a valid path to the leaf, whose names must include one of `names`
    /// (RFC 7672 §3.2.2). Usages 0/1 are never used for SMTP.
    static func verify(chain: [NIOSSLCertificate], records: [TLSARecord], names: [String]) async -> TLSPolicyFailure? {
        guard let leaf = chain.first else { return TLSPolicyFailure(type: "validation-failure", detail: "no certificate") }
        let usable = records.filter(\.isUsableForSMTP)
        if usable.contains(where: { $0.usage == 3 && matches(leaf, $0) }) { return nil }
        var reason = "no TLSA record matches the certificate chain"
        for record in usable where record.usage == 2 {
            for anchor in chain where matches(anchor, record) {
                do {
                    let ta = try Certificate(derEncoded: try anchor.toDERBytes())
                    let leafCert = try Certificate(derEncoded: try leaf.toDERBytes())
                    let intermediates = CertificateStore(try chain.dropFirst().map { try Certificate(derEncoded: try $0.toDERBytes()) })
                    for name in names {
                        var verifier = Verifier(rootCertificates: CertificateStore([ta])) {
                            RFC5280Policy()
                            ServerIdentityPolicy(serverHostname: name, serverIP: nil)
                        }
                        switch await verifier.validate(leaf: leafCert, intermediates: intermediates) {
                        case .validCertificate: return nil
                        case .couldNotValidate(let failures):
                            reason = "DANE-TA anchor matched, but the chain does not verify for \(name): "
                                + (failures.first.map { String("\($0.policyFailureReason)".prefix(200)) } ?? "no path")
                        }
                    }
                } catch {
                    reason = "unparsable certificate: \(error)"
                }
            }
        }
        return TLSPolicyFailure(type: "tlsa-invalid", detail: reason)
    }
}
