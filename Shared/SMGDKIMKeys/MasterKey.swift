import Crypto
import SMGDKIM
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The key that encrypts DKIM private keys at rest (AES-256-GCM): 32 random octets in a file
/// readable by its owner only (mode 0600; group/other access is refused). It never goes to Redis.
public struct DKIMMasterKey: @unchecked Sendable {   // SymmetricKey is an immutable value
    let key: SymmetricKey

    public init(bytes: [UInt8]) throws {
        guard bytes.count == 32 else {
            throw DKIMError(code: .masterKey, message: "a master key is 32 octets (got \(bytes.count))")
        }
        key = SymmetricKey(data: bytes)
    }

    /// Reads the key file; refuses files that group or others may read or write.
    public static func load(path: String) throws -> DKIMMasterKey {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw DKIMError(code: .masterKey, message: "\(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw DKIMError(code: .masterKey,
                                    message: "\(path): mode \(String(info.st_mode & 0o777, radix: 8)) lets others read it; chmod 600")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DKIMError(code: .masterKey, message: "\(path): cannot read")
        }
        do { return try DKIMMasterKey(bytes: Array(data)) } catch let error as DKIMError {
            throw DKIMError(code: error.code, message: "\(path): \(error.message)")
        }
    }

    /// Creates a new key file with 32 random octets, mode 0600. Refuses to overwrite.
    public static func create(path: String) throws {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw DKIMError(code: .masterKey, message: "\(path): \(String(cString: strerror(errno)))")
        }
        defer { Glibc.close(fd) }
        let bytes = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fchmod(fd, 0o600) == 0, fsync(fd) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(path)
            throw DKIMError(code: .masterKey, message: "\(path): \(reason)")
        }
    }

    /// AES-GCM: nonce ‖ ciphertext ‖ tag. `context` is authenticated (binds a key to its slot).
    func seal(_ plaintext: [UInt8], context: [UInt8]) throws -> [UInt8] {
        Array(try AES.GCM.seal(plaintext, using: key, authenticating: context).combined!)
    }

    func open(_ sealed: [UInt8], context: [UInt8]) throws -> [UInt8] {
        do {
            return Array(try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key, authenticating: context))
        } catch {
            throw DKIMError(code: .decryption,
                                    message: "cannot decrypt (wrong master key, or the record was altered)")
        }
    }
}
