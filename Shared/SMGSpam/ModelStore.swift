public import SMGRedis
public import SMGStore
import Crypto
import SMGCore

/// The shared statistical model in Redis, used by every classifier on every site:
/// - `<prefix>spam:tokens` — hash: token → `"<spam> <ham>"` (messages the token appeared in);
/// - `<prefix>spam:meta` — hash: `spam`, `ham` (messages trained), `version` (bumped on each change);
/// - `<prefix>spam:trained` — hash: SHA-256 of a trained message → `spam`|`ham`, so training the
///   same message again is a no-op and training it with the other label moves it (an operator's
///   correction undoes the first lesson instead of adding a second one).
public struct SpamModelStore: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace

    public init(redis: RedisClient, keys: Keyspace = Keyspace()) {
        self.redis = redis
        self.keys = keys
    }

    var tokensKey: String { "\(keys.prefix)spam:tokens" }
    var metaKey: String { "\(keys.prefix)spam:meta" }
    var trainedKey: String { "\(keys.prefix)spam:trained" }
    var importKey: String { "\(keys.prefix)spam:tokens:import" }
    var seedLockKey: String { "\(keys.prefix)spam:seeding" }

    /// The model's version; nil when Redis holds no model.
    public func version() async throws -> Int? {
        let reply = try await redis.command("HGET", .init(metaKey), "version")
        return reply.string.flatMap { Int($0) }
    }

    /// The whole model and its version; nil when Redis holds none.
    public func load() async throws -> (model: BayesModel, version: Int)? {
        let replies = try await redis.pipeline([["HMGET", .init(metaKey), "spam", "ham", "version"],
                                                ["HGETALL", .init(tokensKey)]])
        guard let meta = replies[0].array, meta.count == 3, let version = meta[2].string.flatMap({ Int($0) }) else {
            return nil
        }
        var model = BayesModel(spamMessages: meta[0].string.flatMap { Int($0) } ?? 0,
                               hamMessages: meta[1].string.flatMap { Int($0) } ?? 0)
        let flat = replies[1].array ?? []
        model.tokens.reserveCapacity(flat.count / 2)
        var i = 0
        while i + 1 < flat.count {
            if let token = flat[i].string, let counts = flat[i + 1].bytes.flatMap(Self.parseCounts) {
                model.tokens[token] = counts
            }
            i += 2
        }
        return (model, version)
    }

    static func parseCounts(_ bytes: [UInt8]) -> TokenCounts? {
        guard let space = bytes.firstIndex(of: UInt8(ascii: " ")),
              let s = UInt32(String(decoding: bytes[..<space], as: UTF8.self)),
              let h = UInt32(String(decoding: bytes[(space + 1)...], as: UTF8.self)) else { return nil }
        return TokenCounts(spam: s, ham: h)
    }

    public enum Label: String, Sendable { case spam, ham }

    /// The digest that identifies a trained message: SHA-256 of its raw octets.
    public static func digest(_ raw: [UInt8]) -> String {
        Hex.lower(SHA256.hash(data: raw))
    }

    public enum TrainResult: String, Sendable { case learned, relabelled, unchanged }

    /// Teaches the model one message. Atomic: the counts, the message totals, the trained-message
    /// record and the version change together or not at all.
    @discardableResult
    public func train(_ raw: [UInt8], as label: Label) async throws -> TrainResult {
        try await trainMany([(raw, label)])[0]
    }

    /// Teaches many messages in one round trip per batch.
    public func trainMany(_ messages: [(raw: [UInt8], label: Label)]) async throws -> [TrainResult] {
        var results: [TrainResult] = []
        for batch in stride(from: 0, to: messages.count, by: 50).map({ Array(messages[$0..<min($0 + 50, messages.count)]) }) {
            let calls: [(keys: [RedisArg], args: [RedisArg])] = batch.map { item in
                let tokens = FeatureExtractor.extract(item.raw).tokens
                return ([.init(tokensKey), .init(metaKey), .init(trainedKey)],
                        [.init(Self.digest(item.raw)), .init(item.label.rawValue)] + tokens.sorted().map { RedisArg($0) })
            }
            for reply in try await redis.evalMany(Self.trainScript, calls: calls) {
                if case .error(let m) = reply { throw RedisError(.server, m) }
                switch reply.int {
                case 1: results.append(.learned)
                case 2: results.append(.relabelled)
                default: results.append(.unchanged)
                }
            }
        }
        return results
    }

    /// KEYS: tokens, meta, trained. ARGV: digest, label, tokens…  → 0 unchanged, 1 learned, 2 relabelled.
    /// A relabel subtracts the message's tokens from the old label's counts (never below zero).
    static let trainScript = RedisScript("""
    local old = redis.call('HGET', KEYS[3], ARGV[1])
    local label = ARGV[2]
    if old == label then return 0 end
    local function bump(token, which, delta)
      local v = redis.call('HGET', KEYS[1], token)
      local s, h = 0, 0
      if v then
        local a, b = string.match(v, '^(%d+) (%d+)$')
        s, h = tonumber(a) or 0, tonumber(b) or 0
      end
      if which == 'spam' then s = math.max(0, s + delta) else h = math.max(0, h + delta) end
      if s == 0 and h == 0 then redis.call('HDEL', KEYS[1], token)
      else redis.call('HSET', KEYS[1], token, s .. ' ' .. h) end
    end
    for i = 3, #ARGV do
      if old then bump(ARGV[i], old, -1) end
      bump(ARGV[i], label, 1)
    end
    if old then
      local n = tonumber(redis.call('HGET', KEYS[2], old) or '0')
      if n > 0 then redis.call('HINCRBY', KEYS[2], old, -1) end
    end
    redis.call('HINCRBY', KEYS[2], label, 1)
    redis.call('HINCRBY', KEYS[2], 'version', 1)
    redis.call('HSET', KEYS[3], ARGV[1], label)
    if old then return 2 end
    return 1
    """)

    /// Replaces the shared model with `model` (a model file's contents). The tokens are written to
    /// a side key first and swapped in with the totals in one script, so a classifier never loads
    /// half a model. The trained-message record is cleared: the new model knows none of them.
    public func replace(with model: BayesModel) async throws {
        _ = try await redis.command("DEL", .init(importKey))
        var fields: [RedisArg] = []
        func flush() async throws {
            if fields.isEmpty { return }
            _ = try await redis.command([.init("HSET"), .init(importKey)] + fields)
            fields.removeAll(keepingCapacity: true)
        }
        for (token, counts) in model.tokens {
            fields.append(.init(token))
            fields.append(.init("\(counts.spam) \(counts.ham)"))
            if fields.count >= 2000 { try await flush() }
        }
        try await flush()
        _ = try await redis.eval(Self.swapScript, keys: [.init(importKey), .init(tokensKey), .init(metaKey), .init(trainedKey)],
                                 args: [.init(model.spamMessages), .init(model.hamMessages)])
    }

    static let swapScript = RedisScript("""
    if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[2])
    else redis.call('DEL', KEYS[2]) end
    redis.call('DEL', KEYS[4])
    redis.call('HSET', KEYS[3], 'spam', ARGV[1], 'ham', ARGV[2])
    redis.call('HINCRBY', KEYS[3], 'version', 1)
    return 1
    """)

    /// Loads `model` into Redis when Redis holds no model yet (a fresh installation), once across
    /// all processes: the first to take the seeding lock writes it; the others find it there.
    /// Returns true when this call wrote it.
    public func seedIfEmpty(with model: BayesModel, owner: String) async throws -> Bool {
        if try await version() != nil { return false }
        var locked = try await redis.command("SET", .init(seedLockKey), .init(owner), "NX", "EX", "120").string == "OK"
        if !locked, try await redis.command("GET", .init(seedLockKey)).string == owner {
            // Our own lock, but no model: a Redis failover lost the seeding (the new primary got
            // the lock but not all of the model). Seed again now rather than when the lock expires.
            locked = true
        }
        guard locked else { return false }
        // Released whether seeding worked or failed (a failed one is retried by the next message at
        // once, not after the lock's expiry); it expires by itself only if this process dies here.
        let seeded: Bool
        do {
            seeded = try await version() == nil
            if seeded { try await replace(with: model) }
        } catch {
            _ = try? await redis.command("DEL", .init(seedLockKey))
            throw error
        }
        _ = try? await redis.command("DEL", .init(seedLockKey))
        return seeded
    }

    /// The label a message was trained with, if any.
    public func trainedLabel(of raw: [UInt8]) async throws -> Label? {
        try await redis.command("HGET", .init(trainedKey), .init(Self.digest(raw))).string.flatMap(Label.init(rawValue:))
    }
}
