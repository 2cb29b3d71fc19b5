import SMGCore
import SMGRuntime
import SMGBlacklist
import SMGDNS
import SMGNDR
import ServiceLifecycle
import Metrics
import Logging
import Foundation

/// smg-blacklist-monitor — checks every egress source address against DNS blocklists once a day
/// (and listed ones every hour), drains listed good addresses, tells the operators (R19).
await ServiceMain.run(program: "smg-blacklist-monitor", keys: BlacklistKeys.all + DNSKeys.all + NDRKeys.all) { process in
    try await process.run([try MonitorService(process: process)])
}

enum BlacklistKeys {
    static let runAt = ConfigKey<String>.string(
        "blacklist.run_at", default: "05:00", help: "Local time (HH:MM, in blacklist.time_zone) of the daily check.")
    static let timeZone = ConfigKey<String>.string(
        "blacklist.time_zone", default: "Europe/Berlin", help: "IANA time zone of blacklist.run_at (daylight saving handled).")
    static let zones = ConfigKey<String>.string(
        "blacklist.zones", default: DNSBLZone.defaults.map(\.zone).joined(separator: ","),
        help: "DNS blocklists to ask: comma-separated zone or zone|delisting-url (known zones bring their codes and URL).")
    static let notify = ConfigKey<String>.string(
        "blacklist.notify", default: "", help: "The operators' mailbox for listing and clearing notices (empty: events and logs only).")
    static let addresses = ConfigKey<String>.string(
        "blacklist.addresses", default: "",
        help: "Addresses to check besides those every egress announces: comma-separated lane:address (good:198.51.100.11).")
    static let recheck = ConfigKey.duration(
        "blacklist.recheck", default: "1h", min: .seconds(1), max: .seconds(86400),
        help: "How often addresses with an open listing are checked again until they are clear.")

    static let all: [AnyConfigKey] = [runAt.erased, timeZone.erased, zones.erased, notify.erased, addresses.erased, recheck.erased]
}

/// The schedule loop: the daily run at blacklist.run_at (caught up at start when it was missed
/// today), the recheck of listed addresses every blacklist.recheck; each run by exactly one
/// instance of all sites (`BlacklistRunLock`).
struct MonitorService: Service {
    let monitor: BlacklistMonitor
    let lock: BlacklistRunLock
    let schedule: DailySchedule
    let recheck: Duration
    let owner: String
    let logger: Logger
    let metrics = BlacklistMetrics()

    init(process: GatewayProcess) throws {
        self.process = process
        let config = process.config
        let runAt = try config.get(BlacklistKeys.runAt), timeZone = try config.get(BlacklistKeys.timeZone)
        do { schedule = try DailySchedule(at: runAt, zone: timeZone) } catch {
            throw ConfigError(key: error.description.contains("time zone") ? BlacklistKeys.timeZone.name : BlacklistKeys.runAt.name,
                              source: "config", problem: error.description)
        }
        let zones: [DNSBLZone]
        do { zones = try DNSBLZone.parse(try config.get(BlacklistKeys.zones)) } catch {
            throw ConfigError(key: BlacklistKeys.zones.name, source: "config", problem: "\(error)")
        }
        guard !zones.isEmpty else { throw ConfigError(key: BlacklistKeys.zones.name, source: "config", problem: "no zone") }
        var extra: [(lane: String, address: String)] = []
        for item in try config.get(BlacklistKeys.addresses).split(separator: ",") {
            let parts = item.trimmingCharacters(in: .whitespaces).split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, ["good", "bad"].contains(parts[0]), DNSIPAddress(parsing: parts[1]) != nil else {
                throw ConfigError(key: BlacklistKeys.addresses.name, source: "config",
                                  problem: "\"\(item)\" is not lane:address (good:198.51.100.11 or bad:2001:db8::25)")
            }
            extra.append((parts[0], parts[1]))
        }
        let notify = try config.get(BlacklistKeys.notify)
        if notify.isEmpty { process.logger.warning("blacklist.notify is not set: listings are reported as events and logs only") }
        // Blocklist answers are asked fresh on every run: no cache.
        let resolver = try process.makeResolver(cache: nil)
        monitor = BlacklistMonitor(checker: DNSBLChecker(resolver: resolver), zones: zones, store: process.store, extra: extra,
                                   notify: notify.isEmpty ? nil : notify, ownDomain: try config.get(NDRKeys.domain),
                                   site: process.site, instance: process.instance, logger: process.logger)
        lock = BlacklistRunLock(redis: process.redis, keys: process.store.keys)
        recheck = try config.get(BlacklistKeys.recheck)
        owner = "\(process.instance)@\(process.site)/\(UUID().uuidString.prefix(8))"
        logger = process.logger
        logger.info("blacklist monitor scheduled", metadata: ["daily": "\(schedule)", "zones": "\(zones.map(\.zone).joined(separator: ","))"])
    }
    let process: GatewayProcess

    func run() async throws {
        await cancelWhenGracefulShutdown { await self.loop() }
    }

    func loop() async {
        while !Task.isCancelled {
            let now = Date()
            if now >= schedule.run(onDayOf: now) {
                await attempt("daily:\(schedule.localDay(now))", kind: "daily", only: nil)
            }
            let slot = Int(now.timeIntervalSince1970) / max(1, Int(recheck.components.seconds))
            let listings = try? await store.all()
            if let active = listings?.filter(\.isActive), !active.isEmpty {
                await attempt("recheck:\(slot)", kind: "recheck", only: Set(active.map(\.address)))
            }
            await refreshMetrics()
            do { try await Task.sleep(for: .seconds(5)) } catch { return }
        }
    }

    var store: ListingStore { ListingStore(redis: process.redis, keys: process.store.keys) }

    /// The gateway-wide gauges from Redis (every instance reports the same: alert on the max).
    func refreshMetrics() async {
        do {
            metrics.record(listings: try await store.all(), lastRuns: try await store.lastRuns())
        } catch {
            logger.debug("blacklist metrics not refreshed", metadata: ["error": "\(error)"])
        }
    }

    func attempt(_ run: String, kind: String, only: Set<String>?) async {
        do {
            guard let report = try await lock.once(run, owner: owner, { try await monitor.run(kind: kind, only: only) }) else { return }
            try? await process.record(report.events)
            try? await store.recordRun(kind: kind)
            metrics.failures.increment(by: report.failures)
            logger.info("blacklist check done", metadata: [
                "run": "\(run)", "addresses": "\(Set(report.results.map(\.address)).count)", "new": "\(report.listed.count)",
                "cleared": "\(report.cleared.count)", "failures": "\(report.failures)",
            ])
        } catch {
            logger.warning("blacklist check failed; will try again", metadata: ["run": "\(run)", "error": "\(error)"])
        }
    }
}

/// The monitor's metrics. Gauges come from Redis (`refreshMetrics`, every 5 s, right after a run),
/// so every instance on every site reports the gateway's state, also the ones that did not run the
/// check; all exist from the start.
/// - `smg_blacklist_listed_addresses{lane}`: addresses with an active listing (any zone);
/// - `smg_blacklist_listed{pool}`: active listings (address × zone);
/// - `smg_blacklist_last_run_timestamp_seconds{kind="daily"|"recheck"}`: when the last run of
///   that kind finished (by any instance; 0: none recorded yet);
/// - `smg_blacklist_check_failures_total`: failed lookups in runs this instance did.
struct BlacklistMetrics: Sendable {
    static let lanes = ["good", "bad"]
    static let kinds = ["daily", "recheck"]
    let failures = Counter(label: "smg_blacklist_check_failures_total")
    let listedAddresses = Dictionary(uniqueKeysWithValues: lanes.map {
        ($0, Gauge(label: "smg_blacklist_listed_addresses", dimensions: [("lane", $0)]))
    })
    let listed = Dictionary(uniqueKeysWithValues: lanes.map {
        ($0, Gauge(label: "smg_blacklist_listed", dimensions: [("pool", $0)]))
    })
    let lastRun = Dictionary(uniqueKeysWithValues: kinds.map {
        ($0, Gauge(label: "smg_blacklist_last_run_timestamp_seconds", dimensions: [("kind", $0)]))
    })

    func record(listings: [Listing], lastRuns: [String: Int]) {
        let active = listings.filter(\.isActive)
        for lane in Self.lanes {
            listed[lane]?.record(active.filter { $0.lane == lane }.count)
            listedAddresses[lane]?.record(Set(active.filter { $0.lane == lane }.map(\.address)).count)
        }
        for kind in Self.kinds { lastRun[kind]?.record(lastRuns[kind] ?? 0) }
    }
}
