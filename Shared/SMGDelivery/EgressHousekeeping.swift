public import SMGCore
public import SMGRuntime
public import SMGStore
public import SMGDNS
public import SMGTLSPolicy
import SMGNDR
import SMGAccounts
import SMGRedis
public import ServiceLifecycle
import NIOCore
public import Logging
import Foundation

extension TLSPolicyEngine {
    /// The engine an egress uses, from its configuration: DANE through `resolver` (its AD bit is
    /// believed only with `dns.trusted`), MTA-STS cached in Redis, forced rules from Redis.
    public static func make(config: Config, resolver: DNSResolver?, store: MessageStore, logger: Logger) throws -> TLSPolicyEngine {
        var sts: MTASTSPolicySource? = nil
        if let resolver, try config.get(DeliveryKeys.mtaSTS) {
            let timeout = try config.get(DeliveryKeys.mtaSTSTimeout)
            let fetcher = MTASTSFetcher(resolver: resolver, caFile: try config.get(DeliveryKeys.tlsCAFile),
                                        port: try config.get(DeliveryKeys.mtaSTSPort),
                                        timeout: .milliseconds(Int64(timeout.milliseconds)))
            sts = MTASTSPolicySource(fetcher: fetcher, redis: store.redis, keys: store.keys, logger: logger)
        }
        return TLSPolicyEngine(resolver: resolver, sts: sts, rules: ForcedTLSRuleStore(redis: store.redis, keys: store.keys),
                               dane: try config.get(DeliveryKeys.dane), providerRules: try config.get(DeliveryKeys.tlsProviderRules))
    }
}

/// An egress's chores: announces its source addresses for the blacklist monitor (every minute),
/// releases its lane's messages held for TLS once their recheck time has come (every 10 s), and —
/// in the good lane — sends yesterday's TLS-RPT reports once per day for the whole gateway
/// (checked hourly; `Keyspace.tlsReportSent` makes it once).
public struct EgressHousekeeping: Service {
    let lane: Lane
    let pool: [SourceAddress]
    let admin: QueueAdmin
    let store: MessageStore
    let reports: TLSReportSender?
    let logger: Logger

    public init(lane: Lane, pool: [SourceAddress], process: GatewayProcess, resolver: DNSResolver?) throws {
        self.lane = lane
        self.pool = pool
        store = process.store
        admin = QueueAdmin(store: process.store, site: process.site, process: process.instance)
        logger = process.logger
        let config = process.config
        if lane == .good, try config.get(DeliveryKeys.tlsReports), let resolver {
            var submitter = try config.get(DeliveryKeys.tlsReportSubmitter)
            if submitter.isEmpty { submitter = try config.get(NDRKeys.domain) }
            reports = TLSReportSender(store: process.store, resolver: resolver,
                                      organization: try config.get(DeliveryKeys.tlsReportOrganization),
                                      submitter: submitter, site: process.site, instance: process.instance)
        } else {
            reports = nil
        }
    }

    public func run() async throws {
        // Chores only: a shutdown cancels them at once (nothing here is half-done state).
        await cancelWhenGracefulShutdown { await self.loop() }
    }

    func loop() async {
        var lastReportCheck = ContinuousClock.now - .seconds(3600)
        var lastAnnounce = ContinuousClock.now - .seconds(60)
        let pools = SourcePoolStore(redis: store.redis, keys: store.keys)
        let announced = pool.compactMap { s in s.address.map { (address: $0, helo: s.heloName) } }
        while !Task.isCancelled {
            if ContinuousClock.now - lastAnnounce >= .seconds(60) {
                do {
                    try await pools.announce(lane: lane.rawValue, addresses: announced)
                    lastAnnounce = .now
                } catch {
                    logger.warning("could not announce the source addresses", metadata: ["error": "\(error)"])
                }
            }
            await releaseDue()
            if let reports, ContinuousClock.now - lastReportCheck >= .seconds(3600) {
                lastReportCheck = .now
                let yesterday = TLSRPT.day(Date().addingTimeInterval(-86400))
                do {
                    if let sent = try await reports.send(day: yesterday) {
                        logger.info("TLS reports sent", metadata: ["day": "\(yesterday)", "mails": "\(sent.count)"])
                    }
                } catch {
                    logger.warning("TLS reports not sent; will try again", metadata: ["day": "\(yesterday)", "error": "\(error)"])
                }
            }
            do { try await Task.sleep(for: .seconds(10)) } catch { return }
        }
    }

    /// Releases this lane's TLS-held messages whose `tls_recheck_at` has passed. Another egress
    /// may release the same message first; that is fine (the second release finds it not held).
    func releaseDue() async {
        let redis = store.redis
        let keys = store.keys
        var cursor = "0"
        var due: [MessageID] = []
        let now = Date()
        repeat {
            guard let reply = try? await redis.command(["HSCAN", .init(keys.held), .init(cursor), "COUNT", "500"]),
                  let parts = reply.array, parts.count == 2, let next = parts[0].string
            else { return }
            cursor = next
            let candidates = parts[1].fieldPairs.compactMap { $0.value.string == lane.topic ? MessageID($0.field) : nil }
            guard !candidates.isEmpty,
                  let replies = try? await redis.pipeline(candidates.map {
                      ["HMGET", .init(keys.message($0)), "tls_recheck_at", "held_reason"]
                  })
            else { continue }
            for (id, value) in zip(candidates, replies) {
                let fields = value.array ?? []
                // Only messages still held for TLS (an operator may have re-held one for another reason).
                guard fields.count == 2, fields[1].string?.hasPrefix("TLS required") == true,
                      let text = fields[0].string, let at = Timestamp.parse(text), at <= now
                else { continue }
                due.append(id)
            }
        } while cursor != "0"
        for id in due {
            if (try? await admin.release(id, operator: "egress-\(lane.rawValue) (TLS recheck)")) != nil {
                logger.info("held for TLS: released for another try", metadata: ["id": "\(id)"])
            }
        }
    }
}

extension DeliveryWorker {
    /// Everything one egress process runs for `lane`: the stage runner with the delivery worker
    /// (routing, TLS policy, pools, NDRs, bounce counts for the brake) and its housekeeping.
    public static func services(lane: Lane, process: GatewayProcess) throws -> [any Service] {
        let config = process.config
        var settings = try StageSettings(name: "egress-\(lane.rawValue)", inputTopic: lane.topic, outputTopics: [],
                                         config: config, leaseKey: DeliveryKeys.lease,
                                         lifetimeKey: DeliveryKeys.maxLifetime, expireRetries: false)
        settings.claimsWaitForReplicas = true
        let resolver = try process.makeResolver()
        var counter: TLSReportCounter? = nil
        if try config.get(DeliveryKeys.tlsReports) {
            counter = TLSReportCounter(redis: process.store.redis, keys: process.store.keys)
            counter?.start()
        }
        let worker = try DeliveryWorker(
            lane: lane, config: config,
            ndr: try NDRSender(config: config, site: process.site, instance: process.instance),
            resolver: resolver,
            poolStore: SourcePoolStore(redis: process.store.redis, keys: process.store.keys),
            brakes: BrakeStore(redis: process.store.redis, keys: process.store.keys),
            tlsPolicy: try TLSPolicyEngine.make(config: config, resolver: resolver, store: process.store, logger: process.logger),
            tlsReports: counter)
        return [try StageRunner(process: process, settings: settings, worker: worker),
                try EgressHousekeeping(lane: lane, pool: worker.pool.entries, process: process, resolver: resolver)]
    }
}
