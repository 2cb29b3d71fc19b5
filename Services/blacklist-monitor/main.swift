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
    let listed: [String: Gauge]
    let failures = Counter(label: "smg_blacklist_check_failures_total")
    let lastRun = Gauge(label: "smg_blacklist_last_run_timestamp_seconds")

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
        listed = ["good": Gauge(label: "smg_blacklist_listed", dimensions: [("pool", "good")]),
                  "bad": Gauge(label: "smg_blacklist_listed", dimensions: [("pool", "bad")])]
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
            if let active = try? await ListingStore(redis: process.redis, keys: process.store.keys).all().filter(\.isActive),
               !active.isEmpty {
                await attempt("recheck:\(slot)", kind: "recheck", only: Set(active.map(\.address)))
            }
            do { try await Task.sleep(for: .seconds(5)) } catch { return }
        }
    }

    func attempt(_ run: String, kind: String, only: Set<String>?) async {
        do {
            guard let report = try await lock.once(run, owner: owner, { try await monitor.run(kind: kind, only: only) }) else { return }
            try? await process.record(report.events)
            failures.increment(by: report.failures)
            for (lane, gauge) in listed { gauge.record(report.activeByLane[lane] ?? 0) }
            lastRun.record(Date().timeIntervalSince1970)
            logger.info("blacklist check done", metadata: [
                "run": "\(run)", "addresses": "\(Set(report.results.map(\.address)).count)", "new": "\(report.listed.count)",
                "cleared": "\(report.cleared.count)", "failures": "\(report.failures)",
            ])
        } catch {
            logger.warning("blacklist check failed; will try again", metadata: ["run": "\(run)", "error": "\(error)"])
        }
    }
}
