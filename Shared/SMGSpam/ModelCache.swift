import Foundation
public import Logging

/// The classifier's copy of the shared model: loaded from Redis, reloaded when its version
/// changes (checked at most every `refresh`), seeded from the shipped model file when Redis has
/// none. While there is no model at all, `current()` throws and the message waits (fail closed:
/// nothing is passed on unclassified). When Redis is away, the copy in memory keeps serving.
public actor SpamModelCache {
    public struct Unavailable: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    let store: SpamModelStore
    let refresh: Duration
    let seedFile: String?
    let owner: String
    let logger: Logger
    var model: BayesModel?
    var version: Int?
    var checked: ContinuousClock.Instant?
    /// The seeding under way, which concurrent calls wait for instead of seeding again.
    var seeding: Task<Void, any Error>?

    public init(store: SpamModelStore, refresh: Duration, seedFile: String?, owner: String, logger: Logger) {
        self.store = store
        self.refresh = refresh
        self.seedFile = seedFile
        self.owner = owner
        self.logger = logger
    }

    public func current() async throws -> BayesModel {
        let now = ContinuousClock.now
        if let model, let checked, checked.duration(to: now) < refresh { return model }
        do {
            let remote = try await store.version()
            checked = now
            if remote == nil, let seedFile {
                // One seeding per process at a time. The actor is re-entered at every await, and the
                // seeding lock's owner is the process: a second message arriving mid-seeding took
                // the lock as its own ("a failover lost the seeding"), started a second `replace`
                // that deleted the first one's half-written import, and the two swapped in a mix —
                // a partial shared model, kept for good (a model exists, so nobody seeds again).
                if let seeding {
                    try await seeding.value
                } else {
                    let task = Task { [store, owner, logger] in
                        let seed = try SpamModelFile.read(path: seedFile)
                        if try await store.seedIfEmpty(with: seed, owner: owner) {
                            logger.notice("seeded the shared spam model from the model file",
                                          metadata: ["file": "\(seedFile)", "tokens": "\(seed.tokens.count)"])
                        }
                    }
                    seeding = task
                    defer { seeding = nil }
                    try await task.value
                }
            }
            if remote == nil || remote != version {
                if let (loaded, v) = try await store.load() {
                    if loaded.isUsable {
                        logger.info("spam model loaded", metadata: ["version": "\(v)", "tokens": "\(loaded.tokens.count)",
                                                                    "spam": "\(loaded.spamMessages)", "ham": "\(loaded.hamMessages)"])
                        model = loaded
                        version = v
                    } else {
                        logger.warning("the shared spam model has not seen both spam and ham yet", metadata: ["version": "\(v)"])
                    }
                }
            }
        } catch {
            if let model {
                logger.warning("spam model refresh failed; using the copy in memory", metadata: ["error": "\(error)"])
                checked = now
                return model
            }
            throw Unavailable(description: "spam model unavailable: \(error)")
        }
        guard let model else {
            throw Unavailable(description: "no spam model: train one (`smgctl train`) or set classifier.model_file")
        }
        return model
    }

    /// The loaded model's version (nil before the first load).
    public var loadedVersion: Int? { version }
}
