import Foundation
import Crypto
import _CryptoExtras
import Dispatch

/// Password hashes for SMTP AUTH: scrypt (RFC 7914), deliberately slow and memory-hard,
/// with a random 16-byte salt, in the modular form `$scrypt$ln=15,r=8,p=1$<salt>$<hash>`
/// (base64). Plain or fast-hashed passwords are never stored.
///
/// Thread rules: hashing is CPU-bound (~50–100 ms, 32 MiB each), so it runs on its own queue
/// with at most `parallelism` hashes at once, never on the event loop or the cooperative pool.
public final class PasswordHasher: Sendable {
    public let logN: Int
    public let blockSize: Int
    public let parallelization: Int
    let queue = DispatchQueue(label: "smg.password-hasher", attributes: .concurrent)
    let slots: DispatchSemaphore

    /// A hash of a random password, verified against when the login does not exist, so that
    /// a missing user costs the same time as a wrong password (no user enumeration by timing).
    public let decoy: String

    public init(logN: Int = 15, blockSize: Int = 8, parallelization: Int = 1, parallelism: Int = 2) {
        self.logN = logN
        self.blockSize = blockSize
        self.parallelization = parallelization
        slots = DispatchSemaphore(value: max(1, parallelism))
        var salt = [UInt8](repeating: 0, count: 16)
        for i in salt.indices { salt[i] = UInt8.random(in: 0...255) }
        let derived = (try? Self.derive(UUID().uuidString, salt: salt, logN: logN, r: blockSize, p: parallelization))
            ?? [UInt8](repeating: 0, count: 32)
        decoy = "$scrypt$ln=\(logN),r=\(blockSize),p=\(parallelization)$\(Data(salt).base64EncodedString())$"
            + Data(derived).base64EncodedString()
    }

    /// A new hash of `password`.
    public func hash(_ password: String) throws -> String {
        var salt = [UInt8](repeating: 0, count: 16)
        var rng = SystemRandomNumberGenerator()
        for i in salt.indices { salt[i] = UInt8.random(in: 0...255, using: &rng) }
        let derived = try Self.derive(password, salt: salt, logN: logN, r: blockSize, p: parallelization)
        return "$scrypt$ln=\(logN),r=\(blockSize),p=\(parallelization)$\(Data(salt).base64EncodedString())$"
            + Data(derived).base64EncodedString()
    }

    /// Whether `password` matches `encoded`; false for malformed hashes. Runs off the caller's thread.
    public func verify(_ password: String, against encoded: String) async -> Bool {
        await withCheckedContinuation { continuation in
            queue.async {
                self.slots.wait()
                defer { self.slots.signal() }
                continuation.resume(returning: Self.verifySync(password, against: encoded))
            }
        }
    }

    static func verifySync(_ password: String, against encoded: String) -> Bool {
        let parts = encoded.split(separator: "$", omittingEmptySubsequences: true)
        guard parts.count == 4, parts[0] == "scrypt" else { return false }
        var params: [String: Int] = [:]
        for item in parts[1].split(separator: ",") {
            let kv = item.split(separator: "=")
            if kv.count == 2, let v = Int(kv[1]) { params[String(kv[0])] = v }
        }
        guard let ln = params["ln"], (10...20).contains(ln), let r = params["r"], (1...32).contains(r),
              let p = params["p"], (1...16).contains(p),
              let salt = Data(base64Encoded: String(parts[2])), let expected = Data(base64Encoded: String(parts[3])),
              expected.count >= 16,
              let derived = try? derive(password, salt: Array(salt), logN: ln, r: r, p: p, length: expected.count)
        else { return false }
        // Constant time compare.
        var difference: UInt8 = 0
        for (a, b) in zip(derived, expected) { difference |= a ^ b }
        return difference == 0
    }

    static func derive(_ password: String, salt: [UInt8], logN: Int, r: Int, p: Int, length: Int = 32) throws -> [UInt8] {
        let key = try KDF.Scrypt.deriveKey(from: Array(password.utf8), salt: salt, outputByteCount: length,
                                           rounds: 1 << logN, blockSize: r, parallelism: p,
                                           maxMemory: 256 * 1024 * 1024)
        return key.withUnsafeBytes { Array($0) }
    }
}
