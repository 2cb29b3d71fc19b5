public import SMGDKIM
import Foundation

/// A bad value for a new key, naming the field at fault; `smgctl dkim` prints it with its option
/// names (`<domain>`, `--selector`, `--alg`, `--bits`), smg-admin with its JSON field names.
public struct DKIMKeyInputError: Error, CustomStringConvertible, Sendable, Hashable {
    public enum Field: String, Sendable, Hashable {
        case domain, selector, alg, bits
    }
    public var field: Field
    public var message: String

    public init(_ field: Field, _ message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { "\(field.rawValue): \(message)" }
}

/// What an operator asks for when generating or rotating a key, checked the one way both
/// `smgctl dkim keygen|rotate` and smg-admin check it.
public struct DKIMNewKey: Sendable, Hashable {
    /// Normalized (lowercase, no trailing dot).
    public var domain: String
    public var selector: String
    /// nil: keygen uses RSA, rotate the algorithm of the domain's active keys.
    public var algorithm: DKIMAlgorithm?
    public var bits: Int

    public static let defaultBits = 2048

    /// Checks everything; the first error names its field.
    public init(domain: String, selector: String, algorithm: String?, bits: Int?) throws(DKIMKeyInputError) {
        self.domain = try Self.domain(domain)
        self.selector = try Self.selector(selector)
        self.algorithm = try Self.algorithm(algorithm)
        self.bits = bits ?? Self.defaultBits
        try Self.checkBits(self.bits, self.algorithm)
    }

    /// `rsa` or `ed25519` (also `rsa-sha256`, `ed25519-sha256`); nil or empty → nil.
    public static func algorithm(_ text: String?) throws(DKIMKeyInputError) -> DKIMAlgorithm? {
        guard let text, !text.isEmpty else { return nil }
        guard let alg = DKIMAlgorithm(keyType: text) else {
            throw DKIMKeyInputError(.alg, "\"\(text)\" is not rsa or ed25519")
        }
        return alg
    }

    /// RSA sizes for new keys (2048, 3072, 4096; under the minimum is refused outright).
    /// Ed25519 keys have no size. Without an algorithm the key is taken to be RSA.
    public static func checkBits(_ bits: Int, _ alg: DKIMAlgorithm?) throws(DKIMKeyInputError) {
        guard alg != .ed25519SHA256 else { return }
        if bits < DKIMPrivateKey.minimumRSABits {
            throw DKIMKeyInputError(.bits, "RSA keys under \(DKIMPrivateKey.minimumRSABits) bits are refused (got \(bits))")
        }
        if !DKIMPrivateKey.allowedNewRSABits.contains(bits) {
            throw DKIMKeyInputError(.bits, "new RSA keys are \(Self.allowedBitsText) bits (got \(bits))")
        }
    }

    static var allowedBitsText: String {
        let sizes = DKIMPrivateKey.allowedNewRSABits.sorted().map(String.init)
        return sizes.dropLast().joined(separator: ", ") + (sizes.count > 1 ? " or " : "") + (sizes.last ?? "")
    }

    /// A signing domain, normalized (`DKIMKeyStore.normalize(domain:)`).
    public static func domain(_ text: String) throws(DKIMKeyInputError) -> String {
        do { return try DKIMKeyStore.normalize(domain: text.trimmingCharacters(in: .whitespaces)) } catch {
            throw DKIMKeyInputError(.domain, Self.message(error))
        }
    }

    /// A selector, normalized (`DKIMKeyStore.normalize(selector:)`).
    public static func selector(_ text: String) throws(DKIMKeyInputError) -> String {
        do { return try DKIMKeyStore.normalize(selector: text.trimmingCharacters(in: .whitespaces)) } catch {
            throw DKIMKeyInputError(.selector, Self.message(error))
        }
    }

    static func message(_ error: any Error) -> String {
        (error as? DKIMError)?.message ?? "\(error)"
    }
}
