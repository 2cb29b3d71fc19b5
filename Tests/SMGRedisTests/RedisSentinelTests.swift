import XCTest
import Logging
import SMGRedis
import SMGTestSupport

private let logger: Logger = {
    var l = Logger(label: "smg.redis.tests.sentinel")
    l.logLevel = .error
    return l
}()

/// Redis high availability against real servers on loopback: a primary, a replica, three
/// Sentinels. The client follows a failover (the primary killed, or demoted by `SENTINEL
/// FAILOVER`), and an accept can wait for replicas (`WAIT`).
final class RedisSentinelTests: XCTestCase {
    let master = "smg-test"

    func testSentinelURLs() throws {
        let e = try RedisEndpoint(url: "redis+sentinel://app:s%40cret@10.0.0.1:26379,[::1]:26380,sentinel-3/gw/2?sentinel_password=x")
        XCTAssertEqual(e.sentinel?.masterName, "gw")
        XCTAssertEqual(e.sentinel?.addresses.map(\.host), ["10.0.0.1", "::1", "sentinel-3"])
        XCTAssertEqual(e.sentinel?.addresses.map(\.port), [26379, 26380, 26379])
        XCTAssertEqual(e.sentinel?.password, "x")
        XCTAssertEqual(e.username, "app")
        XCTAssertEqual(e.password, "s@cret")
        XCTAssertEqual(e.database, 2)
        XCTAssertFalse(e.description.contains("s@cret"))
        XCTAssertThrowsError(try RedisEndpoint(url: "redis+sentinel://10.0.0.1:26379"), "no master name")
        XCTAssertThrowsError(try RedisEndpoint(url: "redis+sentinel:///gw"), "no Sentinel")
        XCTAssertThrowsError(try RedisEndpoint(url: "redis+sentinel://h:99999/gw"), "bad port")
        XCTAssertTrue(RedisError(.server, "READONLY You can't write against a read only replica.").isRetryableWithoutEffect)
        XCTAssertFalse(RedisError(.server, "NOTREPLICATED 0 of 1 replicas").isRetryableWithoutEffect)
    }

    /// A primary with one replica and three Sentinels that know both (and each other).
    /// With `tls`, every node and Sentinel speaks only TLS (replication and Sentinel links too).
    struct Cluster {
        let primary: RedisServerFixture
        let replica: RedisServerFixture
        let sentinels: [SentinelFixture]
        var url: String {
            (primary.tls == nil ? "redis" : "rediss") + "+sentinel://"
                + sentinels.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") + "/smg-test"
        }
        /// The client's endpoint: `url` with the test CA (for TLS).
        var endpoint: RedisEndpoint {
            get throws {
                var e = try RedisEndpoint(url: url)
                e.tls = primary.clientTLS
                return e
            }
        }
        func sentinelEndpoint(_ s: SentinelFixture) -> RedisEndpoint {
            var e = RedisEndpoint(host: "127.0.0.1", port: s.port)
            e.tls = primary.clientTLS
            return e
        }
    }

    func makeCluster(tls: RedisServerTLS? = nil) async throws -> Cluster {
        let primary = try RedisServerFixture(tls: tls)
        let replica = try RedisServerFixture(extraArguments: ["--replicaof", "127.0.0.1", "\(primary.port)"], tls: tls)
        let sentinels = try (0..<3).map { _ in try SentinelFixture(masterName: master, primaryPort: primary.port, tls: tls) }
        // Ready when the replica is in sync and every Sentinel knows the replica and the two others.
        let probe = RedisClient(endpoint: primary.endpoint, poolSize: 1, timeout: .seconds(2), logger: logger)
        defer { probe.close() }
        try await eventually("the replica in sync and Sentinels that know each other", seconds: 40) {
            let info = try await probe.command("INFO", "replication").string ?? ""
            guard info.contains("connected_slaves:1"), info.contains("state=online") else { return false }
            for s in sentinels {
                var sentinel = RedisEndpoint(host: "127.0.0.1", port: s.port)
                sentinel.tls = primary.clientTLS
                let c = RedisClient(endpoint: sentinel, poolSize: 1, timeout: .seconds(2), logger: logger)
                defer { c.close() }
                let replicas = try await c.command("SENTINEL", "replicas", .init(master)).array ?? []
                let others = try await c.command("SENTINEL", "sentinels", .init(master)).array ?? []
                guard replicas.count == 1, others.count == 2 else { return false }
            }
            return true
        }
        return Cluster(primary: primary, replica: replica, sentinels: sentinels)
    }

    func eventually(_ what: String, seconds: Double, _ check: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? await check()) == true { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        XCTFail("timed out waiting for \(what)")
        throw FixtureError("timed out waiting for \(what)")
    }

    /// After the primary's kill and the client's `SET after 1`: the replica is the primary now and
    /// holds that write and `before:0..<count`. Returns a direct client to it (the caller closes it).
    func promotedReplica(of cluster: Cluster, holdingBefore count: Int,
                         file: StaticString = #filePath, line: UInt = #line) async throws -> RedisClient {
        let promoted = try await role(cluster.replica)
        XCTAssertEqual(promoted, "master", file: file, line: line)
        let direct = RedisClient(endpoint: cluster.replica.endpoint, poolSize: 1, timeout: .seconds(2), logger: logger)
        do {
            let after = try await direct.command("GET", "after").string
            XCTAssertEqual(after, "1", file: file, line: line)
            for i in 0..<count {
                let value = try await direct.command("GET", .init("before:\(i)")).string
                XCTAssertEqual(value, "\(i)", file: file, line: line)
            }
        } catch {
            direct.close()
            throw error
        }
        return direct
    }

    func role(_ server: RedisServerFixture) async throws -> String? {
        let c = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .seconds(2), logger: logger)
        defer { c.close() }
        return try await c.command("ROLE").array?.first?.string
    }

    /// kill -9 of the primary: the client keeps failing fast-but-retryably until the Sentinels
    /// promote the replica, then writes land on it; nothing written before is lost.
    func testTheClientFollowsAFailoverAfterThePrimaryDies() async throws {
        let cluster = try await makeCluster()
        let client = RedisClient(endpoint: try RedisEndpoint(url: cluster.url), poolSize: 3, timeout: .seconds(1),
                                 transientRetry: .seconds(45), logger: logger)
        defer { client.close() }
        for i in 0..<20 { _ = try await client.command("SET", .init("before:\(i)"), .init(i)) }
        _ = try await client.command("WAIT", 1, 2000)
        cluster.primary.kill()
        let started = ContinuousClock.now
        _ = try await client.command("SET", "after", "1")
        let took = ContinuousClock.now - started
        let direct = try await promotedReplica(of: cluster, holdingBefore: 20)
        defer { direct.close() }
        XCTAssertLessThan(took, .seconds(40), "failover took \(took)")
        // Every pooled connection moved: concurrent writes all land on the new primary.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<30 { group.addTask { _ = try await client.command("SET", .init("moved:\(i)"), "x") } }
            try await group.waitForAll()
        }
        let moved = try await direct.command("EVAL", "return #redis.call('KEYS', 'moved:*')", 0).int
        XCTAssertEqual(moved, 30)
    }

    /// `rediss+sentinel://`: the Sentinels are asked over TLS, the primary they name is written
    /// to over TLS, and after kill -9 of the primary the client follows the failover (TLS all along).
    func testSentinelOverTLSFollowsAFailover() async throws {
        let pki = try RedisTestPKI()
        let cluster = try await makeCluster(tls: RedisServerTLS(pki: pki))
        XCTAssertTrue(cluster.url.hasPrefix("rediss+sentinel://"))
        let client = RedisClient(endpoint: try cluster.endpoint, poolSize: 2, timeout: .seconds(1),
                                 transientRetry: .seconds(45), logger: logger)
        defer { client.close() }
        for i in 0..<10 { _ = try await client.command("SET", .init("before:\(i)"), .init(i)) }
        let acknowledged = try await client.command("WAIT", 1, 2000).int
        XCTAssertEqual(acknowledged, 1, "the replica replicates over TLS")
        cluster.primary.kill()
        _ = try await client.command("SET", "after", "1")
        let direct = try await promotedReplica(of: cluster, holdingBefore: 10)
        defer { direct.close() }
        let sentinel = RedisClient(endpoint: cluster.sentinelEndpoint(cluster.sentinels[1]), poolSize: 1,
                                   timeout: .seconds(2), logger: logger)
        defer { sentinel.close() }
        let named = try await sentinel.command("SENTINEL", "get-master-addr-by-name", .init(master)).array?.last?.string
        XCTAssertEqual(named, "\(cluster.replica.port)")
    }

    /// `SENTINEL FAILOVER`: the old primary stays up as a replica, so pooled connections to it
    /// are alive and its first answer to a write is -READONLY. The client drops the primary,
    /// asks Sentinel again and retries: the write is done exactly once, on the new primary.
    func testADemotedPrimaryAnsweringReadOnlyIsLeftForTheNewOne() async throws {
        let cluster = try await makeCluster()
        let client = RedisClient(endpoint: try RedisEndpoint(url: cluster.url), poolSize: 2, timeout: .seconds(1),
                                 transientRetry: .seconds(30), logger: logger)
        defer { client.close() }
        _ = try await client.command("SET", "counter", "0")
        _ = try await client.command("INCR", "counter")
        let sentinel = RedisClient(endpoint: RedisEndpoint(host: "127.0.0.1", port: cluster.sentinels[0].port), poolSize: 1,
                                   timeout: .seconds(2), logger: logger)
        defer { sentinel.close() }
        _ = try await sentinel.command("SENTINEL", "FAILOVER", .init(master))
        try await eventually("the replica promoted and the old primary demoted", seconds: 30) {
            let newRole = try await role(cluster.replica)
            let oldRole = try await role(cluster.primary)
            return newRole == "master" && oldRole == "slave"
        }
        for _ in 0..<4 { _ = try await client.command("INCR", "counter") }
        let direct = RedisClient(endpoint: cluster.replica.endpoint, poolSize: 1, timeout: .seconds(2), logger: logger)
        defer { direct.close() }
        try await eventually("the old primary in sync with the new one", seconds: 10) {
            let old = RedisClient(endpoint: cluster.primary.endpoint, poolSize: 1, timeout: .seconds(2), logger: logger)
            defer { old.close() }
            return try await old.command("GET", "counter").string == "5"
        }
        let counter = try await direct.command("GET", "counter").string
        XCTAssertEqual(counter, "5", "every INCR ran exactly once")
    }

    /// WAIT after a batch of scripts: without a replica the calls come back NOTREPLICATED (the
    /// write is on the primary only); with one in sync they succeed.
    func testReplicaAcknowledgementRefusesWritesNoReplicaHas() async throws {
        let primary = try RedisServerFixture()
        let client = RedisClient(endpoint: primary.endpoint, poolSize: 1, timeout: .seconds(2), logger: logger)
        defer { client.close() }
        let script = RedisScript("redis.call('SET', KEYS[1], ARGV[1]) return 1")
        let wanted = ReplicaAcknowledgement(count: 1, timeoutMilliseconds: 200)
        let lonely = try await client.evalMany(script, calls: [(["k1"], ["a"]), (["k2"], ["b"])], replicas: wanted)
        for reply in lonely {
            guard case .error(let message) = reply else { return XCTFail("\(reply) without a replica") }
            XCTAssertTrue(message.hasPrefix("NOTREPLICATED 0 of 1"), message)
        }
        let replica = try RedisServerFixture(extraArguments: ["--replicaof", "127.0.0.1", "\(primary.port)"])
        try await eventually("the replica in sync", seconds: 20) {
            try await client.command("INFO", "replication").string?.contains("state=online") == true
        }
        let batcher = RedisBatcher(client: client, script: script, replicas: ReplicaAcknowledgement(count: 1, timeoutMilliseconds: 1000))
        let reply = try await batcher.eval(keys: ["k3"], args: ["c"])
        XCTAssertEqual(reply.int, 1)
        let copy = RedisClient(endpoint: replica.endpoint, poolSize: 1, timeout: .seconds(2), logger: logger)
        defer { copy.close() }
        let replicated = try await copy.command("GET", "k3").string
        XCTAssertEqual(replicated, "c", "a write acknowledged by WAIT is on the replica")
    }
}
