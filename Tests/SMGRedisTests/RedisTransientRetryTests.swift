import XCTest
import Logging
import SMGRedis
import SMGTestSupport

private let logger: Logger = {
    var l = Logger(label: "smg.redis.tests.transient")
    l.logLevel = .error
    return l
}()

/// "Not executed, try again" errors against real redis-servers: LOADING after a restart with a
/// large dataset, BUSY during a long script, refused connects; and what must never be retried.
final class RedisTransientRetryTests: XCTestCase {
    func testErrorClassification() {
        XCTAssertTrue(RedisError(.server, "LOADING Redis is loading the dataset in memory").isRetryableWithoutEffect)
        XCTAssertTrue(RedisError(.server, "BUSY Redis is busy running a script.").isRetryableWithoutEffect)
        XCTAssertTrue(RedisError(.server, "MASTERDOWN Link with MASTER is down").isRetryableWithoutEffect)
        XCTAssertTrue(RedisError(.server, "TRYAGAIN Multiple keys request during rehashing").isRetryableWithoutEffect)
        XCTAssertFalse(RedisError(.server, "BUSYKEY Target key name already exists.").isRetryableWithoutEffect)
        XCTAssertFalse(RedisError(.server, "BUSYGROUP Consumer Group name already exists").isRetryableWithoutEffect)
        XCTAssertFalse(RedisError(.server, "OOM command not allowed").isRetryableWithoutEffect)
        XCTAssertFalse(RedisError(.timeout, "command: Resource temporarily unavailable").isRetryableWithoutEffect)
        XCTAssertFalse(RedisError(.connection, "command: Connection reset by peer").isRetryableWithoutEffect)
        XCTAssertTrue(RedisError(.connection, "connect: refused", commandNotSent: true).isRetryableWithoutEffect)
        XCTAssertFalse(RedisError(.overloaded, "queue full", commandNotSent: true).isRetryableWithoutEffect)
    }

    /// A server that loads ~30 000 keys slowly (`key-load-delay`) answers LOADING for a while after
    /// a restart: without transientRetry the command fails at once with LOADING; with it the
    /// command waits and succeeds once the data is loaded.
    func testLoadingIsRetriedOnlyWhenAsked() async throws {
        // key-load-delay: microseconds per key loaded; events every 1 KiB so LOADING is answered during the load.
        let server = try RedisServerFixture(extraArguments: [
            "--enable-debug-command", "local", "--key-load-delay", "50", "--loading-process-events-interval-bytes", "1024",
        ])
        defer { server.kill() }
        let setup = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .seconds(10), logger: logger)
        _ = try await setup.command("DEBUG", "POPULATE", 30000)
        _ = try await setup.command("SET", "marker", "v")
        _ = try await setup.command("BGREWRITEAOF")
        try await waitFor(seconds: 20) {
            let info = try await setup.command("INFO", "persistence").string ?? ""
            return info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
                && info.contains("aof_last_bgrewrite_status:ok")
        }
        setup.close()
        try server.restart()  // returns as soon as the server answers anything, LOADING included

        let fast = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .seconds(2), logger: logger)
        let patient = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .seconds(2),
                                  transientRetry: .seconds(120), logger: logger)
        defer {
            fast.close()
            patient.close()
        }
        let started = ContinuousClock.now
        do {
            _ = try await fast.command("GET", "marker")
            XCTFail("expected LOADING (did the server load too fast? \(server.log.suffix(500)))")
        } catch let error as RedisError {
            XCTAssertEqual(error.serverErrorPrefix, "LOADING")
            XCTAssertLessThan(ContinuousClock.now - started, .seconds(1), "fails fast without transientRetry")
        }
        XCTAssertNotNil(fast.health.failingSince, "a LOADING reply counts as failing")

        let value = try await patient.command("GET", "marker").string
        XCTAssertEqual(value, "v")
        XCTAssertGreaterThan(ContinuousClock.now - started, .milliseconds(200), "it really waited for the load")
        XCTAssertNil(patient.health.failingSince)
        XCTAssertNotNil(patient.health.lastSuccess)
        // A pipeline is retried too while every reply is LOADING (here: loaded by now, so it just works).
        let replies = try await patient.pipeline([["GET", "marker"], ["DBSIZE"]])
        XCTAssertEqual(replies.first?.string, "v")
    }

    /// A long Lua script makes other clients get BUSY (after busy-reply-threshold); a client with
    /// transientRetry gets its answer once the script ends.
    func testBusyIsRetried() async throws {
        let server = try RedisServerFixture(extraArguments: ["--busy-reply-threshold", "100"])
        defer { server.kill() }
        let runner = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .seconds(10), logger: logger)
        let patient = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .seconds(5),
                                  transientRetry: .seconds(10), logger: logger)
        let fast = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .seconds(5), logger: logger)
        defer { runner.close(); patient.close(); fast.close() }
        _ = try await patient.command("SET", "k", "1")
        _ = try await fast.command("PING")
        let script = Task {
            try await runner.command("EVAL", """
                local t0 = redis.call('TIME')
                while true do
                  local t = redis.call('TIME')
                  if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 1200000 then break end
                end
                return 1
                """, 0)
        }
        try await Task.sleep(for: .milliseconds(400))
        do {
            _ = try await fast.command("GET", "k")
            XCTFail("expected BUSY")
        } catch let error as RedisError {
            XCTAssertEqual(error.serverErrorPrefix, "BUSY")
        }
        let value = try await patient.command("GET", "k").string
        XCTAssertEqual(value, "1")
        _ = try await script.value
    }

    /// A command that timed out after it was written may have run: it is never sent again, even
    /// with transientRetry. The script increments a counter and then runs longer than the client waits.
    func testTimeoutAfterWriteIsNotRetried() async throws {
        let server = try RedisServerFixture()
        defer { server.kill() }
        let client = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .milliseconds(300),
                                 transientRetry: .seconds(10), logger: logger)
        defer { client.close() }
        _ = try await client.command("PING")
        let started = ContinuousClock.now
        do {
            _ = try await client.command("EVAL", """
                redis.call('INCR', 'ran')
                local t0 = redis.call('TIME')
                while true do
                  local t = redis.call('TIME')
                  if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 800000 then break end
                end
                return 1
                """, 0)
            XCTFail("expected a timeout")
        } catch let error as RedisError {
            XCTAssertEqual(error.code, .timeout)
            XCTAssertFalse(error.isRetryableWithoutEffect)
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(2), "thrown at once, not retried for 10 s")
        try await Task.sleep(for: .seconds(1))
        let ran = try await client.command("GET", "ran").string
        XCTAssertEqual(ran, "1", "the script ran exactly once")
        XCTAssertNil(client.health.failingSince, "a reply after the timeout clears the failure")
    }

    /// A connection lost after the command was written (the server is killed while it blocks
    /// in BLPOP) is not retried either; a refused connect (nothing sent) is retried until the
    /// server is back.
    func testLostConnectionNotRetriedRefusedConnectRetried() async throws {
        let server = try RedisServerFixture()
        defer { server.kill() }
        let client = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .seconds(5),
                                 transientRetry: .seconds(15), logger: logger)
        defer { client.close() }
        _ = try await client.command("PING")
        let blocked = Task { try await client.command("BLPOP", "nothing", 3) }
        try await Task.sleep(for: .milliseconds(300))
        server.kill()
        let started = ContinuousClock.now
        do {
            _ = try await blocked.value
            XCTFail("expected a lost connection")
        } catch let error as RedisError {
            XCTAssertEqual(error.code, .connection)
            XCTAssertFalse(error.commandNotSent)
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(2), "not retried")
        XCTAssertNotNil(client.health.failingSince)

        // Server down: connects are refused (nothing sent) → retried; it comes back after 1 s.
        let box = UncheckedBox(server)
        let restarter = Task.detached {
            try await Task.sleep(for: .seconds(1))
            try box.value.restart()
        }
        let pong = try await client.command("PING")
        XCTAssertEqual(pong, .status("PONG"))
        try await restarter.value
        XCTAssertNil(client.health.failingSince)

        // Without transientRetry a refused connect fails fast and says that nothing was sent.
        server.kill()
        let fast = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .seconds(1), logger: logger)
        defer { fast.close() }
        do {
            _ = try await fast.command("PING")
            XCTFail("expected a connect failure")
        } catch let error as RedisError {
            XCTAssertTrue(error.commandNotSent)
            XCTAssertTrue(error.isRetryableWithoutEffect)
        }
    }

    private func waitFor(seconds: Double, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTFail("condition not met within \(seconds) s")
    }
}

/// Hands a fixture to one other task (the test waits for it before touching the fixture again).
private struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
