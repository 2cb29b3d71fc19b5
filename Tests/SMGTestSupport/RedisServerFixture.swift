public import SMGRedis
internal import Foundation
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// Errors of the test fixtures.
public struct FixtureError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

private func sendSignal(_ pid: Int32, _ signal: Int32) {
    _ = kill(pid, signal)
}

/// Asks the kernel for a free TCP port on 127.0.0.1 (bind to port 0, read it back, close).
public func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw FixtureError("socket: errno \(errno)") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let rc = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> Int32 in
            guard bind(fd, sa, len) == 0 else { return -1 }
            return getsockname(fd, sa, &len)
        }
    }
    guard rc == 0 else { throw FixtureError("bind/getsockname: errno \(errno)") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// How a `RedisServerFixture` speaks TLS: only TLS on its port (`--port 0 --tls-port`), with
/// certificates of `pki`, and replication over TLS.
public struct RedisServerTLS {
    public var pki: RedisTestPKI
    /// `tls-auth-clients yes`: clients must show a certificate of the test CA.
    public var authClients: Bool
    /// Serve `pki.namedServerCertificate` (valid for `redis.test` only) instead of the usual one.
    public var namedCertificateOnly: Bool

    public init(pki: RedisTestPKI, authClients: Bool = false, namedCertificateOnly: Bool = false) {
        self.pki = pki
        self.authClients = authClients
        self.namedCertificateOnly = namedCertificateOnly
    }

    /// The `redis-server` (or Sentinel configuration) settings, as argument pairs.
    public var serverSettings: [(String, String)] {
        [
            ("tls-cert-file", namedCertificateOnly ? pki.namedServerCertificate : pki.serverCertificate),
            ("tls-key-file", namedCertificateOnly ? pki.namedServerKey : pki.serverKey),
            ("tls-ca-cert-file", pki.caFile),
            ("tls-auth-clients", authClients ? "yes" : "no"),
            ("tls-replication", "yes"),
        ]
    }

    /// What a client of this server uses: the test CA, and the client certificate when asked for.
    public func clientTLS() throws -> RedisTLS {
        try RedisTLS(caFile: pki.caFile, certificateFile: authClients ? pki.clientCertificate : nil,
                     keyFile: authClients ? pki.clientKey : nil,
                     serverName: namedCertificateOnly ? "redis.test" : nil)
    }
}

/// A real `redis-server` on a private loopback port, in its own temporary directory, with
/// AOF persistence (`appendfsync always`) so that `restart()` keeps the data. With `tls`, the
/// port speaks only TLS.
///
/// Owns the server process and the directory: both are removed by `deinit` (the process is
/// SIGKILLed if still running). Not thread-safe: use it from the test that made it.
public final class RedisServerFixture {
    public let port: Int
    /// The temporary directory holding the AOF and the server's log.
    public let directory: String
    public let password: String?
    /// The unix socket the server also listens on, if asked for (inside `directory`).
    public let unixSocketPath: String?
    public let tls: RedisServerTLS?
    /// The client side of `tls` (nil without TLS).
    public let clientTLS: RedisTLS?
    private let extraArguments: [String]
    private var process: Process?
    private var paused = false

    /// Starts the server and waits (up to 10 s) until it answers PING.
    /// - Parameters:
    ///   - password: sets `requirepass`.
    ///   - unixSocket: also listen on `<directory>/redis.sock` (mode 700).
    ///   - extraArguments: more `redis-server` arguments.
    ///   - tls: serve TLS only (`--port 0 --tls-port <port>`).
    public init(password: String? = nil, unixSocket: Bool = false, extraArguments: [String] = [],
                tls: RedisServerTLS? = nil) throws {
        self.port = try freeTCPPort()
        self.password = password
        self.extraArguments = extraArguments
        self.tls = tls
        self.clientTLS = try tls?.clientTLS()
        var template = Array((NSTemporaryDirectory() + "smg-redis-XXXXXX").utf8CString)
        guard let dir = mkdtemp(&template) else { throw FixtureError("mkdtemp failed") }
        self.directory = String(cString: dir)
        self.unixSocketPath = unixSocket ? directory + "/redis.sock" : nil
        do {
            try start()
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    deinit {
        if paused, let p = process { sendSignal(p.processIdentifier, SIGCONT) }
        if let p = process, p.isRunning {
            sendSignal(p.processIdentifier, SIGKILL)
            _ = Self.waitForExit(p, timeout: 5)
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    public var url: String {
        let scheme = tls == nil ? "redis" : "rediss"
        if let password { return "\(scheme)://:\(password)@127.0.0.1:\(port)/0" }
        return "\(scheme)://127.0.0.1:\(port)/0"
    }

    /// Where the server is, with its password and (for a TLS server) `clientTLS`.
    public var endpoint: RedisEndpoint {
        var e = RedisEndpoint(host: "127.0.0.1", port: port, password: password)
        e.tls = clientTLS
        return e
    }

    public var isRunning: Bool { process?.isRunning ?? false }

    /// The server's log (useful in failure messages).
    public var log: String {
        (try? String(contentsOfFile: directory + "/redis.log", encoding: .utf8)) ?? ""
    }

    /// Graceful stop (SIGTERM), waiting up to 5 s, then SIGKILL.
    public func stop() {
        guard let p = process else { return }
        if paused { resume() }
        if p.isRunning {
            p.terminate()
            if !Self.waitForExit(p, timeout: 5) {
                sendSignal(p.processIdentifier, SIGKILL)
                _ = Self.waitForExit(p, timeout: 5)
            }
        }
        process = nil
    }

    /// Hard kill (SIGKILL), as a crash would.
    public func kill() {
        guard let p = process else { return }
        if p.isRunning {
            sendSignal(p.processIdentifier, SIGKILL)
            _ = Self.waitForExit(p, timeout: 5)
        }
        paused = false
        process = nil
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered.
    public func pause() {
        guard let p = process, p.isRunning else { return }
        sendSignal(p.processIdentifier, SIGSTOP)
        paused = true
    }

    /// Thaws a paused server (SIGCONT).
    public func resume() {
        guard let p = process, paused else { return }
        sendSignal(p.processIdentifier, SIGCONT)
        paused = false
    }

    /// Stops the server if it runs and starts it again on the same port and directory, so
    /// data written with AOF survives.
    public func restart() throws {
        stop()
        try start()
    }

    private func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try Self.redisServerPath())
        var args = tls == nil ? ["--port", "\(port)"] : ["--port", "0", "--tls-port", "\(port)"]
        for (name, value) in tls?.serverSettings ?? [] { args += ["--\(name)", value] }
        args += [
            "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", directory,
            "--logfile", directory + "/redis.log", "--daemonize", "no",
        ]
        if let password { args += ["--requirepass", password] }
        if let unixSocketPath { args += ["--unixsocket", unixSocketPath, "--unixsocketperm", "700"] }
        args += extraArguments
        p.arguments = args
        do {
            try Self.launch(p, port: port, what: "redis-server", tls: tls?.pki, log: { self.log })
            process = p
        } catch {
            if p.isRunning { sendSignal(p.processIdentifier, SIGKILL) }
            throw error
        }
    }

    /// Runs `p` (a redis-server, also in Sentinel mode) and waits up to 10 s until it answers
    /// PING on `port` (over TLS with `tls`); throws with the tail of its log when it exits or stays silent.
    static func launch(_ p: Process, port: Int, what: String, tls: RedisTestPKI? = nil, log: () -> String) throws {
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if !p.isRunning { throw FixtureError("\(what) exited with \(p.terminationStatus): \(log().suffix(2000))") }
            if let tls {
                if tlsPing(port: port, pki: tls) { return }
            } else if ping(port: port) {
                return
            }
            usleep(20_000)
        }
        throw FixtureError("\(what) on port \(port) did not answer PING within 10 s")
    }

    static func redisServerPath() throws -> String { try toolPath("redis-server") }

    static func toolPath(_ name: String) throws -> String {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/local/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw FixtureError("\(name) not found in PATH")
    }

    /// `ping(port:)` over TLS, by `redis-cli --tls` (independent of the client under test), with
    /// the test CA and client certificate.
    static func tlsPing(port: Int, pki: RedisTestPKI) -> Bool {
        guard let cli = try? toolPath("redis-cli") else { return false }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cli)
        p.arguments = ["--tls", "--cacert", pki.caFile, "--cert", pki.clientCertificate, "--key", pki.clientKey,
                       "-h", "127.0.0.1", "-p", "\(port)", "PING"]
        let out = Pipe()
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return ["PONG", "NOAUTH", "LOADING"].contains { text.contains($0) }
    }

    static func waitForExit(_ p: Process, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(5_000) }
        return !p.isRunning
    }

    /// True if something on 127.0.0.1:port answers an inline PING with a RESP reply
    /// (`+PONG`, or `-NOAUTH` when a password is required): the server is accepting commands.
    static func ping(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var tv = timeval(tv_sec: 0, tv_usec: 500_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else { return false }
        let ping = Array("PING\r\n".utf8)
        guard write(fd, ping, ping.count) == ping.count else { return false }
        var buf = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &buf, buf.count)
        return n > 0 && (buf[0] == UInt8(ascii: "+") || buf[0] == UInt8(ascii: "-"))
    }
}
