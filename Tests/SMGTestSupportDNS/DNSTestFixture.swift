import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Starts and stops the DNS test fixture (`Tests/Fixtures/dns/start-dns.sh`): knotd
/// (authoritative) and unbound (validating resolver) on 127.0.0.1, on free ports chosen by
/// the kernel. Zones: see `Tests/Fixtures/dns/zones/zones.list`.
///
/// Owns the two daemons and its temporary work directory; ``stop()`` kills both (by their
/// pidfiles) and removes the directory. Blocking (runs a shell script and waits for it, at
/// most `timeout`): call it from synchronous XCTest code such as `class func setUp()`, never
/// from Swift's cooperative thread pool. The value itself is immutable and `Sendable`.
///
/// ```swift
/// override class func setUp() { fixture = try! DNSTestFixture.start() }
/// override class func tearDown() { fixture?.stop() }
/// // resolver: DNSResolverConfiguration.Server(host: "127.0.0.1", port: fixture.resolverPort, trusted: true)
/// ```
public struct DNSTestFixture: Sendable {
    /// A zone to serve in addition to (or instead of, same name) the built-in ones.
    public struct Zone: Sendable {
        public enum Mode: String, Sendable { case unsigned, signed, bogus }
        public var name: String
        public var mode: Mode
        /// Zone file text (with `$ORIGIN <name>.`).
        public var contents: String
        public init(name: String, mode: Mode, contents: String) {
            self.name = name; self.mode = mode; self.contents = contents
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public let workDirectory: String
    public let authoritativePort: Int
    public let resolverPort: Int

    /// `host:port` of the validating resolver.
    public var resolverAddress: String { "127.0.0.1:\(resolverPort)" }
    /// `host:port` of the authoritative server.
    public var authoritativeAddress: String { "127.0.0.1:\(authoritativePort)" }

    /// Absolute path of `Tests/Fixtures/dns` (found relative to this source file).
    public static var fixtureDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/dns").path
    }

    /// Starts the fixture; retries up to 3 times with new ports if a port was taken meanwhile.
    public static func start(extraZones: [Zone] = [], timeoutSeconds timeout: Double = 60) throws -> DNSTestFixture {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("smg-dns-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var env = ProcessInfo.processInfo.environment
        if !extraZones.isEmpty {
            let extra = dir + "/extra-zones"
            try FileManager.default.createDirectory(atPath: extra, withIntermediateDirectories: true)
            var list = ""
            for z in extraZones {
                let name = z.name.hasSuffix(".") ? String(z.name.dropLast()) : z.name
                try z.contents.write(toFile: "\(extra)/\(name).zone", atomically: true, encoding: .utf8)
                list += "\(name) \(z.mode.rawValue)\n"
            }
            try list.write(toFile: extra + "/zones.list", atomically: true, encoding: .utf8)
            env["SMG_DNS_EXTRA_ZONES"] = extra
        }
        var lastError = ""
        for _ in 0..<3 {
            let auth = try freeLoopbackPort()
            var res = try freeLoopbackPort()
            while res == auth { res = try freeLoopbackPort() }
            let (status, output) = try runScript("start-dns.sh", [dir, String(auth), String(res)],
                                                 env: env, logFile: dir + "/start.log", timeout: timeout)
            if status == 0 {
                return DNSTestFixture(workDirectory: dir, authoritativePort: auth, resolverPort: res)
            }
            lastError = output
            _ = try? runScript("stop-dns.sh", [dir], env: env, logFile: dir + "/stop.log", timeout: 20)
        }
        try? FileManager.default.removeItem(atPath: dir)
        throw Failure(description: "start-dns.sh failed 3 times:\n\(lastError)")
    }

    /// Stops both daemons and removes the work directory. Safe to call twice.
    public func stop() {
        _ = try? Self.runScript("stop-dns.sh", [workDirectory], env: ProcessInfo.processInfo.environment,
                                logFile: workDirectory + "/stop.log", timeout: 20)
        try? FileManager.default.removeItem(atPath: workDirectory)
    }

    /// A port on 127.0.0.1 that is free for both UDP and TCP at the time of the call.
    public static func freeLoopbackPort() throws -> Int {
        for _ in 0..<20 {
            let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            guard udp >= 0 else { throw Failure(description: "socket() failed") }
            defer { close(udp) }
            guard let port = bindLoopback(udp, port: 0) else { continue }
            let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard tcp >= 0 else { throw Failure(description: "socket() failed") }
            defer { close(tcp) }
            if bindLoopback(tcp, port: port) != nil { return port }
        }
        throw Failure(description: "no free loopback port found")
    }

    private static func bindLoopback(_ fd: Int32, port: Int) -> Int? {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else { return nil }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard withUnsafeMutablePointer(to: &addr, {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }) == 0 else { return nil }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Runs a fixture script via posix_spawn with stdout/stderr appended to `logFile`, and polls
    /// `waitpid` until it exits, killing it after `timeout`. (Foundation's `Process` is not used:
    /// it detects exit through a descriptor that the daemons started by the script inherit, so
    /// it would wait for the daemons.) Returns the exit status and the log's last 4 KiB.
    static func runScript(_ name: String, _ args: [String], env: [String: String], logFile: String,
                          timeout: Double) throws -> (Int32, String) {
        let argv = ["/bin/bash", fixtureDirectory + "/" + name] + args
        let envv = env.map { "\($0.key)=\($0.value)" }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logFile, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var pid: pid_t = 0
        let rc = withCStrings(argv) { cargv in
            withCStrings(envv) { cenv in posix_spawn(&pid, "/bin/bash", &actions, nil, cargv, cenv) }
        }
        guard rc == 0 else { throw Failure(description: "posix_spawn \(name) failed: \(rc)") }
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { throw Failure(description: "waitpid failed: \(errno)") }
            if Date() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                return (-1, "\(name) timed out after \(timeout)s")
            }
            usleep(10_000)
        }
        let exited = (status & 0x7F) == 0
        let code: Int32 = exited ? (status >> 8) & 0xFF : -1
        let text = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
        return (code, String(text.suffix(4096)))
    }
}

/// Calls `body` with a NULL-terminated C array of C strings (freed afterwards).
private func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
    let c = strings.map { strdup($0) } + [nil]
    defer { for p in c { free(p) } }
    return body(c)
}
