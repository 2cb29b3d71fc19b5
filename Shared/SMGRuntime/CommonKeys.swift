import SMGStore
import SMGNDR
import SMGRedis
public import SMGBus
/// Configuration keys every process has. Service-specific keys live beside each service.
public enum CommonKeys {
    public static let site = ConfigKey<String>.string(
        "site", default: "eu-de-01", help: "Site this process runs on (eu-de-01, eu-de-02, eu-de-03, …); in every event.",
        validate: { $0.isEmpty || $0.contains(" ") ? "must be a non-empty word" : nil })
    public static let instance = ConfigKey<String>.string(
        "instance", default: "",
        help: "Name of this instance in events and logs; empty = <program>@<hostname>:<pid>.")
    public static let redisURL = ConfigKey<String>.string(
        "redis.url", default: "redis://127.0.0.1:6379/0",
        help: "Redis, the system of record: redis://[user:password@]host:port/db, unix:///path?db=N, redis+sentinel://[user:password@]s1:26379,s2:26379/<master>[/db]; rediss:// and rediss+sentinel:// for TLS (see redis.tls_*).")
    public static let redisPool = ConfigKey<Int>.int(
        "redis.pool", default: 8, range: 1...64,
        help: "Connections to Redis (each served by its own queue); more connections let Redis group more writes per fsync.")
    public static let redisTimeout = ConfigKey.duration(
        "redis.timeout", default: "2s", min: .milliseconds(50), max: .seconds(60),
        help: "Connect and per-command timeout for Redis; past it the operation fails (SMTP gets a 4xx).")
    public static let redisTLSCAFile = ConfigKey<String>.string(
        "redis.tls_ca_file", default: "",
        help: "rediss:// only: PEM bundle of the CAs that sign the Redis servers' and Sentinels' certificates; empty = the system's roots.",
        validate: { $0.isEmpty ? nil : RedisTLS.problemWithCertificateFile($0) })
    public static let redisTLSCertificate = ConfigKey<String>.string(
        "redis.tls_certificate", default: "",
        help: "rediss:// only: PEM client certificate (chain) for Redis servers with tls-auth-clients yes; set together with redis.tls_key; empty = none.",
        validate: { $0.isEmpty ? nil : RedisTLS.problemWithCertificateFile($0) })
    public static let redisTLSKey = ConfigKey<String>.string(
        "redis.tls_key", default: "",
        help: "rediss:// only: PEM private key (unencrypted) of redis.tls_certificate; keep it readable by the service user only.",
        validate: { $0.isEmpty ? nil : RedisTLS.problemWithKeyFile($0) })
    public static let redisTLSServerName = ConfigKey<String>.string(
        "redis.tls_server_name", default: "",
        help: "rediss:// only: the name sent as SNI and checked against every Redis/Sentinel certificate; empty = the host connected to (the URL's, or the address Sentinel names). Hostname verification is always on.")
    public static let keyPrefix = ConfigKey<String>.string(
        "redis.key_prefix", default: Keyspace.defaultPrefix, help: "Prefix of every Redis key (lets several gateways share a Redis).")
    public static let busBind = ConfigKey<String>.string(
        "bus.bind", default: "tcp://127.0.0.1:*",
        help: "Where this process binds its ZeroMQ producer sockets (`*` = any free port; it is registered in Redis).")
    public static let busAdvertise = ConfigKey<String>.string(
        "bus.advertise_host", default: "",
        help: "Host other processes use to reach this one's sockets; empty = the bound address.")
    public static let busCurveKeyFile = ConfigKey<CurveKeyPair?>(
        "bus.curve_key_file", default: "", kind: "file (or empty)",
        help: "File with this process's CurveZMQ keypair (`smgctl bus keygen`; mode 0600, refused if group or others may read it). Set: every ZeroMQ socket is encrypted and authenticated — the sockets this process binds serve only clients whose key is in bus.curve_authorized_keys, it registers them with their server key (endpoint?curve=<hex>), and it connects only to endpoints registered with a key. Empty: plaintext ZeroMQ, for one host or a trusted network only."
    ) { path in
        if path.isEmpty { return .success(nil) }
        do { return .success(try CurveKeyFile.read(path: path)) } catch { return .failure(ConfigProblem("\(error)")) }
    }
    public static let busCurveAuthorizedKeys = ConfigKey<[[UInt8]]?>(
        "bus.curve_authorized_keys", default: "", kind: "file (or empty)",
        help: "With bus.curve_key_file: a file of the Z85 public keys (one per line, `#` comments, blank lines ignored; `smgctl bus pubkey` prints a key file's) of the processes allowed to connect to this one's sockets. This process's own key is always allowed; empty = only processes with the same keypair (every site sharing one key needs no list). The list is read at start."
    ) { path in
        if path.isEmpty { return .success(nil) }
        do { return .success(try CurveKeyFile.readAuthorizedKeys(path: path)) } catch { return .failure(ConfigProblem("\(error)")) }
    }
    public static let busHighWaterMark = ConfigKey<Int>.int(
        "bus.high_water_mark", default: 1000, range: 1...1_000_000,
        help: "ZeroMQ queue bound per peer (messages); past it, producers slow down (backpressure).")
    public static let eventsBind = ConfigKey<String>.string(
        "events.bind", default: "tcp://127.0.0.1:*", help: "Where this process binds its event tap (ZeroMQ PUB).")
    public static let httpListen = ConfigKey<String>.string(
        "http.listen", default: "127.0.0.1:0",
        help: "host:port of /healthz and /metrics (port 0 = any free port, registered in Redis); empty = off.")
    public static let logLevel = ConfigKey<String>.string(
        "log.level", default: "info", help: "trace, debug, info, notice, warning, error or critical.",
        validate: { ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains($0) ? nil : "unknown level" })
    public static let retention = ConfigKey.duration(
        "store.retention", default: "7d", min: .seconds(60), max: .seconds(400 * 86400),
        help: "How long the record and event log of a finished message are kept (for smgctl trace).")
    public static let bodyRetention = ConfigKey.duration(
        "store.body_retention", default: "1h", min: .seconds(1), max: .seconds(400 * 86400),
        help: "How long the body of a finished message is kept.")
    public static let messageEventsMax = ConfigKey<Int>.int(
        "store.message_events_max", default: 1000, range: 10...1_000_000,
        help: "Approximate length cap of each message's own event stream (a message retried for days stays bounded).")
    public static let eventsMax = ConfigKey<Int>.int(
        "store.events_max", default: 1_000_000, range: 1000...1_000_000_000,
        help: "Approximate length cap of the global event stream smg:events.")
    public static let acceptReplicas = ConfigKey<Int>.int(
        "store.accept_replicas", default: 0, range: 0...16,
        help: "Answer 250 only once this many replicas have the accepted message (WAIT after the accept), and count a delivery as recorded only once this many have its outcome (else the commit is repeated, so a failover cannot make it deliver again); 0 = the primary's fsync only.")
    public static let acceptReplicasTimeout = ConfigKey.duration(
        "store.accept_replicas_timeout", default: "1s", min: .milliseconds(10), max: .seconds(60),
        help: "How long an accept waits for store.accept_replicas; fewer in time → 451 (the client's retry is deduplicated).")
    public static let drainTimeout = ConfigKey.duration(
        "shutdown.drain_timeout", default: "15s", min: .zero, max: .seconds(600),
        help: "On SIGTERM: how long work in flight may take to finish before its leases are handed back.")

    public static let all: [AnyConfigKey] = [
        site.erased, instance.erased, redisURL.erased, redisPool.erased, redisTimeout.erased, keyPrefix.erased,
        redisTLSCAFile.erased, redisTLSCertificate.erased, redisTLSKey.erased, redisTLSServerName.erased,
        busBind.erased, busAdvertise.erased, busCurveKeyFile.erased, busCurveAuthorizedKeys.erased, busHighWaterMark.erased, eventsBind.erased, httpListen.erased,
        logLevel.erased, retention.erased, bodyRetention.erased, eventsMax.erased, messageEventsMax.erased, drainTimeout.erased,
        acceptReplicas.erased, acceptReplicasTimeout.erased,
    ]
}

/// Keys of a pipeline stage (scanner, classifier, signer, egress).
public enum StageKeys {
    public static let concurrency = ConfigKey<Int>.int(
        "stage.concurrency", default: 8, range: 1...1024, help: "Messages this process works on at once.")
    public static let lease = ConfigKey.duration(
        "stage.lease", default: "30s", min: .seconds(1), max: .seconds(86400),
        help: "How long a message is owned by the process working on it without a renewal (renewed every third of it while work goes on); a killed or stalled process's messages are taken over after it.")
    public static let redriveAfter = ConfigKey.duration(
        "stage.redrive_after", default: "30s", min: .milliseconds(100), max: .seconds(86400),
        help: "A message handed on but not taken up by the next stage within this time is redriven (ZeroMQ may drop frames).")
    public static let redriveInterval = ConfigKey.duration(
        "stage.redrive_interval", default: "1s", min: .milliseconds(50), max: .seconds(3600),
        help: "How often this process looks for overdue messages of its stage.")
    public static let retryDelay = ConfigKey.duration(
        "stage.retry_delay", default: "10s", min: .milliseconds(10), max: .seconds(86400),
        help: "After a failure of this stage (engine down, Redis error), wait this long before trying the message again.")

    public static let maxLifetime = ConfigKey.duration(
        "stage.max_lifetime", default: "5d", min: .seconds(1), max: .seconds(30 * 86400),
        help: "A message still failing in this stage this long after it was accepted is bounced with an NDR saying what failed (egress uses egress.max_lifetime).")
    public static let redisGrace = ConfigKey.duration(
        "stage.redis_grace", default: "30s", min: .seconds(1), max: .seconds(3600),
        help: "/healthz turns red when Redis has been unreachable for this stage longer than this.")

    public static let all: [AnyConfigKey] = [
        concurrency.erased, lease.erased, redriveAfter.erased, redriveInterval.erased, retryDelay.erased,
        maxLifetime.erased, redisGrace.erased,
    ] + NDRKeys.all
}

extension CommonKeys {
    /// The bus's CURVE settings (`bus.curve_key_file`, `bus.curve_authorized_keys`); nil = plaintext.
    public static func busSecurity(_ config: Config) throws -> BusSecurity? {
        let authorized = try config.get(busCurveAuthorizedKeys)
        guard let pair = try config.get(busCurveKeyFile) else {
            if authorized != nil {
                throw ConfigError(key: busCurveAuthorizedKeys.name, source: "config",
                                  problem: "needs bus.curve_key_file (without a keypair the bus is plaintext and nobody is authenticated)")
            }
            return nil
        }
        return BusSecurity(keyPair: pair, authorizedKeys: authorized ?? [])
    }
}
