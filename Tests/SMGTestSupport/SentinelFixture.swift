internal import Foundation
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// A real Redis Sentinel (`redis-server <conf> --sentinel`) on a private loopback port that
/// monitors `masterName` at 127.0.0.1:`primaryPort`, with short timings so a test sees a failover
/// within seconds (down after 1 s, failover timeout 5 s). Killed by `deinit`. With `tls` it
/// speaks only TLS on its port and reaches the data nodes over TLS (`tls-replication yes`), so
/// `primaryPort` is then the primary's TLS port.
public final class SentinelFixture {
    public let port: Int
    public let directory: String
    private var process: Process?

    public init(masterName: String, primaryPort: Int, quorum: Int = 2, downAfterMilliseconds: Int = 1000,
                tls: RedisServerTLS? = nil) throws {
        port = try freeTCPPort()
        var template = Array((NSTemporaryDirectory() + "smg-sentinel-XXXXXX").utf8CString)
        guard let dir = mkdtemp(&template) else { throw FixtureError("mkdtemp failed") }
        directory = String(cString: dir)
        let ports = tls == nil ? "port \(port)" : "port 0\ntls-port \(port)"
        let tlsSettings = (tls?.serverSettings ?? []).map { "\($0.0) \($0.1)\n" }.joined()
        let config = """
            \(ports)
            \(tlsSettings)bind 127.0.0.1
            daemonize no
            logfile \(directory)/sentinel.log
            dir \(directory)
            sentinel monitor \(masterName) 127.0.0.1 \(primaryPort) \(quorum)
            sentinel down-after-milliseconds \(masterName) \(downAfterMilliseconds)
            sentinel failover-timeout \(masterName) 5000
            sentinel parallel-syncs \(masterName) 1

            """
        try config.write(toFile: directory + "/sentinel.conf", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try RedisServerFixture.redisServerPath())
        p.arguments = [directory + "/sentinel.conf", "--sentinel"]
        process = p
        try RedisServerFixture.launch(p, port: port, what: "redis sentinel", tls: tls?.pki, log: { self.log })
    }

    deinit {
        if let p = process, p.isRunning {
            _ = kill(p.processIdentifier, SIGKILL)
            _ = RedisServerFixture.waitForExit(p, timeout: 5)
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    public var log: String { (try? String(contentsOfFile: directory + "/sentinel.log", encoding: .utf8)) ?? "" }
}
