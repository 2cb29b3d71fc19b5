public import Logging
import SMGSync
public import SMGCore
public import SMGStore
public import SMGRedis
public import SMGBus
import NIOCore
public import Prometheus
public import NIOPosix
import Metrics
public import ServiceLifecycle
public import Foundation

/// What every process of the gateway has: its configuration, identity (site, instance), logger,
/// Redis (store and registry), ZeroMQ context, event tap, metrics and health endpoint.
///
/// A service's `main` makes one with `GatewayProcess.bootstrap`, adds its own `Service`s and
/// calls `run`, which handles SIGTERM/SIGINT (graceful drain) through swift-service-lifecycle.
public final class GatewayProcess: Sendable {
    public let program: String
    public let config: Config
    public let site: String
    public let instance: String
    public let logger: Logger
    public let redis: RedisClient
    public let store: MessageStore
    public let registry: Registry
    public let zmq: ZMQContext
    public let events: EventPublisher
    public let metrics: PrometheusCollectorRegistry
    public let group: MultiThreadedEventLoopGroup
    public let busBind: String
    public let busHighWaterMark: Int
    public let drainTimeout: Duration
    let advertiseHost: String
    let registrations = Locked<[String: Set<String>]>([:])
    let healthChecks = Locked<[(name: String, check: HTTPStatusServer.HealthCheck)]>([])

    /// Adds a check to `/healthz` (a stage: its loops run and Redis answers). The endpoint is
    /// green only when every check is.
    public func addHealthCheck(_ name: String, _ check: @escaping HTTPStatusServer.HealthCheck) {
        healthChecks.withLock { $0.append((name, check)) }
    }

    /// How long a registry entry lives without a heartbeat, and how often it is refreshed.
    public static let registryTTL = 10_000
    static let heartbeatEvery = Duration.seconds(2)

    /// The checks of the common keys that single keys cannot make (keys that only make sense
    /// together, files they name): what `init` would refuse, for `--check-config`.
    public static func checkCommonKeys(_ config: Config) throws {
        _ = try RedisSettings.endpoint(from: config)
        _ = try CommonKeys.busSecurity(config)
        try checkReplicaWait(config)
    }

    static func checkReplicaWait(_ config: Config) throws {
        if try config.get(CommonKeys.acceptReplicas) > 0,
           try config.get(CommonKeys.acceptReplicasTimeout) >= config.get(CommonKeys.redisTimeout) {
            throw ConfigError(key: CommonKeys.acceptReplicasTimeout.name, source: "config",
                              problem: "must be shorter than redis.timeout (the WAIT would time out the connection)")
        }
    }

    /// Reads the configuration (files in order, then the environment), sets up logging and
    /// metrics, and connects lazily to Redis. Throws a `ConfigError` naming the bad key.
    public static func bootstrap(program: String, configFiles: [String], keys: [AnyConfigKey],
                                 environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> GatewayProcess
    {
        let config = try Config(files: configFiles, environment: environment, keys: CommonKeys.all + keys)
        return try GatewayProcess(program: program, config: config)
    }

    init(program: String, config: Config) throws {
        self.program = program
        self.config = config
        site = try config.get(CommonKeys.site)
        let named = try config.get(CommonKeys.instance)
        instance = named.isEmpty ? "\(program)@\(ProcessInfo.processInfo.hostName):\(getpid())" : named
        let level = Logger.Level(rawValue: try config.get(CommonKeys.logLevel)) ?? .info
        LogSetup.bootstrap(process: instance, site: site, level: level)
        var logger = Logger(label: program)
        logger.logLevel = level
        self.logger = logger

        metrics = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics))

        let endpoint = try RedisSettings.endpoint(from: config)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // TLS to Redis (rediss://) gets a thread of its own (the client makes it): every byte of
        // every accept and load is encrypted there, which must not slow the SMTP sessions that
        // share `group`.
        redis = RedisClient(endpoint: endpoint, poolSize: try config.get(CommonKeys.redisPool),
                            timeout: try config.get(CommonKeys.redisTimeout), logger: logger)
        let keys = Keyspace(prefix: try config.get(CommonKeys.keyPrefix))
        let replicas = try config.get(CommonKeys.acceptReplicas)
        let replicaWait = try config.get(CommonKeys.acceptReplicasTimeout)
        try Self.checkReplicaWait(config)
        store = MessageStore(redis: redis, keys: keys, globalEventsMaxLength: try config.get(CommonKeys.eventsMax),
                             retentionSeconds: try config.get(CommonKeys.retention).milliseconds / 1000,
                             bodyRetentionSeconds: try config.get(CommonKeys.bodyRetention).milliseconds / 1000,
                             messageEventsMaxLength: try config.get(CommonKeys.messageEventsMax),
                             acceptReplicas: replicas > 0
                                ? ReplicaAcknowledgement(count: replicas, timeoutMilliseconds: Int(replicaWait.milliseconds)) : nil)
        registry = Registry(redis: redis, keys: keys)
        let busSecurity = try CommonKeys.busSecurity(config)
        zmq = try ZMQContext(security: busSecurity, logger: logger)
        if let busSecurity {
            logger.info("bus: CurveZMQ on", metadata: [
                "public_key": .string(busSecurity.keyPair.publicZ85),
                "authorized_keys": "\(busSecurity.authorizedKeys.count)",
            ])
        }
        events = try EventPublisher(context: zmq, bind: try config.get(CommonKeys.eventsBind), logger: logger)
        busBind = try config.get(CommonKeys.busBind)
        busHighWaterMark = try config.get(CommonKeys.busHighWaterMark)
        advertiseHost = try config.get(CommonKeys.busAdvertise)
        drainTimeout = try config.get(CommonKeys.drainTimeout)
        register(kind: "events", endpoint: events.publicEndpoint)
    }

    /// Makes an event of this process.
    public func event(_ type: String, id: MessageID?, facts: [String: JSONValue] = [:]) -> Event {
        Event(type: type, id: id, site: site, process: instance, facts: facts)
    }

    /// Publishes events on this process's tap (after they were recorded in Redis), without
    /// waiting: one hop onto the PUB socket's queue for all of them. `json`: the events' JSON if
    /// the caller has it already (the commit that recorded them encoded them once).
    public func publish(_ events: [Event], json: [[UInt8]]? = nil) async {
        let payloads = json?.count == events.count ? json! : events.map { $0.jsonBytes() }
        self.events.publishDetached(zip(events, payloads).map { BusMessage(topic: $0.tapTopic, payload: $1) })
    }

    /// Records events that are not part of a stage transition, then publishes them.
    public func record(_ events: [Event]) async throws {
        try await store.append(events)
        await publish(events)
    }

    /// The endpoint others should connect to: the bound one, with `bus.advertise_host` if set
    /// (a registry entry's `?curve=…` is kept).
    public func advertised(_ bound: String) -> String {
        let query = bound.firstIndex(of: "?").map { bound[$0...] } ?? ""
        let address = bound.dropLast(query.count)
        guard !advertiseHost.isEmpty, let schemeEnd = address.range(of: "://"),
              let colon = address.range(of: ":", options: .backwards), colon.lowerBound > schemeEnd.upperBound
        else { return bound }
        return String(address[..<schemeEnd.upperBound]) + advertiseHost + String(address[colon.lowerBound...]) + query
    }

    /// Adds an endpoint to this process's registry heartbeat (kept alive while the process runs).
    public func register(kind: String, endpoint: String) {
        let e = advertised(endpoint)
        registrations.withLock { _ = $0[kind, default: []].insert(e) }
    }

    /// Makes a bound PUSH socket for `topic`, registered so that consumers find it.
    public func makeProducer(topic: String) throws -> BusPusher {
        let pusher = try BusPusher(context: zmq, bind: busBind, highWaterMark: busHighWaterMark, logger: logger)
        register(kind: topic, endpoint: pusher.publicEndpoint)
        return pusher
    }

    /// Runs the given services plus the registry heartbeat and the health/metrics endpoint,
    /// until SIGTERM/SIGINT (graceful) or a service fails.
    public func run(_ services: [any Service], health: HTTPStatusServer.HealthCheck? = nil) async throws {
        var all: [any Service] = [Heartbeat(process: self)]
        let listen = try config.get(CommonKeys.httpListen)
        if !listen.isEmpty {
            guard let (host, port) = HostPort.parse(listen) else {
                throw ConfigError(key: CommonKeys.httpListen.name, source: "config", problem: "expected host:port")
            }
            let base: HTTPStatusServer.HealthCheck = health ?? { [redis] in
                do {
                    _ = try await redis.command("PING")
                    return (true, "redis ok")
                } catch { return (false, "redis: \(error)") }
            }
            let check: HTTPStatusServer.HealthCheck = { [self] in
                var (healthy, detail) = await base()
                for (_, extra) in healthChecks.withLock({ $0 }) {
                    let (ok, text) = await extra()
                    healthy = healthy && ok
                    detail += "; " + text
                }
                return (healthy, detail)
            }
            all.append(StatusService(process: self, host: host, port: port, health: check))
        }
        all += services
        let serviceGroup = ServiceGroup(configuration: .init(
            services: all.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint],
            cancellationSignals: [], logger: logger))
        logger.info("starting", metadata: ["config": .string(config.effective().sorted { $0.key < $1.key }
                .map { "\($0.key)=\($0.value)" }.joined(separator: " "))])
        defer { shutdownResources() }
        try await serviceGroup.run()
        logger.info("stopped")
    }

    func shutdownResources() {
        redis.close()
        redis.waitUntilClosed()
        try? group.syncShutdownGracefully()
    }
}

/// Refreshes this process's registry entries; removes them on shutdown so peers stop using them.
struct Heartbeat: Service {
    let process: GatewayProcess

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await beat()
                try? await Task.sleep(for: GatewayProcess.heartbeatEvery)
            }
        }
        let entries = process.registrations.withLock { $0 }
        for (kind, endpoints) in entries {
            for endpoint in endpoints { try? await process.registry.unregister(kind: kind, endpoint: endpoint) }
        }
    }

    func beat() async {
        let entries = process.registrations.withLock { $0 }
        for (kind, endpoints) in entries {
            for endpoint in endpoints {
                do {
                    try await process.registry.register(kind: kind, endpoint: endpoint,
                                                        ttlMilliseconds: GatewayProcess.registryTTL)
                } catch {
                    process.logger.warning("registry heartbeat failed", metadata: ["error": "\(error)"])
                    return
                }
            }
        }
    }
}

/// The /healthz + /metrics server as a service.
struct StatusService: Service {
    let process: GatewayProcess
    let host: String
    let port: Int
    let health: HTTPStatusServer.HealthCheck

    func run() async throws {
        let server = try await HTTPStatusServer.start(host: host, port: port, group: process.group,
                                                      registry: process.metrics, health: health)
        if let address = server.localAddress, let bound = address.port {
            let endpoint = "http://\(host):\(bound)"
            process.register(kind: "http", endpoint: endpoint)
            try? await process.registry.register(kind: "http", endpoint: endpoint,
                                                 ttlMilliseconds: GatewayProcess.registryTTL)
            process.logger.info("status endpoint listening", metadata: ["http": .string(endpoint)])
        }
        try? await gracefulShutdown()
        await server.close()
    }
}

public enum HostPort {
    /// `host:port`, `[v6]:port`; nil when malformed.
    public static func parse(_ text: String) -> (String, Int)? {
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (0...65535).contains(port) else { return nil }
            return (host, port)
        }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port) else { return nil }
        let host = String(text[..<colon])
        return host.isEmpty ? nil : (host, port)
    }
}
