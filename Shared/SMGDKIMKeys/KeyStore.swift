public import SMGDKIM
public import SMGRedis
public import SMGStore
import SMGSync
import Foundation

/// One stored key: public half in clear, private half encrypted under the master key.
public struct DKIMKeyRecord: Codable, Sendable, Hashable {
    public enum State: String, Codable, Sendable {
        /// Signs new mail.
        case active
        /// No longer signs; stays published so mail signed before the rotation still verifies.
        case retiring
    }
    public var domain: String
    public var selector: String
    public var algorithm: DKIMAlgorithm
    public var bits: Int
    /// Creation time, ms since the epoch.
    public var created: Int64
    public var state: State
    /// When it stopped signing (ms since the epoch).
    public var retiringSince: Int64?
    /// `p=`: base64 of the public key.
    public var publicKey: String
    /// base64 of AES-256-GCM(nonce ‖ ciphertext ‖ tag) of the private key. Never printed.
    var sealedPrivateKey: String

    enum CodingKeys: String, CodingKey {
        case domain, selector, bits, created, state
        case algorithm = "alg"
        case retiringSince = "retiring_since"
        case publicKey = "public"
        case sealedPrivateKey = "private_enc"
    }

    /// The TXT record to publish, and its name.
    public var dnsRecord: DKIMDNSRecord {
        DKIMDNSRecord(keyType: algorithm.keyType, publicKey: Array(Data(base64Encoded: publicKey) ?? Data()))
    }
    public var recordName: String { DKIMDNSRecord.name(selector: selector, domain: domain) }

    /// What operators may see: everything but the private key.
    public var publicSummary: [String: String] {
        var out = ["domain": domain, "selector": selector, "alg": algorithm.rawValue, "bits": String(bits),
                   "created": String(created), "state": state.rawValue, "record": recordName,
                   "public": publicKey]
        if let retiringSince { out["retiring_since"] = String(retiringSince) }
        return out
    }

    static func context(domain: String, selector: String, algorithm: DKIMAlgorithm) -> [UInt8] {
        Array("smg-dkim-v1|\(domain)|\(selector)|\(algorithm.rawValue)".utf8)
    }
}

/// DKIM keys per domain and selector in Redis: `Keyspace.dkimKeys(domain)` HASH selector → key
/// record JSON, and `Keyspace.dkimDomains` SET of domains with keys. Private keys are sealed with the
/// master key before they leave this process and opened only to sign.
///
/// Thread rules: `Sendable`; the signing-key cache is behind a lock.
public final class DKIMKeyStore: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace
    let masterKey: DKIMMasterKey?
    let cacheMilliseconds: Int64
    let cache = Locked<[String: (expires: Int64, keys: [DKIMSigningKey])]>([:])

    /// - Parameters:
    ///   - masterKey: needed to create keys and to sign; listing works without it.
    ///   - cacheTTL: how long `signingKeys(domain:)` reuses what it read (zero: no cache).
    public init(redis: RedisClient, keys: Keyspace = Keyspace(), masterKey: DKIMMasterKey?, cacheTTL: Duration = .zero) {
        self.redis = redis
        self.keys = keys
        self.masterKey = masterKey
        let (s, atto) = cacheTTL.components
        cacheMilliseconds = s * 1000 + atto / 1_000_000_000_000_000
    }

    /// Lowercases and checks a domain name (LDH labels).
    public static func normalize(domain: String) throws -> String {
        var d = domain.lowercased()
        if d.hasSuffix(".") { d.removeLast() }
        let labels = d.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2, d.count <= 253, labels.allSatisfy({ Self.isLabel($0) }) else {
            throw DKIMError(code: .invalidName, message: "\"\(domain)\" is not a domain name")
        }
        return d
    }

    /// Checks a selector (one or more LDH labels, RFC 6376 §3.1).
    public static func normalize(selector: String) throws -> String {
        let s = selector.lowercased()
        guard !s.isEmpty, s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy({ Self.isLabel($0) }) else {
            throw DKIMError(code: .invalidName, message: "\"\(selector)\" is not a selector (letters, digits, hyphens)")
        }
        return s
    }

    static func isLabel(_ label: Substring) -> Bool {
        !label.isEmpty && label.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
            && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
    }

    func requireMasterKey() throws -> DKIMMasterKey {
        guard let masterKey else {
            throw DKIMError(code: .masterKey, message: "no master key configured (dkim.master_key_file)")
        }
        return masterKey
    }

    /// Creates a key and stores it. The private key is sealed before it is written and is not
    /// returned. Fails if the selector exists for the domain.
    @discardableResult
    public func create(domain: String, selector: String, algorithm: DKIMAlgorithm, bits: Int = 2048,
                       state: DKIMKeyRecord.State = .active) async throws -> DKIMKeyRecord {
        let domain = try Self.normalize(domain: domain)
        let selector = try Self.normalize(selector: selector)
        let master = try requireMasterKey()
        let key = try DKIMPrivateKey.generate(algorithm, bits: bits)
        let sealed = try master.seal(key.secretBytes,
                                     context: DKIMKeyRecord.context(domain: domain, selector: selector, algorithm: algorithm))
        let record = DKIMKeyRecord(
            domain: domain, selector: selector, algorithm: algorithm, bits: key.bits,
            created: Int64(Date().timeIntervalSince1970 * 1000), state: state, retiringSince: nil,
            publicKey: Data(key.publicKeyBytes).base64EncodedString(),
            sealedPrivateKey: Data(sealed).base64EncodedString())
        let replies = try await redis.pipeline([
            ["HSETNX", .init(keys.dkimKeys(domain)), .init(selector), .init(try Self.encode(record))],
            ["SADD", .init(keys.dkimDomains), .init(domain)],
        ])
        if case .error(let e)? = replies.first { throw DKIMError(code: .corrupt, message: "redis: \(e)") }
        guard replies.first?.int == 1 else {
            throw DKIMError(code: .exists, message: "selector \"\(selector)\" already exists for \(domain)")
        }
        invalidate(domain)
        return record
    }

    /// Keys of one domain, or of every domain; sorted by domain, then creation.
    public func list(domain: String? = nil) async throws -> [DKIMKeyRecord] {
        let domains: [String]
        if let domain {
            domains = [try Self.normalize(domain: domain)]
        } else {
            domains = try await redis.command("SMEMBERS", .init(keys.dkimDomains)).array?.compactMap(\.string).sorted() ?? []
        }
        guard !domains.isEmpty else { return [] }
        let replies = try await redis.pipeline(domains.map { ["HGETALL", .init(keys.dkimKeys($0))] })
        var out: [DKIMKeyRecord] = []
        for reply in replies {
            let items = reply.array ?? []
            var records: [DKIMKeyRecord] = []
            var i = 0
            while i + 1 < items.count {
                records.append(try Self.decode(items[i + 1].bytes ?? []))
                i += 2
            }
            out += records.sorted { ($0.created, $0.selector) < ($1.created, $1.selector) }
        }
        return out
    }

    /// Creates `newSelector` as active and turns the domain's active keys of the same algorithm
    /// into `retiring` (they stay published for verification). Without `algorithm`: that of the
    /// domain's active keys (an error if it has active keys of both algorithms).
    /// Returns the new key and the retired ones.
    public func rotate(domain: String, newSelector: String, algorithm: DKIMAlgorithm?, bits: Int = 2048)
        async throws -> (created: DKIMKeyRecord, retired: [DKIMKeyRecord]) {
        let domain = try Self.normalize(domain: domain)
        let existing = try await list(domain: domain)
        let active = existing.filter { $0.state == .active }
        let activeAlgorithms = Set(active.map(\.algorithm))
        if algorithm == nil && activeAlgorithms.count > 1 {
            throw DKIMError(code: .ambiguous,
                                    message: "\(domain) has active rsa and ed25519 keys; say which one to rotate")
        }
        guard let algorithm = algorithm ?? activeAlgorithms.first else {
            throw DKIMError(code: .notFound, message: "\(domain) has no active key to rotate; use keygen (or give --alg)")
        }
        let created = try await create(domain: domain, selector: newSelector, algorithm: algorithm, bits: bits)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var retired: [DKIMKeyRecord] = []
        var commands: [[RedisArg]] = []
        for var record in active where record.algorithm == algorithm {
            record.state = .retiring
            record.retiringSince = now
            retired.append(record)
            commands.append(["HSET", .init(keys.dkimKeys(domain)), .init(record.selector), .init(try Self.encode(record))])
        }
        if !commands.isEmpty { _ = try await redis.pipeline(commands) }
        invalidate(domain)
        return (created, retired)
    }

    /// Removes a `retiring` key (its TXT record may then be unpublished). An active key is
    /// refused (`stillActive`: rotate first), an unknown one is `notFound`. The domain leaves
    /// `Keyspace.dkimDomains` with its last key. Returns the removed record.
    @discardableResult
    public func retire(domain: String, selector: String) async throws -> DKIMKeyRecord {
        let domain = try Self.normalize(domain: domain)
        let selector = try Self.normalize(selector: selector)
        let hash = keys.dkimKeys(domain)
        guard let stored = try await redis.command("HGET", .init(hash), .init(selector)).bytes else {
            throw DKIMError(code: .notFound, message: "\(domain) has no key \"\(selector)\"")
        }
        let record = try Self.decode(stored)
        guard record.state == .retiring else {
            throw DKIMError(code: .stillActive,
                            message: "\(record.recordName) is active (it signs mail): rotate first, then retire it once it is retiring")
        }
        // Retiring is final, so the record can only have gone since it was read; removing the
        // domain from the set and a concurrent keygen must not cross (one script).
        let removed = try await redis.eval(Self.removeScript, keys: [.init(hash), .init(keys.dkimDomains)],
                                           args: [.init(selector), .init(stored), .init(domain)])
        guard removed.int == 1 else {
            throw DKIMError(code: .notFound, message: "\(domain) has no key \"\(selector)\"")
        }
        invalidate(domain)
        return record
    }

    /// KEYS: the domain's hash, the domains set. ARGV: selector, expected record, domain.
    /// 1: removed; 0: the record is not (any longer) the expected one.
    static let removeScript = RedisScript("""
        if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
        redis.call('HDEL', KEYS[1], ARGV[1])
        if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end
        return 1
        """)

    /// Decrypted active keys of a domain, for signing (cached for `cacheTTL`). Empty if none.
    public func signingKeys(domain: String) async throws -> [DKIMSigningKey] {
        let domain = domain.lowercased()
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        if cacheMilliseconds > 0, let hit = cache.withLock({ $0[domain] }), hit.expires > now { return hit.keys }
        let master = try requireMasterKey()
        let records = try await list(domain: domain).filter { $0.state == .active }
        let keys = try records.map { record -> DKIMSigningKey in
            guard let sealed = Data(base64Encoded: record.sealedPrivateKey) else {
                throw DKIMError(code: .corrupt, message: "\(record.recordName): private key is not base64")
            }
            let secret = try master.open(Array(sealed), context: DKIMKeyRecord.context(
                domain: record.domain, selector: record.selector, algorithm: record.algorithm))
            return DKIMSigningKey(domain: record.domain, selector: record.selector,
                                  key: try DKIMPrivateKey(algorithm: record.algorithm, secretBytes: secret))
        }
        if cacheMilliseconds > 0 {
            cache.withLock { $0[domain] = (now + cacheMilliseconds, keys) }
        }
        return keys
    }

    func invalidate(_ domain: String) {
        cache.withLock { _ = $0.removeValue(forKey: domain) }
    }

    static func encode(_ record: DKIMKeyRecord) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(record))
    }

    static func decode(_ bytes: [UInt8]) throws -> DKIMKeyRecord {
        do { return try JSONDecoder().decode(DKIMKeyRecord.self, from: Data(bytes)) } catch {
            throw DKIMError(code: .corrupt, message: "\(error)")
        }
    }
}
