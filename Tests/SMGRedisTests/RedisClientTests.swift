import XCTest
import Logging
import SMGRedis
import SMGTestSupport

private let logger: Logger = {
    var l = Logger(label: "smg.redis.tests")
    l.logLevel = .error
    return l
}()

final class RedisClientTests: XCTestCase {
    var server: RedisServerFixture!
    var client: RedisClient!

    override func setUp() async throws {
        server = try RedisServerFixture()
        client = RedisClient(endpoint: server.endpoint, poolSize: 4, timeout: .seconds(1), logger: logger)
    }

    override func tearDown() async throws {
        client?.close()
        client = nil
        server?.kill()
        server = nil
    }

    func testRepliesOfEveryType() async throws {
        let binary: [UInt8] = [0x00, 0x0D, 0x0A, 0x41, 0x00, 0xFF, 0x0D, 0x0A, 0x24, 0x2D]
        let set = try await client.command("SET", "bin", RedisArg(binary))
        XCTAssertEqual(set, .status("OK"))
        let got = try await client.command("GET", RedisArg(Array("bin".utf8)))
        XCTAssertEqual(got, .bulk(binary))
        let v1 = try await client.command("STRLEN", "bin")
        XCTAssertEqual(v1, .integer(Int64(binary.count)))

        // Binary key too.
        let key: [UInt8] = [0x6B, 0x00, 0x0D, 0x0A]
        _ = try await client.command("SET", RedisArg(key), "v")
        let v2 = try await client.command("GET", RedisArg(key)).string
        XCTAssertEqual(v2, "v")
        let v3 = try await client.command("GET", "k").isNull
        XCTAssertEqual(v3, true)

        let v4 = try await client.command("SET", "empty", "").string
        XCTAssertEqual(v4, "OK")
        let v5 = try await client.command("GET", "empty")
        XCTAssertEqual(v5, .bulk([]))
        let v6 = try await client.command("INCRBY", "n", 41)
        XCTAssertEqual(v6, .integer(41))
        let v7 = try await client.command("INCR", "n").int
        XCTAssertEqual(v7, 42)
        let v8 = try await client.command("INCRBYFLOAT", "f", RedisArg(1.5)).string
        XCTAssertEqual(v8, "1.5")
        let v9 = try await client.command("GET", "nothing-here")
        XCTAssertEqual(v9, .null)
        let v10 = try await client.command("PING")
        XCTAssertEqual(v10, .status("PONG"))

        _ = try await client.command("RPUSH", "list", "a", "b", RedisArg([0, 1, 2]))
        let v11 = try await client.command("LRANGE", "list", 0, -1)
        XCTAssertEqual(v11,
                       .array([.bulk(Array("a".utf8)), .bulk(Array("b".utf8)), .bulk([0, 1, 2])]))
        let v12 = try await client.command("MGET", "n", "missing")
        XCTAssertEqual(v12, .array([.bulk(Array("42".utf8)), .null]))
        let v13 = try await client.command("LRANGE", "nolist", 0, -1)
        XCTAssertEqual(v13, .array([]))

        // Nested arrays (a Lua table of tables).
        let nested = try await client.command("EVAL", "return {1, {2, 'x'}, {}}", 0)
        XCTAssertEqual(nested, .array([.integer(1), .array([.integer(2), .bulk(Array("x".utf8))]), .array([])]))

        // A server error reply throws .server and leaves the connection usable.
        do {
            _ = try await client.command("LPUSH", "n", "x")
            XCTFail("expected WRONGTYPE")
        } catch let error as RedisError {
            XCTAssertEqual(error.code, .server)
            XCTAssertEqual(error.serverErrorPrefix, "WRONGTYPE")
        }
        do {
            _ = try await client.command("NOSUCHCOMMAND")
            XCTFail("expected ERR")
        } catch let error as RedisError {
            XCTAssertEqual(error.code, .server)
            XCTAssertTrue(error.message.contains("unknown command"), error.message)
        }
        let v14 = try await client.command("GET", "n").int
        XCTAssertEqual(v14, 42)
    }

    func testLargeBinaryValueRoundTrips() async throws {
        var big = [UInt8](repeating: 0, count: 3 * 1024 * 1024)
        for i in big.indices { big[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 7) }
        _ = try await client.command("SET", "big", RedisArg(big))
        let v15 = try await client.command("GET", "big").bytes
        XCTAssertEqual(v15, big)
    }

    func testPipelineWithErrorInTheMiddle() async throws {
        let replies = try await client.pipeline([
            ["SET", "p", "1"],
            ["LPUSH", "p", "x"],        // WRONGTYPE
            ["INCR", "p"],
            ["GET", "p"],
            ["GET", "p-missing"],
        ])
        XCTAssertEqual(replies.count, 5)
        XCTAssertEqual(replies[0], .status("OK"))
        guard case .error(let message) = replies[1] else { return XCTFail("expected error, got \(replies[1])") }
        XCTAssertTrue(message.hasPrefix("WRONGTYPE"), message)
        XCTAssertEqual(replies[2], .integer(2))
        XCTAssertEqual(replies[3], .bulk(Array("2".utf8)))
        XCTAssertEqual(replies[4], .null)
        let v16 = try await client.pipeline([])
        XCTAssertEqual(v16, [])

        // A long pipeline on one connection keeps order.
        let many = try await client.pipeline((0..<1000).map { _ in ["INCR", "seq"] })
        XCTAssertEqual(many, (1...1000).map { .integer(Int64($0)) })
    }

    func testEvalShaFallsBackToEvalAfterScriptFlush() async throws {
        let script = RedisScript("redis.call('INCRBY', KEYS[1], ARGV[1]); return {KEYS[1], redis.call('GET', KEYS[1])}")
        // Our SHA-1 is the one Redis computes.
        let loaded = try await client.command("SCRIPT", "LOAD", RedisArg(script.source))
        XCTAssertEqual(loaded.string, script.sha1)

        let r1 = try await client.eval(script, keys: ["counter"], args: [5])
        XCTAssertEqual(r1, .array([.bulk(Array("counter".utf8)), .bulk(Array("5".utf8))]))

        _ = try await client.command("SCRIPT", "FLUSH")
        let v17 = try await client.command("SCRIPT", "EXISTS", RedisArg(script.sha1))
        XCTAssertEqual(v17, .array([.integer(0)]))
        let r2 = try await client.eval(script, keys: ["counter"], args: [2])
        XCTAssertEqual(r2, .array([.bulk(Array("counter".utf8)), .bulk(Array("7".utf8))]))
        // The fallback ran the script exactly once and left it cached.
        let v18 = try await client.command("GET", "counter").int
        XCTAssertEqual(v18, 7)
        let v19 = try await client.command("SCRIPT", "EXISTS", RedisArg(script.sha1))
        XCTAssertEqual(v19, .array([.integer(1)]))

        // A script error is a server error, not a fallback loop.
        do {
            _ = try await client.eval(RedisScript("return redis.error_reply('BOOM nope')"), keys: [], args: [])
            XCTFail("expected script error")
        } catch let error as RedisError {
            XCTAssertEqual(error.code, .server)
            XCTAssertEqual(error.serverErrorPrefix, "BOOM")
        }
    }

    /// Group commit: concurrent calls share pipelines, each gets its own reply, an error reply is
    /// only its caller's, and a flushed script cache is refilled on the way.
    func testBatcherSharesRoundTripsAndKeepsRepliesApart() async throws {
        let script = RedisScript("""
            if ARGV[1] == 'fail' then return redis.error_reply('BOOM call ' .. KEYS[1]) end
            return {KEYS[1], redis.call('INCR', 'calls')}
            """)
        let batcher = RedisBatcher(client: client, script: script, maxBatch: 16)
        _ = try await client.command("SCRIPT", "FLUSH")
        let results = await withTaskGroup(of: (Int, Result<RedisValue, any Error>).self) { group in
            for i in 0..<300 {
                group.addTask {
                    do {
                        return (i, .success(try await batcher.eval(keys: [RedisArg("k\(i)")], args: [i % 10 == 0 ? "fail" : "ok"])))
                    } catch { return (i, .failure(error)) }
                }
            }
            var out: [Int: Result<RedisValue, any Error>] = [:]
            for await (i, r) in group { out[i] = r }
            return out
        }
        var counts: Set<Int64> = []
        for i in 0..<300 {
            switch results[i]! {
            case .success(let value):
                XCTAssertNotEqual(i % 10, 0, "call \(i) should have failed")
                guard case .array(let parts) = value, parts.count == 2 else { return XCTFail("\(value)") }
                XCTAssertEqual(parts[0].string, "k\(i)", "each caller gets its own reply")
                counts.insert(parts[1].int ?? -1)
            case .failure(let error as RedisError):
                XCTAssertEqual(i % 10, 0, "call \(i): \(error)")
                XCTAssertEqual(error.code, .server)
                XCTAssertTrue(error.message.contains("BOOM call k\(i)"), error.message)
            case .failure(let error):
                XCTFail("\(error)")
            }
        }
        XCTAssertEqual(counts, Set(1...270), "every successful call ran exactly once")
        let v = try await client.command("GET", "calls").int
        XCTAssertEqual(v, 270)
        let sent = batcher.sent
        XCTAssertEqual(sent.calls, 300)
        XCTAssertLessThan(sent.pipelines, 300, "concurrent calls must share pipelines")
        XCTAssertGreaterThan(sent.pipelines, 300 / 16 - 1, "no pipeline carries more than maxBatch")
    }

    /// Plain commands behind each script in the same pipeline (how a stage claims and then reads
    /// the record and body): each call gets its script's reply and its own follow-ups' replies, in
    /// order, also when the script cache was flushed (the follow-ups are sent again with the EVAL);
    /// a script's error reply comes back alone; calls without follow-ups mix with calls with them.
    func testFollowUpsRideBehindTheirScript() async throws {
        let script = RedisScript("""
            if ARGV[1] == 'fail' then return redis.error_reply('BOOM ' .. KEYS[1]) end
            return redis.call('INCR', KEYS[1])
            """)
        for round in 0..<2 {
            _ = try await client.command("SCRIPT", "FLUSH")
            let batcher = RedisBatcher(client: client, script: script, maxBatch: 8)
            let results = await withTaskGroup(of: (Int, Result<RedisValue, any Error>).self) { group in
                for i in 0..<60 {
                    group.addTask {
                        let follow: [[RedisArg]] = i % 3 == 2 ? [] : [["GET", RedisArg("r\(round)-n\(i)")], ["STRLEN", RedisArg("r\(round)-n\(i)")]]
                        do {
                            return (i, .success(try await batcher.eval(keys: [RedisArg("r\(round)-n\(i)")],
                                                                       args: [i % 10 == 0 ? "fail" : "ok"], followUps: follow)))
                        } catch { return (i, .failure(error)) }
                    }
                }
                var out: [Int: Result<RedisValue, any Error>] = [:]
                for await (i, r) in group { out[i] = r }
                return out
            }
            for i in 0..<60 {
                switch results[i]! {
                case .success(let value) where i % 3 == 2:
                    XCTAssertEqual(value, .integer(1), "no follow-ups: the script's reply as before")
                case .success(let value):
                    XCTAssertEqual(value, .array([.integer(1), .bulk(Array("1".utf8)), .integer(1)]), "call \(i)")
                case .failure(let error as RedisError):
                    XCTAssertEqual(i % 10, 0, "call \(i): \(error)")
                    XCTAssertTrue(error.message.contains("BOOM r\(round)-n\(i)"), error.message)
                case .failure(let error):
                    XCTFail("\(error)")
                }
            }
        }
    }

    /// The task that happens to send a batch is cancelled while the batch is in flight: the
    /// calls it carries for others still get their replies, and the calls queued behind it go next.
    func testBatcherLeaderCancellationDoesNotFailTheOthers() async throws {
        let script = RedisScript("""
            if ARGV[1] == 'slow' then local n = 0; while n < 20000000 do n = n + 1 end end
            return ARGV[1]
            """)
        let batcher = RedisBatcher(client: client, script: script)
        let leader = Task { try await batcher.eval(keys: [], args: ["slow"]) }
        try await Task.sleep(for: .milliseconds(50))   // the slow script is running now
        let followers = (0..<10).map { i in Task { try await batcher.eval(keys: [], args: [RedisArg("f\(i)")]) } }
        try await Task.sleep(for: .milliseconds(20))
        leader.cancel()
        for (i, follower) in followers.enumerated() {
            let reply = try await follower.value
            XCTAssertEqual(reply.string, "f\(i)")
        }
        _ = try? await leader.value
    }

    /// Large calls are not packed together beyond `maxBatchBytes`: each still runs, and no
    /// pipeline carries more than the bound (unless one call alone is larger).
    func testBatcherBoundsThePipelineBytes() async throws {
        let script = RedisScript("return string.len(ARGV[1])")
        let batcher = RedisBatcher(client: client, script: script, maxBatch: 64, maxBatchBytes: 300_000)
        let sizes = (0..<12).map { 100_000 + $0 }
        let lengths = try await withThrowingTaskGroup(of: Int64.self) { group in
            for n in sizes {
                group.addTask { try await batcher.eval(keys: [], args: [RedisArg([UInt8](repeating: 120, count: n))]).int ?? -1 }
            }
            var out: [Int64] = []
            for try await v in group { out.append(v) }
            return out
        }
        XCTAssertEqual(Set(lengths), Set(sizes.map(Int64.init)))
        let sent = batcher.sent
        XCTAssertEqual(sent.calls, 12)
        XCTAssertGreaterThanOrEqual(sent.pipelines, 12 / 2, "at most two 100 kB calls fit under 300 kB")
    }

    /// A lost server fails every call of a pipeline with a connection error (as each call alone
    /// would fail), and the batcher works again once the server is back.
    func testBatcherFailsTheWholePipelineOnAConnectionErrorAndRecovers() async throws {
        let script = RedisScript("return redis.call('INCR', KEYS[1])")
        let batcher = RedisBatcher(client: client, script: script)
        _ = try await batcher.eval(keys: ["n"], args: [])
        server.kill()
        let failures = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    do { _ = try await batcher.eval(keys: ["n"], args: []); return false } catch let e as RedisError {
                        return e.code == .connection || e.code == .timeout
                    } catch { return false }
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        XCTAssertEqual(failures, 20)
        try server.restart()
        let after = try await batcher.eval(keys: ["n"], args: []).int
        XCTAssertEqual(after, 2, "the AOF kept the first call; the failed ones never ran")
    }

    func testDatabaseSelection() async throws {
        var ep = server.endpoint
        ep.database = 2
        let db2 = RedisClient(endpoint: ep, poolSize: 2, timeout: .seconds(1), logger: logger)
        defer { db2.close() }
        _ = try await db2.command("SET", "where", "db2")
        let v20 = try await client.command("GET", "where")
        XCTAssertEqual(v20, .null)
        let url = try RedisEndpoint(url: "redis://127.0.0.1:\(server.port)/2")
        let viaURL = RedisClient(endpoint: url, poolSize: 1, timeout: .seconds(1), logger: logger)
        defer { viaURL.close() }
        let v21 = try await viaURL.command("GET", "where").string
        XCTAssertEqual(v21, "db2")
    }

    func testConcurrentIncrementsThroughPool() async throws {
        let client = self.client!
        let results = try await withTimeout(.seconds(30), "200 INCRs") {
            try await withThrowingTaskGroup(of: Int64.self) { group in
                for _ in 0..<200 {
                    group.addTask { try await client.command("INCR", "hits").int ?? -1 }
                }
                var all: [Int64] = []
                for try await v in group { all.append(v) }
                return all
            }
        }
        XCTAssertEqual(results.sorted(), (1...200).map { Int64($0) })
        let v22 = try await client.command("GET", "hits").int
        XCTAssertEqual(v22, 200)
        // More than one connection was used.
        let clients = try await client.command("CLIENT", "LIST").string ?? ""
        XCTAssertGreaterThan(clients.split(separator: "\n").count, 1, clients)
        XCTAssertLessThanOrEqual(clients.split(separator: "\n").count, 4, clients)
    }

    func testCloseMakesLaterCommandsThrowClosed() async throws {
        _ = try await client.command("PING")
        client.close()
        do {
            _ = try await client.command("PING")
            XCTFail("expected closed")
        } catch let error as RedisError {
            XCTAssertEqual(error.code, .closed)
        }
    }

    func testQueueIsBoundedAndCloseFailsWaitingCommands() async throws {
        let client = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .seconds(1),
                                 maxWaitingPerSlot: 3, logger: logger)
        let pong = try await withTimeout(.seconds(5)) { try await client.command("PING") }
        XCTAssertEqual(pong, .status("PONG"))
        server.pause()
        defer { server.resume() }
        let outcomes = try await withTimeout(.seconds(10), "queued commands") {
            await withTaskGroup(of: String.self) { group in
                for i in 0..<6 {
                    group.addTask {
                        try? await Task.sleep(for: .milliseconds(20 * i)) // queue in order
                        do {
                            _ = try await client.command("PING")
                            return "ok"
                        } catch let e as RedisError {
                            return "\(e.code)"
                        } catch {
                            return "\(error)"
                        }
                    }
                }
                // 1 command runs (and hangs on the frozen server), 2 wait, 3 are refused at
                // once; then close() makes the 2 waiting ones fail with .closed.
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(400))
                    client.close()
                    return "closer"
                }
                var all: [String] = []
                for await o in group where o != "closer" { all.append(o) }
                return all
            }
        }
        XCTAssertEqual(outcomes.filter { $0 == "overloaded" }.count, 3, "\(outcomes)")
        XCTAssertEqual(outcomes.filter { $0 == "timeout" }.count, 1, "\(outcomes)")
        XCTAssertEqual(outcomes.filter { $0 == "closed" }.count, 2, "\(outcomes)")
    }

    func testKilledServerGivesConnectionErrorThenClientRecoversAfterRestart() async throws {
        try await assertKillFailsFastAndRestartRecovers(client, server)
    }

    func testStoppedServerGivesTimeoutWithinAboutTheTimeout() async throws {
        let client = RedisClient(endpoint: server.endpoint, poolSize: 1, timeout: .milliseconds(500), logger: logger)
        defer { client.close() }
        let v24 = try await client.command("PING")
        XCTAssertEqual(v24, .status("PONG"))
        server.pause()
        defer { server.resume() }
        let (outcome, elapsed) = await timed { () -> Result<RedisValue, any Error> in
            do { return .success(try await withTimeout(.seconds(5), "command") { try await client.command("SET", "x", "1") }) } catch { return .failure(error) }
        }
        guard case .failure(let error as RedisError) = outcome else {
            return XCTFail("expected a RedisError, got \(outcome)")
        }
        XCTAssertEqual(error.code, .timeout, "\(error)")
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(400))
        XCTAssertLessThan(elapsed, .milliseconds(1500))

        // A new connection to the frozen server also times out instead of hanging.
        let (second, elapsed2) = await timed { () -> Result<RedisValue, any Error> in
            do { return .success(try await withTimeout(.seconds(5), "command") { try await client.command("PING") }) } catch { return .failure(error) }
        }
        guard case .failure(let error2 as RedisError) = second else { return XCTFail("expected error, got \(second)") }
        XCTAssertTrue(error2.code == .timeout || error2.code == .connection, "\(error2)")
        XCTAssertLessThan(elapsed2, .milliseconds(1500))

        server.resume()
        let v25 = try await client.command("PING")
        XCTAssertEqual(v25, .status("PONG"))
    }
}

final class RedisAuthTests: XCTestCase {
    func testPasswordProtectedServer() async throws {
        let server = try RedisServerFixture(password: "pa55 word")
        defer { server.kill() }
        XCTAssertEqual(server.endpoint.password, "pa55 word")

        let good = RedisClient(endpoint: server.endpoint, poolSize: 2, timeout: .seconds(1), logger: logger)
        defer { good.close() }
        let v26 = try await good.command("SET", "a", "1")
        XCTAssertEqual(v26, .status("OK"))
        let v27 = try await good.command("GET", "a").string
        XCTAssertEqual(v27, "1")

        let anonymous = RedisClient(endpoint: RedisEndpoint(host: "127.0.0.1", port: server.port),
                                    poolSize: 1, timeout: .seconds(1), logger: logger)
        defer { anonymous.close() }
        do {
            _ = try await anonymous.command("GET", "a")
            XCTFail("expected NOAUTH")
        } catch let error as RedisError {
            XCTAssertEqual(error.code, .server)
            XCTAssertEqual(error.serverErrorPrefix, "NOAUTH")
        }

        let wrong = RedisClient(endpoint: RedisEndpoint(host: "127.0.0.1", port: server.port, password: "nope"),
                                poolSize: 1, timeout: .seconds(1), logger: logger)
        defer { wrong.close() }
        do {
            _ = try await wrong.command("PING")
            XCTFail("expected WRONGPASS")
        } catch let error as RedisError {
            XCTAssertEqual(error.code, .server)
            XCTAssertEqual(error.serverErrorPrefix, "WRONGPASS")
        }

        // The synchronous connection type authenticates in init.
        let conn = try RedisConnection(endpoint: RedisEndpoint(url: server.url.replacingOccurrences(of: " ", with: "%20")),
                                       timeout: .seconds(1))
        XCTAssertEqual(try conn.command(["GET", "a"]).string, "1")
        conn.close()
        XCTAssertFalse(conn.isOpen)
        XCTAssertThrowsError(try conn.command(["PING"])) { XCTAssertEqual(($0 as? RedisError)?.code, .closed) }
    }

    /// An ACL user (Redis 6+) from the URL: `AUTH user password`, and the user's rules apply.
    func testACLUserFromURL() async throws {
        let server = try RedisServerFixture(
            extraArguments: ["--user", "default", "off", "--user", "gateway", "on", ">pa55", "~smg:*", "+@all"])
        defer { server.kill() }
        let endpoint = try RedisEndpoint(url: "redis://gateway:pa55@127.0.0.1:\(server.port)/1")
        XCTAssertEqual(endpoint.username, "gateway")
        let client = RedisClient(endpoint: endpoint, poolSize: 2, timeout: .seconds(1), logger: logger)
        defer { client.close() }
        let whoami = try await client.command("ACL", "WHOAMI").string
        XCTAssertEqual(whoami, "gateway")
        let set = try await client.command("SET", "smg:a", "1")
        XCTAssertEqual(set, .status("OK"))
        do {
            _ = try await client.command("GET", "other:a")
            XCTFail("the ACL allows smg:* only")
        } catch let error as RedisError {
            XCTAssertEqual(error.serverErrorPrefix, "NOPERM", "\(error)")
        }
        for url in ["redis://gateway:wrong@127.0.0.1:\(server.port)/0", "redis://:pa55@127.0.0.1:\(server.port)/0"] {
            XCTAssertThrowsError(try RedisConnection(endpoint: RedisEndpoint(url: url), timeout: .seconds(1)), url) { error in
                XCTAssertEqual((error as? RedisError)?.serverErrorPrefix, "WRONGPASS", "\(error)")
            }
        }
        let anonymous = RedisClient(endpoint: RedisEndpoint(host: "127.0.0.1", port: server.port), poolSize: 1,
                                    timeout: .seconds(1), logger: logger)
        defer { anonymous.close() }
        do {
            _ = try await anonymous.command("GET", "smg:a")
            XCTFail("the default user is off")
        } catch let error as RedisError {
            XCTAssertEqual(error.serverErrorPrefix, "NOAUTH", "\(error)")
        }
    }

    func testUnixSocketEndpointWithDatabase() async throws {
        let server = try RedisServerFixture(unixSocket: true)
        defer { server.kill() }
        let socketPath = try XCTUnwrap(server.unixSocketPath)
        let client = RedisClient(endpoint: try RedisEndpoint(url: "unix://\(socketPath)?db=3"),
                                 poolSize: 1, timeout: .seconds(1), logger: logger)
        defer { client.close() }
        let set = try await client.command("SET", "u", "via-unix")
        XCTAssertEqual(set, .status("OK"))
        // Same key is in db 3 when read over TCP.
        var tcp = server.endpoint
        tcp.database = 3
        let viaTCP = try RedisConnection(endpoint: tcp, timeout: .seconds(1))
        XCTAssertEqual(try viaTCP.command(["GET", "u"]).string, "via-unix")
    }

    func testConnectionRefusedIsConnectionError() throws {
        let port = try freeTCPPort()
        XCTAssertThrowsError(try RedisConnection(endpoint: RedisEndpoint(host: "127.0.0.1", port: port),
                                                 timeout: .seconds(1))) { error in
            XCTAssertEqual((error as? RedisError)?.code, .connection, "\(error)")
        }
    }
}

/// kill -9 under a warm pool (16 connections, data that must survive in the AOF): the first command
/// fails (connection or timeout) within about the client's timeout; after a restart on the same
/// port every command succeeds at the first attempt (`assertEveryCommandSucceeds`).
func assertKillFailsFastAndRestartRecovers(_ client: RedisClient, _ server: RedisServerFixture,
                                           file: StaticString = #filePath, line: UInt = #line) async throws {
    _ = try await client.command("SET", "durable", "yes")
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<16 { group.addTask { _ = try await client.command("PING") } }
        try await group.waitForAll()
    }
    server.kill()
    let (outcome, elapsed) = await timed { () -> Result<RedisValue, any Error> in
        do { return .success(try await withTimeout(.seconds(5), "command") { try await client.command("GET", "durable") }) } catch { return .failure(error) }
    }
    guard case .failure(let error as RedisError) = outcome else {
        return XCTFail("expected a RedisError, got \(outcome)", file: file, line: line)
    }
    XCTAssertTrue(error.code == .connection || error.code == .timeout, "\(error)", file: file, line: line)
    XCTAssertLessThan(elapsed, .milliseconds(1500), "error must come within about the timeout", file: file, line: line)
    try server.restart()
    // Every pooled connection is stale now; the client notices that before writing and
    // reconnects, so every command after the restart succeeds at the first attempt.
    try await assertEveryCommandSucceeds(client, reading: "durable", expecting: "yes", file: file, line: line)
}

/// After a restart of the server: 8 commands one after the other, then 16 at once, each must
/// succeed at the first attempt and read `expecting` at `key` (the pool replaced its stale
/// connections before writing to them).
func assertEveryCommandSucceeds(_ client: RedisClient, reading key: String, expecting value: String,
                                file: StaticString = #filePath, line: UInt = #line) async throws {
    for _ in 0..<8 {
        let read = try await client.command("GET", .init(key)).string
        XCTAssertEqual(read, value, file: file, line: line)
    }
    let values = try await withThrowingTaskGroup(of: String?.self) { group in
        for _ in 0..<16 { group.addTask { try await client.command("GET", .init(key)).string } }
        var out: [String?] = []
        for try await v in group { out.append(v) }
        return out
    }
    XCTAssertEqual(values, Array(repeating: value, count: 16), file: file, line: line)
}
