import XCTest
import Logging
import Foundation
import NIOCore
import NIOPosix
import SMGRedis
import SMGTestSupport

private let logger: Logger = {
    var l = Logger(label: "smg.redis.tests.tls")
    l.logLevel = .critical
    return l
}()

/// Redis over TLS (`rediss://`) against a real `redis-server --port 0 --tls-port …` with
/// certificates made by openssl for the test; hiredis talks to a socketpair relayed by NIOSSL.
final class RedisTLSTests: XCTestCase {
    private var madePKI: RedisTestPKI?
    /// A fresh test CA and certificates (made on first use in a test, removed after it).
    var pki: RedisTestPKI {
        get throws {
            if let madePKI { return madePKI }
            let made = try RedisTestPKI()
            madePKI = made
            return made
        }
    }

    override func tearDown() {
        madePKI = nil
        super.tearDown()
    }

    func testURLsAndSettings() throws {
        let plain = try RedisEndpoint(url: "redis://app:pw@10.0.0.7:6390/2")
        XCTAssertNil(plain.tls)
        let secure = try RedisEndpoint(url: "rediss://app:p%40ss@redis.example:6390/2")
        XCTAssertNotNil(secure.tls)
        XCTAssertNil(secure.tls?.caFile, "system roots unless configured")
        XCTAssertEqual(secure.username, "app")
        XCTAssertEqual(secure.password, "p@ss")
        XCTAssertEqual(secure.database, 2)
        XCTAssertEqual(secure.description, "rediss://redis.example:6390/2")
        let sentinel = try RedisEndpoint(url: "rediss+sentinel://app:pw@s1:26379,[::1]:26380/gw/1?sentinel_password=x")
        XCTAssertNotNil(sentinel.tls)
        XCTAssertEqual(sentinel.sentinel?.masterName, "gw")
        XCTAssertEqual(sentinel.sentinel?.addresses.map(\.port), [26379, 26380])
        XCTAssertEqual(sentinel.description, "rediss+sentinel://s1:26379,[::1]:26380/gw/1")
        XCTAssertNil(try RedisEndpoint(url: "redis+sentinel://s1/gw").tls)

        let pki = try self.pki
        let full = try RedisTLS(caFile: pki.caFile, certificateFile: pki.clientCertificate, keyFile: pki.clientKey,
                                serverName: "redis.test")
        XCTAssertEqual(full, try RedisTLS(caFile: pki.caFile, certificateFile: pki.clientCertificate,
                                          keyFile: pki.clientKey, serverName: "redis.test"))
        XCTAssertNotEqual(full, try RedisTLS(caFile: pki.caFile))
        XCTAssertEqual(try RedisTLS(caFile: "", certificateFile: "", keyFile: "", serverName: ""), try RedisTLS())

        func setting(_ make: @autoclosure () throws -> RedisTLS) -> RedisTLS.Setting? {
            do { _ = try make(); return nil } catch let e as RedisTLS.SetupError { return e.setting } catch { return nil }
        }
        let garbage = pki.directory + "/garbage.pem"
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: garbage))
        XCTAssertEqual(setting(try RedisTLS(caFile: pki.directory + "/missing.pem")), .caFile)
        XCTAssertEqual(setting(try RedisTLS(caFile: garbage)), .caFile)
        XCTAssertEqual(setting(try RedisTLS(certificateFile: pki.clientCertificate)), .key, "certificate without key")
        XCTAssertEqual(setting(try RedisTLS(keyFile: pki.clientKey)), .certificate, "key without certificate")
        XCTAssertEqual(setting(try RedisTLS(certificateFile: garbage, keyFile: pki.clientKey)), .certificate)
        XCTAssertEqual(setting(try RedisTLS(certificateFile: pki.clientCertificate, keyFile: garbage)), .key)
        XCTAssertEqual(setting(try RedisTLS(certificateFile: pki.clientCertificate, keyFile: pki.serverKey)), .key,
                       "a key that is not the certificate's")
        XCTAssertEqual(setting(try RedisTLS(serverName: "10.1.2.3")), .serverName)
        XCTAssertNil(RedisTLS.problemWithCertificateFile(pki.caFile))
        XCTAssertNotNil(RedisTLS.problemWithCertificateFile(garbage))
        XCTAssertNil(RedisTLS.problemWithKeyFile(pki.clientKey))
        XCTAssertNotNil(RedisTLS.problemWithKeyFile(pki.caFile))
    }

    func testCommandsOverTLS() async throws {
        let server = try RedisServerFixture(tls: RedisServerTLS(pki: try pki))
        defer { server.kill() }
        let client = RedisClient(endpoint: server.endpoint, poolSize: 4, timeout: .seconds(2), logger: logger)
        defer { client.close() }
        let binary: [UInt8] = [0x00, 0x0D, 0x0A, 0x41, 0x00, 0xFF, 0x0D, 0x0A, 0x24, 0x2D]
        let set = try await client.command("SET", "bin", RedisArg(binary))
        XCTAssertEqual(set, .status("OK"))
        let got = try await client.command("GET", "bin")
        XCTAssertEqual(got, .bulk(binary))
        // Larger than every buffer on the way (socketpair, NIO, TLS records): backpressure both ways.
        let big = (0..<(6 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        _ = try await client.command("SET", "big", RedisArg(big))
        let back = try await client.command("GET", "big")
        XCTAssertEqual(back, .bulk(big))
        let replies = try await client.pipeline([["INCR", "n"], ["INCR", "n"], ["GET", "n"]])
        XCTAssertEqual(replies, [.integer(1), .integer(2), .bulk(Array("2".utf8))])
        let counts = try await withThrowingTaskGroup(of: Int64.self) { group in
            for _ in 0..<100 { group.addTask { try await client.command("INCR", "hits").int ?? -1 } }
            var all: [Int64] = []
            for try await v in group { all.append(v) }
            return all
        }
        XCTAssertEqual(counts.sorted(), (1...100).map { Int64($0) })
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        let evaluated = try await client.eval(script, keys: ["s"], args: [5])
        XCTAssertEqual(evaluated, .integer(5))
        // The server's view: these connections are TLS ones (INFO shows no plain port).
        let info = try await client.command("CONFIG", "GET", "port").array?.last?.string
        XCTAssertEqual(info, "0")
    }

    /// The same port refuses a plain client, and a TLS client refuses a plain server.
    func testPlainAndTLSDoNotMix() async throws {
        let tlsServer = try RedisServerFixture(tls: RedisServerTLS(pki: try pki))
        defer { tlsServer.kill() }
        let plainToTLS = RedisClient(endpoint: RedisEndpoint(host: "127.0.0.1", port: tlsServer.port), poolSize: 1,
                                     timeout: .milliseconds(500), logger: logger)
        defer { plainToTLS.close() }
        do {
            _ = try await plainToTLS.command("PING")
            XCTFail("plain PING answered by a TLS port")
        } catch let e as RedisError {
            XCTAssertTrue(e.code == .connection || e.code == .timeout, "\(e)")
        }

        let plainServer = try RedisServerFixture()
        defer { plainServer.kill() }
        var endpoint = plainServer.endpoint
        endpoint.tls = tlsServer.clientTLS
        // Redis takes the ClientHello for an inline command: it waits for a newline (→ timeout)
        // or answers an error the TLS client cannot parse (→ handshake failed).
        XCTAssertThrowsError(try RedisConnection(endpoint: endpoint, timeout: .milliseconds(500))) { error in
            guard let e = error as? RedisError else { return XCTFail("\(error)") }
            XCTAssertTrue(e.code == .connection || e.code == .timeout, "\(e)")
            XCTAssertTrue(e.message.contains("TLS handshake"), e.message)
        }
    }

    func testWrongCAIsAVerificationError() async throws {
        let pki = try self.pki
        let server = try RedisServerFixture(tls: RedisServerTLS(pki: pki))
        defer { server.kill() }
        for tls in [try RedisTLS(caFile: pki.otherCAFile), try RedisTLS()] { // another CA; the system roots
            var endpoint = server.endpoint
            endpoint.tls = tls
            XCTAssertThrowsError(try RedisConnection(endpoint: endpoint, timeout: .seconds(1))) { error in
                guard let e = error as? RedisError else { return XCTFail("\(error)") }
                XCTAssertEqual(e.code, .connection, "\(e)")
                XCTAssertTrue(e.message.contains("TLS verification failed"), e.message)
            }
            let client = RedisClient(endpoint: endpoint, poolSize: 1, timeout: .seconds(1), logger: logger)
            defer { client.close() }
            do {
                _ = try await client.command("PING")
                XCTFail("PING through an untrusted server")
            } catch let e as RedisError {
                XCTAssertEqual(e.code, .connection, "\(e)")
                XCTAssertTrue(e.commandNotSent, "a refused handshake sent nothing")
                XCTAssertTrue(e.isRetryableWithoutEffect)
            }
        }
    }

    func testHostnameIsVerified() throws {
        let pki = try self.pki
        let server = try RedisServerFixture(tls: RedisServerTLS(pki: pki, namedCertificateOnly: true))
        defer { server.kill() }
        func connect(host: String, serverName: String?) throws -> RedisValue {
            var endpoint = RedisEndpoint(host: host, port: server.port)
            endpoint.tls = try RedisTLS(caFile: pki.caFile, serverName: serverName)
            let conn = try RedisConnection(endpoint: endpoint, timeout: .seconds(1))
            defer { conn.close() }
            return try conn.command(["PING"])
        }
        // The certificate names redis.test only: not 127.0.0.1, not localhost.
        for (host, name) in [("127.0.0.1", nil), ("localhost", nil), ("127.0.0.1", "other.test")] as [(String, String?)] {
            XCTAssertThrowsError(try connect(host: host, serverName: name), "\(host) \(name ?? "-")") { error in
                guard let e = error as? RedisError else { return XCTFail("\(error)") }
                XCTAssertEqual(e.code, .connection, "\(e)")
                XCTAssertTrue(e.message.contains("TLS verification failed"), e.message)
            }
        }
        XCTAssertEqual(try connect(host: "127.0.0.1", serverName: "redis.test"), .status("PONG"))
        XCTAssertEqual(try connect(host: "localhost", serverName: "redis.test"), .status("PONG"))
    }

    func testClientCertificateRequired() async throws {
        let pki = try self.pki
        let server = try RedisServerFixture(tls: RedisServerTLS(pki: pki, authClients: true))
        defer { server.kill() }
        var anonymous = server.endpoint
        anonymous.tls = try RedisTLS(caFile: pki.caFile)
        XCTAssertThrowsError(try RedisConnection(endpoint: anonymous, timeout: .seconds(1))) { error in
            guard let e = error as? RedisError else { return XCTFail("\(error)") }
            XCTAssertEqual(e.code, .connection, "\(e)")
            XCTAssertTrue(e.message.lowercased().contains("certificate"), e.message)
        }
        let refused = RedisClient(endpoint: anonymous, poolSize: 1, timeout: .seconds(1), logger: logger)
        defer { refused.close() }
        do {
            _ = try await refused.command("PING")
            XCTFail("PING without a client certificate")
        } catch let e as RedisError {
            XCTAssertEqual(e.code, .connection, "\(e)")
            XCTAssertTrue(e.commandNotSent, "\(e)")
        }

        let client = RedisClient(endpoint: server.endpoint, poolSize: 2, timeout: .seconds(1), logger: logger)
        defer { client.close() }
        XCTAssertNotNil(server.endpoint.tls?.certificateFile)
        let pong = try await client.command("PING")
        XCTAssertEqual(pong, .status("PONG"))
    }

    func testACLUserOverTLS() async throws {
        let pki = try self.pki
        let server = try RedisServerFixture(
            extraArguments: ["--user", "default", "off", "--user", "gateway", "on", ">s3cret", "~smg:*", "+@all"],
            tls: RedisServerTLS(pki: pki))
        defer { server.kill() }
        var endpoint = try RedisEndpoint(url: "rediss://gateway:s3cret@127.0.0.1:\(server.port)/0")
        XCTAssertEqual(endpoint.username, "gateway")
        endpoint.tls = server.clientTLS
        let client = RedisClient(endpoint: endpoint, poolSize: 2, timeout: .seconds(1), logger: logger)
        defer { client.close() }
        let whoami = try await client.command("ACL", "WHOAMI").string
        XCTAssertEqual(whoami, "gateway")
        let set = try await client.command("SET", "smg:k", "v")
        XCTAssertEqual(set, .status("OK"))
        do {
            _ = try await client.command("SET", "other:k", "v")
            XCTFail("the ACL allows smg:* only")
        } catch let e as RedisError {
            XCTAssertEqual(e.serverErrorPrefix, "NOPERM", "\(e)")
        }
        var wrong = endpoint
        wrong.password = "nope"
        XCTAssertThrowsError(try RedisConnection(endpoint: wrong, timeout: .seconds(1))) { error in
            XCTAssertEqual((error as? RedisError)?.serverErrorPrefix, "WRONGPASS", "\(error)")
        }
    }

    /// kill -9 and a new server on the same port: the first command fails (connection), then the
    /// pool notices the dead relays before writing and every later command works.
    func testServerRestartUnderTheClient() async throws {
        let server = try RedisServerFixture(tls: RedisServerTLS(pki: try pki))
        defer { server.kill() }
        let client = RedisClient(endpoint: server.endpoint, poolSize: 4, timeout: .seconds(1), logger: logger)
        defer { client.close() }
        try await assertKillFailsFastAndRestartRecovers(client, server)
    }

    /// A frozen server: a command times out within about the timeout, and so does a new
    /// connection (TCP connects into the backlog, the handshake never ends: the connect timeout
    /// covers it).
    func testFrozenServerTimesOut() async throws {
        let server = try RedisServerFixture(tls: RedisServerTLS(pki: try pki))
        defer { server.kill() }
        let client = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .milliseconds(500), logger: logger)
        defer { client.close() }
        let pong = try await client.command("PING")
        XCTAssertEqual(pong, .status("PONG"))
        server.pause()
        defer { server.resume() }
        for what in ["command on a pooled connection", "new connection"] {
            let (outcome, elapsed) = await timed { () -> Result<RedisValue, any Error> in
                do { return .success(try await withTimeout(.seconds(5), what) { try await client.command("PING") }) } catch { return .failure(error) }
            }
            guard case .failure(let error as RedisError) = outcome else { return XCTFail("\(what): \(outcome)") }
            XCTAssertEqual(error.code, .timeout, "\(what): \(error)")
            XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(400), what)
            XCTAssertLessThan(elapsed, .milliseconds(1500), what)
        }
        server.resume()
        let again = try await client.command("PING")
        XCTAssertEqual(again, .status("PONG"))
    }

    /// A client given a group uses it and leaves it running on close.
    func testSharedEventLoopGroup() async throws {
        let server = try RedisServerFixture(tls: RedisServerTLS(pki: try pki))
        defer { server.kill() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        for _ in 0..<2 {
            let client = RedisClient(endpoint: server.endpoint, poolSize: 2, timeout: .seconds(1), logger: logger,
                                     eventLoopGroup: group)
            let pong = try await client.command("PING")
            XCTAssertEqual(pong, .status("PONG"))
            client.close()
            client.waitUntilClosed() // before the group may go
        }
        try await group.shutdownGracefully()
    }

    /// Many TLS connections opened and closed: afterwards as many file descriptors and NIO
    /// threads as before (each client's own group is shut down by close()).
    func testNoDescriptorsOrThreadsLeft() async throws {
        let server = try RedisServerFixture(tls: RedisServerTLS(pki: try pki))
        defer { server.kill() }
        func cycle() async throws {
            let client = RedisClient(endpoint: server.endpoint, poolSize: 4, timeout: .seconds(1), logger: logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 { group.addTask { _ = try await client.command("PING") } }
                try await group.waitForAll()
            }
            client.close()
        }
        func direct() throws {
            let conn = try RedisConnection(endpoint: server.endpoint, timeout: .seconds(1)) // NIO's singleton group
            XCTAssertEqual(try conn.command(["PING"]), .status("PONG"))
            conn.close()
        }
        try await cycle() // warm up: lazy globals, and the singleton group's threads (they stay, by design)
        try direct()
        try await settle { openDescriptors() * 1000 + nioThreads() }
        let fds = openDescriptors(), threads = nioThreads()
        for _ in 0..<15 { try await cycle() }
        try await eventually("NIO threads back to \(threads)") { nioThreads() <= threads }
        try await eventually("descriptors back to \(fds) after the clients") { openDescriptors() <= fds }
        for _ in 0..<30 { try direct() }
        try await eventually("descriptors back to \(fds) after the connections") { openDescriptors() <= fds }
        XCTAssertEqual(nioThreads(), threads)
    }

    /// Round-trip cost of the relay, printed (not asserted): blocking PING and SET on one
    /// connection, plain TCP vs TLS, on loopback.
    func testPrintRoundTripFigures() throws {
        let pki = try self.pki
        let plain = try RedisServerFixture(extraArguments: ["--appendonly", "no"])
        defer { plain.kill() }
        let secure = try RedisServerFixture(extraArguments: ["--appendonly", "no"], tls: RedisServerTLS(pki: pki))
        defer { secure.kill() }
        let rounds = 5000
        var lines: [String] = []
        for (name, endpoint) in [("plain", plain.endpoint), ("TLS  ", secure.endpoint)] {
            let conn = try RedisConnection(endpoint: endpoint, timeout: .seconds(2))
            defer { conn.close() }
            for _ in 0..<500 { _ = try conn.command(["PING"]) }
            let clock = ContinuousClock()
            let ping = try clock.measure { for _ in 0..<rounds { _ = try conn.command(["PING"]) } }
            let value = RedisArg(Array(repeating: UInt8(ascii: "x"), count: 100))
            let set = try clock.measure { for i in 0..<rounds { _ = try conn.command(["SET", RedisArg("k\(i % 100)"), value]) } }
            func micro(_ d: Duration) -> String {
                let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
                return String(format: "%.1f µs", seconds * 1e6 / Double(rounds))
            }
            lines.append("\(name): PING \(micro(ping)), SET 100 B \(micro(set)) per round trip")
        }
        print("redis round trip on loopback (\(rounds) each):\n  " + lines.joined(separator: "\n  "))
    }

    // MARK: - helpers

    func eventually(_ what: String, seconds: Double = 15, _ check: () -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if check() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTFail("timed out waiting for \(what)")
    }

    /// Waits until `measure` stops changing for a moment.
    func settle(_ measure: () -> Int) async throws {
        var last = measure()
        for _ in 0..<50 {
            try await Task.sleep(for: .milliseconds(200))
            let now = measure()
            if now == last { return }
            last = now
        }
    }
}

private func openDescriptors() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// Threads of NIO event loops (named NIO-ELT-…) in this process.
private func nioThreads() -> Int {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.filter { task in
        let comm = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
        return comm.hasPrefix("NIO-ELT")
    }.count
}
