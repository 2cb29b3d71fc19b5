internal import CZeroMQ
internal import SMGCore
#if canImport(Glibc)
internal import Glibc
#endif

/// A CurveZMQ keypair (Curve25519): 32-octet public and secret keys.
///
/// The secret key never appears in a description, an error or a log line.
public struct CurveKeyPair: Sendable, Hashable, CustomStringConvertible {
    public let publicKey: [UInt8]
    public let secretKey: [UInt8]

    /// The keypair of `secretKey` (its public key is derived, `zmq_curve_public`).
    public init(secretKey: [UInt8]) throws(CurveKeyError) {
        guard secretKey.count == 32 else { throw CurveKeyError("a secret key is 32 octets (got \(secretKey.count))") }
        var secretText = [CChar](repeating: 0, count: 41)
        var publicText = [CChar](repeating: 0, count: 41)
        let encoded = secretKey.withUnsafeBufferPointer { zmq_z85_encode(&secretText, $0.baseAddress, 32) }
        guard encoded != nil, zmq_curve_public(&publicText, secretText) == 0 else {
            throw CurveKeyError("cannot derive the public key (libzmq without CURVE support?)")
        }
        for i in secretText.indices { secretText[i] = 0 }
        guard let derived = Z85.decode(cText(publicText)) else {
            throw CurveKeyError("cannot derive the public key")
        }
        self.secretKey = secretKey
        publicKey = derived
    }

    /// A new random keypair (`zmq_curve_keypair`, libsodium).
    public static func generate() throws(CurveKeyError) -> CurveKeyPair {
        var publicText = [CChar](repeating: 0, count: 41)
        var secretText = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&publicText, &secretText) == 0 else {
            throw CurveKeyError("zmq_curve_keypair failed: \(String(cString: zmq_strerror(zmq_errno()))) (libzmq without CURVE support?)")
        }
        defer { for i in secretText.indices { secretText[i] = 0 } }
        guard let secret = Z85.decode(cText(secretText)) else { throw CurveKeyError("zmq_curve_keypair gave a bad key") }
        return try CurveKeyPair(secretKey: secret)
    }

    /// The public key in Z85 (40 characters), the form key files and authorized lists use.
    public var publicZ85: String { Z85.encode(publicKey) }

    /// Only the public key: a keypair is never printed with its secret.
    public var description: String { "CurveKeyPair(public: \(publicZ85))" }
}

/// A key file or key that cannot be used; `message` never contains secret material.
public struct CurveKeyError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Z85 (ZeroMQ RFC 32), through libzmq's encoder and decoder.
public enum Z85 {
    /// Encodes `bytes` (a multiple of 4 octets, e.g. a 32-octet key → 40 characters).
    public static func encode(_ bytes: [UInt8]) -> String {
        precondition(bytes.count % 4 == 0, "Z85 encodes multiples of 4 octets")
        var text = [CChar](repeating: 0, count: bytes.count * 5 / 4 + 1)
        _ = bytes.withUnsafeBufferPointer { zmq_z85_encode(&text, $0.baseAddress, $0.count) }
        return cText(text)
    }

    /// Decodes Z85 text (a multiple of 5 characters of the Z85 alphabet); nil when it is not.
    public static func decode(_ text: String) -> [UInt8]? {
        guard !text.isEmpty, text.utf8.count % 5 == 0, text.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else { return nil }
        var bytes = [UInt8](repeating: 0, count: text.utf8.count * 4 / 5)
        let ok = bytes.withUnsafeMutableBufferPointer { zmq_z85_decode($0.baseAddress, text) != nil }
        return ok ? bytes : nil
    }
}

/// The text of a NUL-terminated C string in `chars`.
func cText(_ chars: [CChar]) -> String {
    String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// What a process's bus needs for CurveZMQ: its keypair and the public keys of the clients its
/// bound sockets accept (always including its own).
public struct BusSecurity: Sendable {
    public let keyPair: CurveKeyPair
    public let authorizedKeys: Set<[UInt8]>

    /// `authorizedKeys`: the clients allowed besides this process's own key (none: only
    /// processes holding the same keypair may connect).
    public init(keyPair: CurveKeyPair, authorizedKeys: [[UInt8]] = []) {
        self.keyPair = keyPair
        self.authorizedKeys = Set(authorizedKeys).union([keyPair.publicKey])
    }
}

/// A registry entry: a ZeroMQ endpoint plus, for a CURVE server, its public key —
/// `tcp://host:port?curve=<64 hex digits>`. The key is in hexadecimal because Z85 contains
/// characters that have a meaning in URLs. ZeroMQ itself is given only `address`.
public struct BusEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// The endpoint as `zmq_connect` takes it, e.g. `tcp://10.0.0.5:41234`.
    public var address: String
    /// The server's CURVE public key (32 octets); nil for a plaintext endpoint.
    public var serverKey: [UInt8]?

    public init(address: String, serverKey: [UInt8]? = nil) {
        self.address = address
        self.serverKey = serverKey
    }

    /// Parses a registry entry. Anything after `?` other than exactly `curve=<64 hex digits>`
    /// is refused (a newer producer's option this process does not know must not be ignored).
    public init(parsing entry: String) throws(BusEndpointError) {
        guard let question = entry.firstIndex(of: "?") else {
            guard !entry.isEmpty else { throw BusEndpointError(entry: entry, problem: "empty endpoint") }
            self.init(address: entry)
            return
        }
        let address = String(entry[..<question])
        let query = entry[entry.index(after: question)...]
        guard !address.isEmpty, query.hasPrefix("curve="), !query.contains("&") else {
            throw BusEndpointError(entry: entry, problem: "unknown endpoint parameters (expected ?curve=<64 hex digits>)")
        }
        guard let key = Hex.decode(query.dropFirst("curve=".count)), key.count == 32 else {
            throw BusEndpointError(entry: entry, problem: "the curve parameter is not 64 hex digits")
        }
        self.init(address: address, serverKey: key)
    }

    public var description: String {
        guard let serverKey else { return address }
        return address + "?curve=" + Hex.lower(serverKey)
    }
}

/// A registry entry this process cannot or will not connect to.
public struct BusEndpointError: Error, Sendable, CustomStringConvertible {
    public var entry: String
    public var problem: String
    public init(entry: String, problem: String) {
        self.entry = entry
        self.problem = problem
    }
    public var description: String { "\(entry): \(problem)" }
}

// MARK: - key files

/// The files of the bus's CURVE keys.
///
/// **Key file** (`smgctl bus keygen`), mode 0600, `#` comment lines and two lines
/// `public: <Z85>` / `secret: <Z85>`. Reading refuses a file that group or others may read or
/// write (as ssh does for private keys), a missing or malformed secret key, and a public key
/// that does not belong to the secret key.
///
/// **Authorized keys** (`bus.curve_authorized_keys`): one Z85 public key (40 characters) per
/// line, optionally followed by blanks and a label; blank lines and lines starting with `#` are
/// ignored (no Z85 key starts with `#`: a group starting with it would exceed 32 bits).
public enum CurveKeyFile {
    /// The text `write` stores.
    public static func text(of pair: CurveKeyPair, comment: String? = nil) -> String {
        var lines = [
            "# CurveZMQ keypair of the Secure Mail Gateway's bus (smgctl bus keygen).",
            "# Secret: keep this file mode 0600, readable by the gateway's user only. Give the public",
            "# key to the processes that must accept this one (their bus.curve_authorized_keys).",
        ]
        if let comment { lines.append("# \(comment)") }
        lines.append("public: \(pair.publicZ85)")
        lines.append("secret: \(Z85.encode(pair.secretKey))")
        return lines.joined(separator: "\n") + "\n"
    }

    /// Reads a key file; see the type's description for what is refused.
    public static func read(path: String) throws(CurveKeyError) -> CurveKeyPair {
        let text = try readPrivate(path)
        var publicText: String?, secretText: String?
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingBlanks()
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("public:") {
                publicText = String(line.dropFirst("public:".count).trimmingBlanks().unquoted())
            } else if line.hasPrefix("secret:") {
                secretText = String(line.dropFirst("secret:".count).trimmingBlanks().unquoted())
            } else {
                throw CurveKeyError("\(path): line \(number + 1): expected \"public: <key>\" or \"secret: <key>\"")
            }
        }
        guard let secretText else { throw CurveKeyError("\(path): no \"secret:\" line (make one with smgctl bus keygen)") }
        guard secretText.utf8.count == 40, let secret = Z85.decode(secretText) else {
            throw CurveKeyError("\(path): the secret key is not 40 characters of Z85")
        }
        let pair: CurveKeyPair
        do { pair = try CurveKeyPair(secretKey: secret) } catch { throw CurveKeyError("\(path): \(error.message)") }
        if let publicText {
            guard publicText.utf8.count == 40, let given = Z85.decode(publicText) else {
                throw CurveKeyError("\(path): the public key is not 40 characters of Z85")
            }
            guard given == pair.publicKey else {
                throw CurveKeyError("\(path): the public key does not belong to the secret key")
            }
        }
        return pair
    }

    /// Reads an authorized-keys file: the public keys in it (an empty file authorizes nobody
    /// besides the process itself).
    public static func readAuthorizedKeys(path: String) throws(CurveKeyError) -> [[UInt8]] {
        let text = try readFile(path, requirePrivate: false)
        var keys: [[UInt8]] = []
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingBlanks()
            if line.isEmpty || line.hasPrefix("#") { continue }
            let word = line.prefix { $0 != " " && $0 != "\t" }
            if word.utf8.count == 40, let key = Z85.decode(String(word)) {
                keys.append(key)
                continue
            }
            throw CurveKeyError("\(path): line \(number + 1): not a Z85 public key (40 characters; smgctl bus pubkey prints one)")
        }
        return keys
    }

    /// Writes `pair` to `path` with mode 0600: through a temporary file in the same directory,
    /// then linked into place (refused if `path` exists) or, with `replace`, renamed over it —
    /// the file is never readable by others, not even for a moment.
    public static func write(_ pair: CurveKeyPair, to path: String, replace: Bool, comment: String? = nil) throws(CurveKeyError) {
        if !replace, access(path, F_OK) == 0 {
            throw CurveKeyError("\(path) exists (use --force to replace it)")
        }
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        var template = Array(((directory.isEmpty ? "/" : directory) + "/.smg-curve-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw CurveKeyError("\(path): cannot create a file in \(directory): \(errnoText())") }
        let temporary = cText(template)
        var bytes = Array(text(of: pair, comment: comment).utf8)
        defer { for i in bytes.indices { bytes[i] = 0 } }
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            written += n
        }
        guard written == bytes.count, fchmod(fd, 0o600) == 0, fsync(fd) == 0 else {
            let reason = errnoText()
            Glibc.close(fd)
            unlink(temporary)
            throw CurveKeyError("\(path): cannot write: \(reason)")
        }
        Glibc.close(fd)
        let placed = replace ? rename(temporary, path) : link(temporary, path)
        let code = errno
        if !replace || placed != 0 { unlink(temporary) }
        guard placed == 0 else {
            throw CurveKeyError(code == EEXIST ? "\(path) exists (use --force to replace it)"
                                               : "\(path): \(String(cString: strerror(code)))")
        }
    }

    /// The file's text; refuses group/other access (any of the bits 077).
    static func readPrivate(_ path: String) throws(CurveKeyError) -> String {
        try readFile(path, requirePrivate: true)
    }

    static func readFile(_ path: String, requirePrivate: Bool) throws(CurveKeyError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CurveKeyError("\(path): \(errnoText())") }
        defer { Glibc.close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw CurveKeyError("\(path): \(errnoText())") }
        guard info.st_mode & S_IFMT == S_IFREG else { throw CurveKeyError("\(path): not a regular file") }
        if requirePrivate, info.st_mode & 0o077 != 0 {
            throw CurveKeyError("\(path): mode \(String(info.st_mode & 0o777, radix: 8)) lets group or others at the secret key; chmod 600 it")
        }
        guard info.st_size <= 1 << 20 else { throw CurveKeyError("\(path): larger than 1 MiB") }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw CurveKeyError("\(path): \(errnoText())") }
            if n == 0 { break }
            data += chunk[..<n]
            guard data.count <= 1 << 20 else { throw CurveKeyError("\(path): larger than 1 MiB") }
        }
        for i in chunk.indices { chunk[i] = 0 }
        guard let text = String(validating: data, as: UTF8.self) else { throw CurveKeyError("\(path): not UTF-8 text") }
        return text
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}

extension Substring {
    fileprivate func trimmingBlanks() -> Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" || c == "\r" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s = s.dropLast() }
        return s
    }

    fileprivate func unquoted() -> Substring {
        if count >= 2, let f = first, f == last, f == "\"" || f == "'" { return dropFirst().dropLast() }
        return self
    }
}
