internal import NIOCore

/// A monotonic clock for cache expiry, injectable for tests.
public protocol DNSClock: Sendable {
    /// Monotonic nanoseconds; only differences matter.
    func nowNanoseconds() -> UInt64
}

/// The process's monotonic clock.
public struct DNSSystemClock: DNSClock {
    public init() {}
    public func nowNanoseconds() -> UInt64 { NIODeadline.now().uptimeNanoseconds }
}

/// A TTL-honouring cache of lookup outcomes, shared by any number of resolvers in a process.
///
/// Owns its entries; an actor, so all access is serialised. Caches answers (for the minimum TTL
/// of the records and CNAMEs), and NXDOMAIN/NODATA for the RFC 2308 negative TTL
/// (min(SOA TTL, SOA MINIMUM)); never caches SERVFAIL, timeouts or denials without SOA.
/// Bounds: at most `maximumEntries` entries (oldest-expiring evicted first), TTLs capped at
/// `maximumTTL` (default 1 day) and negative TTLs at `maximumNegativeTTL` (default 1 hour).
public actor DNSCache {
    public struct Key: Hashable, Sendable {
        public var name: DNSName
        public var type: DNSRecordType
        public init(name: DNSName, type: DNSRecordType) { self.name = name; self.type = type }
    }

    struct Entry {
        var outcome: DNSOutcome
        var expires: UInt64
    }

    /// One cache for the whole process (10 000 entries).
    public static let shared = DNSCache()

    public let maximumEntries: Int
    public let maximumTTL: UInt32
    public let maximumNegativeTTL: UInt32
    private let clock: any DNSClock
    private var entries: [Key: Entry] = [:]
    /// Counters for tests and metrics.
    public private(set) var hits = 0
    public private(set) var misses = 0
    public private(set) var evictions = 0

    public init(maximumEntries: Int = 10_000, maximumTTL: UInt32 = 86_400, maximumNegativeTTL: UInt32 = 3_600,
                clock: any DNSClock = DNSSystemClock()) {
        self.maximumEntries = max(1, maximumEntries)
        self.maximumTTL = maximumTTL
        self.maximumNegativeTTL = maximumNegativeTTL
        self.clock = clock
    }

    public var count: Int { entries.count }

    /// The cached outcome with its remaining TTL, or nil (expired entries are removed).
    public func lookup(_ key: Key) -> DNSOutcome? {
        guard let e = entries[key] else { misses += 1; return nil }
        let now = clock.nowNanoseconds()
        guard now < e.expires else {
            entries[key] = nil
            misses += 1
            return nil
        }
        hits += 1
        let remaining = UInt32(min((e.expires - now + 999_999_999) / 1_000_000_000, UInt64(UInt32.max)))
        if case .answer(let recs, let auth, _) = e.outcome {
            return .answer(recs, authenticated: auth, ttl: remaining)
        }
        return e.outcome
    }

    /// Stores an outcome for `ttl` seconds. Only answer, NXDOMAIN and NODATA are stored; a TTL of 0 stores nothing.
    public func store(_ key: Key, _ outcome: DNSOutcome, ttl: UInt32) {
        let cap: UInt32
        switch outcome {
        case .answer: cap = maximumTTL
        case .nxdomain, .nodata: cap = maximumNegativeTTL
        default: return
        }
        let t = min(ttl, cap)
        guard t > 0 else { return }
        if entries[key] == nil, entries.count >= maximumEntries { evict() }
        entries[key] = Entry(outcome: outcome, expires: clock.nowNanoseconds() + UInt64(t) * 1_000_000_000)
    }

    public func removeAll() { entries.removeAll() }

    /// Drops expired entries; if still full, drops the soonest-expiring tenth.
    private func evict() {
        let now = clock.nowNanoseconds()
        let before = entries.count
        entries = entries.filter { $0.value.expires > now }
        if entries.count >= maximumEntries {
            let drop = max(1, maximumEntries / 10) + (entries.count - maximumEntries)
            for (k, _) in entries.sorted(by: { $0.value.expires < $1.value.expires }).prefix(drop) { entries[k] = nil }
        }
        evictions += before - entries.count
    }
}
