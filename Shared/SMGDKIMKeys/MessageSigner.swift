public import SMGDKIM
import Foundation

/// Decides how one outgoing message is signed: the domain (the From header's, or the signing
/// domain mapped to it), the domain's active keys, and the `DKIM-Signature` fields to prepend.
/// The message itself is never changed.
public struct DKIMMessageSigner: Sendable {
    /// The result for one message.
    public struct Result: Sendable {
        /// The header fields to prepend (empty when unsigned).
        public var headers: String
        public var domain: String?
        public var selectors: [String]
        public var algorithms: [String]
        /// Why the message is not signed (nil when signed).
        public var reason: String?
        public var signed: Bool { reason == nil }
    }

    public let store: DKIMKeyStore
    public let signer: DKIMSigner
    /// From-domain → signing domain (a customer's parent domain); keys are lowercase, and a key
    /// `*.example.com` matches every subdomain of example.com.
    public let domainMap: [String: String]
    /// Domain for messages the gateway writes itself (NDRs, notices) that have no usable From.
    public let ownDomain: String?

    public init(store: DKIMKeyStore, signer: DKIMSigner = DKIMSigner(), domainMap: [String: String] = [:],
                ownDomain: String? = nil) {
        self.store = store
        self.signer = signer
        self.domainMap = Dictionary(domainMap.map { ($0.key.lowercased(), $0.value.lowercased()) },
                                    uniquingKeysWith: { a, _ in a })
        self.ownDomain = ownDomain?.lowercased()
    }

    /// The signing domain for a From domain.
    public func signingDomain(for fromDomain: String) -> String {
        if let mapped = domainMap[fromDomain] { return mapped }
        var parts = fromDomain.split(separator: ".")
        while parts.count > 1 {
            parts.removeFirst()
            if let mapped = domainMap["*." + parts.joined(separator: ".")] { return mapped }
        }
        return fromDomain
    }

    /// Signs for the From domain (mapped by `dkim.domain_map`). Messages the gateway wrote itself
    /// (NDRs, notices: `gatewayWritten`) are signed with the gateway's own domain when one is
    /// configured; customer mail never is — the gateway does not vouch for what a customer wrote.
    public func sign(_ octets: [UInt8], time: Int, gatewayWritten: Bool = false) async throws -> Result {
        let message = DKIMMessage(octets)
        let domain: String
        if gatewayWritten, let ownDomain {
            domain = ownDomain
        } else if let from = message.fromDomain {
            domain = signingDomain(for: from)
        } else {
            return Result(headers: "", domain: nil, selectors: [], algorithms: [], reason: "no From domain")
        }
        let keys = try await store.signingKeys(domain: domain)
        guard !keys.isEmpty else {
            return Result(headers: "", domain: domain, selectors: [], algorithms: [], reason: "no key for \(domain)")
        }
        let signatures = try signer.sign(message, keys: keys, time: time)
        return Result(headers: signatures.map(\.header).joined(), domain: domain, selectors: signatures.map(\.selector),
                      algorithms: signatures.map(\.algorithm.rawValue), reason: nil)
    }
}
