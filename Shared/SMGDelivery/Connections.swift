public import SMTPClient
public import SMGStore
import NIOConcurrencyHelpers
public import Logging
import Foundation

/// One source address of an egress lane with the name it says in EHLO (R17).
public struct SourceAddress: Sendable, Hashable, CustomStringConvertible {
    /// nil: the kernel's choice (only when no pool is configured).
    public var address: String?
    public var heloName: String
    public init(address: String?, heloName: String) {
        self.address = address
        self.heloName = heloName
    }
    public var description: String { address ?? "*" }
    var isIPv6: Bool? { address.map { $0.contains(":") } }
}

/// The lane's source addresses, used in rotation, minus the drained ones.
///
/// The drained set lives in Redis (`SourcePoolStore`), is read at most every `refresh`, and when
/// Redis cannot be read the last known set stays in force (an address is never "undrained" by
/// an outage). Thread-safe; shared by every delivery of the process.
public final class SourcePool: Sendable {
    public let entries: [SourceAddress]
    let store: SourcePoolStore?
    let refresh: Duration
    private let state = NIOLockedValueBox<(next: Int, drained: Set<String>, fetched: ContinuousClock.Instant?)>(
        (0, [], nil))

    public init(entries: [SourceAddress], store: SourcePoolStore?, refresh: Duration = .seconds(2)) {
        precondition(!entries.isEmpty, "a pool needs an address")
        self.entries = entries
        self.store = store
        self.refresh = refresh
    }

    /// The drained addresses as last read.
    public func drained(logger: Logger) async -> Set<String> {
        let (known, fetched) = state.withLockedValue { ($0.drained, $0.fetched) }
        if let fetched, ContinuousClock.now - fetched < refresh { return known }
        guard let store else { return known }
        do {
            let now = Set(try await store.drained().keys)
            state.withLockedValue { $0.drained = now; $0.fetched = .now }
            return now
        } catch {
            logger.warning("cannot read drained source addresses; keeping the last known set",
                           metadata: ["error": "\(error)"])
            state.withLockedValue { $0.fetched = .now }
            return known
        }
    }

    /// The next usable source for a target of the given family, in rotation; nil when every
    /// matching address is drained (`exhausted` then tells whether any address matched at all).
    public func next(ipv6: Bool, logger: Logger) async -> (source: SourceAddress?, exhausted: Bool) {
        let drained = await drained(logger: logger)
        let matching = entries.filter { $0.isIPv6 == nil || $0.isIPv6 == ipv6 }
        let usable = matching.filter { $0.address.map { !drained.contains($0) } ?? true }
        guard !usable.isEmpty else { return (nil, !matching.isEmpty) }
        let index = state.withLockedValue { s -> Int in
            defer { s.next &+= 1 }
            return s.next
        }
        return (usable[index % usable.count], false)
    }
}

/// Open SMTP sessions kept for the next message to the same destination, plus per-destination
/// concurrency and rate limits. One per egress process; an actor (short critical sections only —
/// no I/O happens inside it, closing is done by detached tasks).
public actor ConnectionCache {
    public struct Key: Hashable, Sendable {
        public var target: SMTPTarget
        public var source: String?
        public var tls: String
    }

    let reuseLimit: Int
    let idleTimeout: Duration
    private var idle: [Key: [(session: SMTPSession, since: ContinuousClock.Instant)]] = [:]
    private var active: [String: Int] = [:]
    private var buckets: [String: (tokens: Double, at: ContinuousClock.Instant)] = [:]

    public init(reuseLimit: Int, idleTimeout: Duration) {
        self.reuseLimit = reuseLimit
        self.idleTimeout = idleTimeout
    }

    /// An idle session for `key`, if one is still good.
    public func take(_ key: Key) -> SMTPSession? {
        let now = ContinuousClock.now
        while var list = idle[key], !list.isEmpty {
            let entry = list.removeLast()
            idle[key] = list.isEmpty ? nil : list
            if now - entry.since < idleTimeout, entry.session.isUsable { return entry.session }
            Self.closeDetached(entry.session)
        }
        return nil
    }

    /// Gives a session back after a transaction: kept if still good and under the reuse limit.
    public func put(_ session: SMTPSession, key: Key) {
        guard idleTimeout > .zero, session.isUsable, session.transactions < reuseLimit else {
            Self.closeDetached(session)
            return
        }
        idle[key, default: []].append((session, .now))
    }

    /// Closes sessions idle longer than the timeout (called every second by the worker's sweeper).
    public func sweep() {
        let now = ContinuousClock.now
        for (key, list) in idle {
            let (keep, drop) = (list.filter { now - $0.since < idleTimeout }, list.filter { now - $0.since >= idleTimeout })
            drop.forEach { Self.closeDetached($0.session) }
            idle[key] = keep.isEmpty ? nil : keep
        }
    }

    public var idleCount: Int { idle.values.reduce(0) { $0 + $1.count } }

    /// Takes one of `limit` session slots of `destination`; false when all are busy.
    public func acquire(_ destination: String, limit: Int) -> Bool {
        let n = active[destination, default: 0]
        guard n < limit else { return false }
        active[destination] = n + 1
        return true
    }

    public func release(_ destination: String) {
        let n = active[destination, default: 1] - 1
        active[destination] = n <= 0 ? nil : n
    }

    /// One message's worth of `perMinute` for `destination` (a token bucket holding a minute's worth).
    public func takeRateToken(_ destination: String, perMinute: Int) -> Bool {
        let now = ContinuousClock.now
        var bucket = buckets[destination] ?? (Double(perMinute), now)
        let elapsed = Double((now - bucket.at).components.seconds) + Double((now - bucket.at).components.attoseconds) / 1e18
        bucket.tokens = min(Double(perMinute), bucket.tokens + elapsed * Double(perMinute) / 60)
        bucket.at = now
        guard bucket.tokens >= 1 else {
            buckets[destination] = bucket
            return false
        }
        bucket.tokens -= 1
        buckets[destination] = bucket
        return true
    }

    static func closeDetached(_ session: SMTPSession) {
        Task {
            var session = session
            await session.close()
        }
    }
}
