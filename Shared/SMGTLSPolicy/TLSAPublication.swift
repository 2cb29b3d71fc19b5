import NIOSSL
import Crypto
import SMGCore

/// The TLSA record (RFC 7671 DANE-EE: usage 3, selector 1 = SubjectPublicKeyInfo, matching 1 =
/// SHA-256) that a domain publishes for the gateway's own certificate, so DANE senders can check
/// the gateway's ingress (R7). One implementation for `smgctl tlsa` and anything else that shows it.
public enum TLSAPublication {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// `_<port>._tcp.<host>. IN TLSA 3 1 1 <sha256 of the SPKI>` for the first certificate in `pemFile`.
    public static func record(certificateFile pemFile: String, host: String, port: Int) throws -> String {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(pemFile) } catch {
            throw Failure(description: "cannot read \(pemFile): \(error)")
        }
        guard let leaf = chain.first else { throw Failure(description: "no certificate in \(pemFile)") }
        let spki = try leaf.extractPublicKey().toSPKIBytes()
        let digest = Hex.lower(SHA256.hash(data: spki))
        return "_\(port)._tcp.\(host). IN TLSA 3 1 1 \(digest)"
    }
}
