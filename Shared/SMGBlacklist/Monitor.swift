public import SMGCore
public import SMGStore
public import SMGRedis
public import Logging
import SMGNDR
public import Foundation

/// One check of the egress addresses against the DNS blocklists, and what follows from it
/// (R19): listings recorded as removal requests, events, notices to the operators, a listed good
/// address drained until it is clean (never a fallback to the bad pool), cleared ones undrained.
public struct BlacklistMonitor: Sendable {
    public let checker: DNSBLChecker
    public let zones: [DNSBLZone]
    public let store: MessageStore
    /// lane → addresses to check besides the announced pools.
    public let extra: [(lane: String, address: String)]
    /// The operators' mailbox (nil: no notices, only events and logs).
    public let notify: String?
    /// The gateway's own domain (notices come from postmaster@ it and are signed with it).
    public let ownDomain: String
    public let site: String
    public let instance: String
    public let logger: Logger
    /// Who drains: an operator's own drain is never undone by the monitor.
    public static let drainer = "blacklist-monitor"

    public init(checker: DNSBLChecker, zones: [DNSBLZone], store: MessageStore, extra: [(lane: String, address: String)],
                notify: String?, ownDomain: String, site: String, instance: String, logger: Logger) {
        self.checker = checker
        self.zones = zones
        self.store = store
        self.extra = extra
        self.notify = notify
        self.ownDomain = ownDomain
        self.site = site
        self.instance = instance
        self.logger = logger
    }

    public struct Result: Sendable {
        public var address: String
        public var lane: String
        public var zone: String
        public var result: DNSBLResult
    }

    public struct NoAddresses: Error, CustomStringConvertible {
        public var description: String { "no egress address to check: none announced by a running egress, none in blacklist.addresses" }
    }

    public struct Report: Sendable {
        public var results: [Result] = []
        public var listed: [Listing] = []
        public var cleared: [Listing] = []
        public var failures = 0
        /// Active listings per lane after the run.
        public var activeByLane: [String: Int] = [:]
        public var allGoodListed = false
        public var events: [Event] = []
    }

    var listings: ListingStore { ListingStore(redis: store.redis, keys: store.keys) }
    var pools: SourcePoolStore { SourcePoolStore(redis: store.redis, keys: store.keys) }

    /// Checks every address (or only `only`) in every zone, records the outcome and acts on it.
    /// `kind` (`daily`, `hourly`, `manual`) goes into the `blacklist.run` event.
    public func run(kind: String, only: Set<String>? = nil, now: Date = Date()) async throws -> Report {
        let pool = try await listings.poolAddresses(extra: extra, now: now)
        let addresses = pool.filter { only?.contains($0.address) ?? true }
        // Nothing announced yet (egress not up): not a check; the run stays due.
        guard !addresses.isEmpty else { throw NoAddresses() }
        var report = Report()
        report.results = await check(addresses)
        let existing = Dictionary(try await listings.all().map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let t = Int(now.timeIntervalSince1970)
        var active = existing.values.filter(\.isActive)
        func event(_ type: String, _ facts: [String: JSONValue]) -> Event {
            Event(type: type, id: nil, site: site, process: instance, facts: facts)
        }
        for r in report.results {
            let key = "\(r.address) \(r.zone)"
            let zone = zones.first { $0.zone == r.zone }
            switch r.result {
            case .listed(let code, let meaning, let text):
                if var l = existing[key], l.isActive {
                    l.checked = t
                    l.code = code
                    l.meaning = meaning
                    l.text = text
                    try await listings.save(l)
                } else {
                    let l = Listing(address: r.address, lane: r.lane, zone: r.zone, code: code, meaning: meaning, text: text,
                                    delistURL: zone?.delistURL ?? "", state: .open, since: t, checked: t)
                    try await listings.save(l)
                    report.listed.append(l)
                    active.append(l)
                    report.events.append(event(EventType.blacklistListed, [
                        "address": .string(l.address), "lane": .string(l.lane), "zone": .string(l.zone), "code": .string(code),
                        "reason": .string(text ?? meaning), "meaning": .string(meaning), "delist_url": .string(l.delistURL),
                    ]))
                    logger.error("egress address listed", metadata: ["address": "\(l.address)", "zone": "\(l.zone)", "code": "\(code)"])
                }
            case .clean:
                if var l = existing[key], l.isActive {
                    l.state = .cleared
                    l.clearedAt = t
                    l.checked = t
                    try await listings.save(l)
                    report.cleared.append(l)
                    active.removeAll { $0.key == key }
                    report.events.append(event(EventType.blacklistCleared, [
                        "address": .string(l.address), "lane": .string(l.lane), "zone": .string(l.zone),
                        "listed_since": .string(Timestamp.format(Date(timeIntervalSince1970: Double(l.since)))),
                    ]))
                    logger.notice("egress address no longer listed", metadata: ["address": "\(l.address)", "zone": "\(l.zone)"])
                }
            case .failed(let why):
                report.failures += 1
                report.events.append(event(EventType.blacklistCheckFailed, [
                    "address": .string(r.address), "zone": .string(r.zone), "error": .string(why),
                ]))
                logger.warning("blocklist check failed", metadata: ["address": "\(r.address)", "zone": "\(r.zone)", "error": "\(why)"])
            }
        }
        report.events += try await drainAndUndrain(report, active: active, event: event)
        let good = Set(pool.filter { $0.lane == "good" }.map(\.address))
        let listedGood = Set(active.filter { $0.lane == "good" }.map(\.address))
        report.allGoodListed = !good.isEmpty && good.isSubset(of: listedGood)
        if report.allGoodListed {
            report.events.append(event(EventType.blacklistAllGoodListed, ["addresses": .array(good.sorted().map { .string($0) })]))
            logger.critical("every good egress address is listed: good mail waits (it never falls back to the bad pool)")
        }
        for l in active { report.activeByLane[l.lane, default: 0] += 1 }
        report.events.append(event(EventType.blacklistRun, [
            "kind": .string(kind), "addresses": .int(Set(report.results.map(\.address)).count), "zones": .int(zones.count),
            "listed": .int(active.count), "new": .int(report.listed.count), "cleared": .int(report.cleared.count),
            "failures": .int(report.failures),
        ]))
        try await sendNotices(report, now: now)
        return report
    }

    /// Every (address, zone) pair, at most 16 lookups at a time.
    func check(_ addresses: [(lane: String, address: String)]) async -> [Result] {
        let pairs = addresses.flatMap { a in zones.map { (a.lane, a.address, $0) } }
        var results: [Result] = []
        let checker = self.checker
        await withTaskGroup(of: Result.self) { group in
            var next = 0
            while next < pairs.count || !group.isEmpty {
                while next < pairs.count && next - results.count < 16 {
                    let (lane, address, zone) = pairs[next]
                    next += 1
                    group.addTask { Result(address: address, lane: lane, zone: zone.zone, result: await checker.check(address, in: zone)) }
                }
                if let r = await group.next() { results.append(r) }
            }
        }
        return results.sorted { ($0.address, $0.zone) < ($1.address, $1.zone) }
    }

    /// A newly listed good address stops sending; an address with no active listing left that
    /// the monitor drained sends again. Bad addresses keep sending (R19 accepts their listings).
    func drainAndUndrain(_ report: Report, active: [Listing], event: (String, [String: JSONValue]) -> Event) async throws -> [Event] {
        var events: [Event] = []
        let drained = try await pools.drained()
        for l in report.listed where l.lane == "good" && drained[l.address] == nil {
            try await pools.drain(l.address, reason: "listed on \(l.zone) (\(l.code) \(l.meaning))", by: Self.drainer)
            events.append(event(EventType.blacklistDrained, ["address": .string(l.address), "zone": .string(l.zone)]))
        }
        let stillListed = Set(active.map(\.address))
        for address in Set(report.cleared.map(\.address)) where !stillListed.contains(address) {
            if drained[address]?.by == Self.drainer || report.listed.contains(where: { $0.address == address }) {
                try await pools.undrain(address)
                events.append(event(EventType.blacklistUndrained, ["address": .string(address)]))
            }
        }
        return events
    }

    func sendNotices(_ report: Report, now: Date) async throws {
        guard let notify, !report.listed.isEmpty || !report.cleared.isEmpty else { return }
        let about = MessageID.make(now: now)
        var notices: [NewMessage] = []
        if !report.listed.isEmpty {
            var text = "The blacklist monitor found gateway addresses on DNS blocklists:\n\n"
            for l in report.listed {
                text += "- \(l.address) (\(l.lane) pool) on \(l.zone): \(l.code) \(l.meaning)\n"
                if let t = l.text { text += "  The list says: \(t)\n" }
                if l.lane == "good" { text += "  It was drained: egress does not send from it until it is clean again.\n" }
                text += "  What to do: \(l.instructions)\n\n"
            }
            text += "Listed addresses are checked again every hour; you will be told when they are clear.\n"
            notices.append(OperatorNotice.make(about: about, kind: "blacklist-listed", to: notify,
                                               subject: "Blacklisted: " + report.listed.map { "\($0.address) on \($0.zone)" }.joined(separator: ", "),
                                               text: text, domain: ownDomain, site: site, instance: instance, now: now))
        }
        if !report.cleared.isEmpty {
            var text = "These gateway addresses are no longer listed:\n\n"
            for l in report.cleared {
                text += "- \(l.address) (\(l.lane) pool) on \(l.zone), listed since \(Timestamp.format(Date(timeIntervalSince1970: Double(l.since))))\n"
            }
            text += "\nGood-pool addresses the monitor had drained send again.\n"
            notices.append(OperatorNotice.make(about: about, kind: "blacklist-cleared", to: notify,
                                               subject: "Blacklisting lifted: " + report.cleared.map { "\($0.address) on \($0.zone)" }.joined(separator: ", "),
                                               text: text, domain: ownDomain, site: site, instance: instance, now: now))
        }
        for n in notices {
            _ = try await store.accept(id: n.id, envelope: n.envelope, body: n.body, event: n.accepted, topic: n.topic,
                                       redriveAfterMilliseconds: 0)
        }
    }
}

/// "Exactly one instance across all sites": a Redis lock with a time to live, renewed while the
/// holder works (so it survives the holder's death: it expires), plus a marker per finished run.
public struct BlacklistRunLock: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace
    public let ttl: Duration

    public init(redis: RedisClient, keys: Keyspace, ttl: Duration = .seconds(120)) {
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
    }

    static let renew = RedisScript("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
        return 0
        """)
    static let release = RedisScript("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """)

    public func isDone(_ run: String) async throws -> Bool {
        (try await redis.command(["EXISTS", .init(keys.blacklistRun(run))]).int ?? 0) > 0
    }

    /// Runs `body` if this caller gets the lock and `run` is not done yet; marks it done after.
    /// Returns nil when someone else holds the lock or the run is done.
    public func once<T: Sendable>(_ run: String, owner: String, _ body: @Sendable () async throws -> T) async throws -> T? {
        if try await isDone(run) { return nil }
        let ms = Int(ttl.components.seconds * 1000)
        let got = try await redis.command(["SET", .init(keys.blacklistLock), .init(owner), "NX", "PX", .init(ms)])
        guard !got.isNull else { return nil }
        let renewer = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: ttl / 4)
                _ = try? await redis.eval(Self.renew, keys: [.init(keys.blacklistLock)], args: [.init(owner), .init(ms)])
            }
        }
        defer { renewer.cancel() }
        do {
            // Checked again under the lock: another instance may have finished just before.
            if try await isDone(run) {
                _ = try? await redis.eval(Self.release, keys: [.init(keys.blacklistLock)], args: [.init(owner)])
                return nil
            }
            let value = try await body()
            _ = try await redis.command(["SET", .init(keys.blacklistRun(run)), .init(owner), "EX", .init(3 * 86400)])
            _ = try? await redis.eval(Self.release, keys: [.init(keys.blacklistLock)], args: [.init(owner)])
            return value
        } catch {
            _ = try? await redis.eval(Self.release, keys: [.init(keys.blacklistLock)], args: [.init(owner)])
            throw error
        }
    }
}
