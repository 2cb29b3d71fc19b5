import XCTest
import Logging
import SMGBus
import SMGTestSupport

private let logger: Logger = {
    var l = Logger(label: "smg.bus.curve.tests")
    l.logLevel = .critical
    return l
}()

private func msg(_ topic: String, _ text: String) -> BusMessage {
    BusMessage(topic: topic, payload: Array(text.utf8))
}

/// The messages `receive` yields until nothing arrives for `idle`.
private func drain(idle: Duration = .seconds(1), _ receive: @escaping @Sendable () async throws -> BusMessage?) async
    -> [BusMessage]
{
    var out: [BusMessage] = []
    while let m = try? await withTimeout(idle, "receive", receive) {
        out.append(m)
    }
    return out
}

/// A context whose sockets use CURVE with `pair`, accepting `authorized` clients besides itself.
private func curveContext(_ pair: CurveKeyPair, authorizing authorized: [CurveKeyPair] = []) throws -> ZMQContext {
    try ZMQContext(security: BusSecurity(keyPair: pair, authorizedKeys: authorized.map(\.publicKey)), logger: logger)
}

/// Publishes `sync` until every subscriber has seen one (subscriptions propagate asynchronously),
/// or `limit` passes; returns which subscribers joined.
private func join(_ publisher: EventPublisher, _ subscribers: [TapSubscriber], limit: Duration = .seconds(3)) async -> [Bool] {
    var joined = [Bool](repeating: false, count: subscribers.count)
    let deadline = ContinuousClock.now + limit
    while joined.contains(false) && ContinuousClock.now < deadline {
        await publisher.publish(msg("sync", ""))
        for (i, sub) in subscribers.enumerated() where !joined[i] {
            if let m = try? await withTimeout(.milliseconds(50), "sync", { try await sub.receive() }) {
                joined[i] = m.topic == "sync"
            }
        }
    }
    return joined
}

private func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("smg-curve-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

final class BusCurveTests: XCTestCase {
    func testAuthorizedClientReceivesPushAndPubOverCurve() async throws {
        let serverKeys = try CurveKeyPair.generate(), clientKeys = try CurveKeyPair.generate()
        let server = try curveContext(serverKeys, authorizing: [clientKeys])
        let client = try curveContext(clientKeys)
        let pusher = try BusPusher(context: server, bind: "tcp://127.0.0.1:*", logger: logger)
        let publisher = try EventPublisher(context: server, bind: "tcp://127.0.0.1:*", logger: logger)
        // The registry entry carries the server's key; ZeroMQ is given the bare endpoint.
        XCTAssertTrue(pusher.publicEndpoint.hasPrefix(pusher.endpoint + "?curve="), pusher.publicEndpoint)
        let parsed = try BusEndpoint(parsing: pusher.publicEndpoint)
        XCTAssertEqual(parsed.address, pusher.endpoint)
        XCTAssertEqual(parsed.serverKey, serverKeys.publicKey)

        let puller = try BusPuller(context: client, logger: logger)
        try await puller.connect(pusher.publicEndpoint)
        let connected = await puller.connectedEndpoints
        XCTAssertEqual(connected, [pusher.publicEndpoint])
        for i in 0..<10 {
            let sent = await pusher.send(msg("mail.accepted", "m\(i)"), timeout: .seconds(5))
            XCTAssertTrue(sent)
        }
        let got = await drain { try await puller.receive() }
        XCTAssertEqual(got.map { String(decoding: $0.payload, as: UTF8.self) }, (0..<10).map { "m\($0)" })

        let subscriber = try TapSubscriber(context: client, subscriptions: ["events.", "sync"], logger: logger)
        try await subscriber.connect(publisher.publicEndpoint)
        let joined = await join(publisher, [subscriber])
        XCTAssertEqual(joined, [true], "the authorized subscriber never joined")
        await publisher.publish(msg("events.delivered", "{}"))
        let event = try await withTimeout(.seconds(5), "event") { try await subscriber.receive() }
        XCTAssertEqual(event?.topic, "events.delivered")

        await puller.close(); await subscriber.close(); await pusher.close(); await publisher.close()
    }

    func testUnauthorizedClientGetsNothingWhileAnAuthorizedOneDoes() async throws {
        let serverKeys = try CurveKeyPair.generate(), goodKeys = try CurveKeyPair.generate()
        let strangerKeys = try CurveKeyPair.generate()
        let server = try curveContext(serverKeys, authorizing: [goodKeys])
        let good = try curveContext(goodKeys)
        let stranger = try curveContext(strangerKeys, authorizing: [serverKeys])   // its own list does not matter
        let pusher = try BusPusher(context: server, bind: "tcp://127.0.0.1:*", logger: logger)
        let publisher = try EventPublisher(context: server, bind: "tcp://127.0.0.1:*", logger: logger)

        let strangerPuller = try BusPuller(context: stranger, logger: logger)
        let strangerSub = try TapSubscriber(context: stranger, subscriptions: [""], logger: logger)
        let strangerPullerReport = await strangerPuller.follow([pusher.publicEndpoint])
        XCTAssertEqual(strangerPullerReport.connected, [pusher.publicEndpoint])
        try await strangerSub.connect(publisher.publicEndpoint)
        try await Task.sleep(for: .milliseconds(300))   // its handshake is refused meanwhile

        let goodPuller = try BusPuller(context: good, logger: logger)
        let goodSub = try TapSubscriber(context: good, subscriptions: [""], logger: logger)
        try await goodPuller.connect(pusher.publicEndpoint)
        try await goodSub.connect(publisher.publicEndpoint)
        let joined = await join(publisher, [goodSub])
        XCTAssertEqual(joined, [true])

        for i in 0..<20 {
            let sent = await pusher.send(msg("work", "\(i)"), timeout: .seconds(5))
            XCTAssertTrue(sent)
            await publisher.publish(msg("events.x", "\(i)"))
        }
        async let goodGot = drain { try await goodPuller.receive() }
        async let strangerGot = drain { try await strangerPuller.receive() }
        async let strangerEvents = drain { try await strangerSub.receive() }
        let (a, b, c) = await (goodGot, strangerGot, strangerEvents)
        XCTAssertEqual(a.count, 20, "PUSH serves only the authorized client")
        XCTAssertEqual(b.count, 0, "the unauthorized puller got \(b.count) messages")
        XCTAssertEqual(c.count, 0, "the unauthorized subscriber got \(c.count) events")
        let events = await drain { try await goodSub.receive() }
        XCTAssertEqual(events.filter { $0.topic == "events.x" }.count, 20)

        // The refused client notices (libzmq gives such a connection up) and says why.
        let report = await strangerPuller.follow([pusher.publicEndpoint])
        XCTAssertEqual(report.problems.map(\.entry), [pusher.publicEndpoint])
        XCTAssertTrue(report.problems.first?.problem.contains("refused this process's CURVE key \(strangerKeys.publicZ85)") ?? false,
                      "\(report.problems)")
        XCTAssertTrue(report.connected.isEmpty, "it waits before trying again")
        let afterRefusal = await strangerPuller.connectedEndpoints
        XCTAssertEqual(afterRefusal, [])

        for s in [goodPuller, strangerPuller] { await s.close() }
        for s in [goodSub, strangerSub] { await s.close() }
        await pusher.close(); await publisher.close()
    }

    func testPlaintextClientGetsNothingFromACurveServer() async throws {
        let serverKeys = try CurveKeyPair.generate()
        let server = try curveContext(serverKeys)
        let plain = try ZMQContext()
        let pusher = try BusPusher(context: server, bind: "tcp://127.0.0.1:*", logger: logger)
        let publisher = try EventPublisher(context: server, bind: "tcp://127.0.0.1:*", logger: logger)

        // The registry entry is refused by a plaintext client, naming the key it lacks…
        let puller = try BusPuller(context: plain, logger: logger)
        do {
            try await puller.connect(pusher.publicEndpoint)
            XCTFail("a plaintext client must refuse a CURVE endpoint")
        } catch let error as BusEndpointError {
            XCTAssertEqual(error.entry, pusher.publicEndpoint)
            XCTAssertTrue(error.problem.contains("bus.curve_key_file"), error.problem)
        }
        // …and the server serves nothing in plaintext to one that connects anyway.
        try await puller.connect(pusher.endpoint)
        let sub = try TapSubscriber(context: plain, subscriptions: [""], logger: logger)
        try await sub.connect(publisher.endpoint)
        // A client with the server's own keypair (authorized) proves the server is sending.
        let insider = try curveContext(serverKeys)
        let insiderPuller = try BusPuller(context: insider, logger: logger)
        try await insiderPuller.connect(pusher.publicEndpoint)
        for i in 0..<5 {
            let sent = await pusher.send(msg("work", "\(i)"), timeout: .seconds(5))
            XCTAssertTrue(sent)
            await publisher.publish(msg("events.x", "\(i)"))
        }
        async let plainGot = drain { try await puller.receive() }
        async let plainEvents = drain { try await sub.receive() }
        async let insiderGot = drain { try await insiderPuller.receive() }
        let (a, b, c) = await (plainGot, plainEvents, insiderGot)
        XCTAssertEqual(a.count, 0)
        XCTAssertEqual(b.count, 0)
        XCTAssertEqual(c.count, 5)
        await puller.close(); await sub.close(); await insiderPuller.close()
        await pusher.close(); await publisher.close()
    }

    func testCurveClientRefusesPlaintextEndpointsAndFollowsKeyChanges() async throws {
        let keys = try CurveKeyPair.generate()
        let ctx = try curveContext(keys)
        let puller = try BusPuller(context: ctx, logger: logger)
        do {
            try await puller.connect("tcp://127.0.0.1:5999")
            XCTFail("a CURVE client must refuse a plaintext endpoint")
        } catch let error as BusEndpointError {
            XCTAssertTrue(error.problem.contains("plaintext endpoint refused"), error.problem)
        }
        // follow names a refused or malformed entry once, and keeps the others.
        let pusher = try BusPusher(context: ctx, bind: "tcp://127.0.0.1:*", logger: logger)
        let entries = ["tcp://127.0.0.1:5999", "tcp://127.0.0.1:5998?curve=zz", pusher.publicEndpoint]
        let first = await puller.follow(entries)
        XCTAssertEqual(first.connected, [pusher.publicEndpoint])
        XCTAssertEqual(Set(first.problems.map(\.entry)), Set(entries.prefix(2)))
        let second = await puller.follow(entries)
        XCTAssertTrue(second.problems.isEmpty && second.connected.isEmpty && second.disconnected.isEmpty, "\(second)")

        // A new server key for the same address replaces the connection (the last entry wins).
        let rotated = BusEndpoint(address: pusher.endpoint, serverKey: try CurveKeyPair.generate().publicKey).description
        let third = await puller.follow([pusher.publicEndpoint, rotated])
        XCTAssertEqual(third.disconnected, [pusher.publicEndpoint])
        XCTAssertEqual(third.connected, [rotated])
        let fourth = await puller.follow([pusher.publicEndpoint])
        XCTAssertEqual(fourth.connected, [pusher.publicEndpoint])
        // Gone from the registry: disconnected.
        let fifth = await puller.follow([])
        XCTAssertEqual(fifth.disconnected, [pusher.publicEndpoint])
        let none = await puller.connectedEndpoints
        XCTAssertEqual(none, [])
        await puller.close(); await pusher.close()
    }

    func testEndpointEntries() throws {
        let key = try CurveKeyPair.generate().publicKey
        let entry = BusEndpoint(address: "tcp://10.0.0.5:41234", serverKey: key).description
        XCTAssertTrue(entry.hasPrefix("tcp://10.0.0.5:41234?curve="))
        XCTAssertEqual(entry.count, "tcp://10.0.0.5:41234?curve=".count + 64)
        XCTAssertEqual(try BusEndpoint(parsing: entry), BusEndpoint(address: "tcp://10.0.0.5:41234", serverKey: key))
        XCTAssertEqual(try BusEndpoint(parsing: entry.uppercased().replacingOccurrences(of: "TCP://", with: "tcp://")
                                        .replacingOccurrences(of: "?CURVE=", with: "?curve=")).serverKey, key)
        XCTAssertEqual(try BusEndpoint(parsing: "tcp://h:1"), BusEndpoint(address: "tcp://h:1"))
        for bad in ["", "tcp://h:1?curve=", "tcp://h:1?curve=abcd", "tcp://h:1?x=1", "tcp://h:1?curve=\(String(repeating: "g", count: 64))",
                    "tcp://h:1?curve=\(String(repeating: "a", count: 64))&x=1", "?curve=\(String(repeating: "a", count: 64))"] {
            XCTAssertThrowsError(try BusEndpoint(parsing: bad), bad)
        }
    }

    func testKeygenRoundTrip() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("bus.key").path
        let pair = try CurveKeyPair.generate()
        XCTAssertEqual(pair.publicKey.count, 32)
        XCTAssertEqual(pair.publicZ85.count, 40)
        XCTAssertEqual(try CurveKeyPair(secretKey: pair.secretKey), pair, "the public key is derived from the secret key")
        XCTAssertFalse("\(pair)".contains(Z85.encode(pair.secretKey)), "a description never shows the secret key")

        try CurveKeyFile.write(pair, to: path, replace: false)
        let mode = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)
        XCTAssertEqual(mode.intValue & 0o777, 0o600)
        XCTAssertEqual(try CurveKeyFile.read(path: path), pair)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        XCTAssertTrue(text.contains("public: \(pair.publicZ85)\n"), text)

        let other = try CurveKeyPair.generate()
        XCTAssertThrowsError(try CurveKeyFile.write(other, to: path, replace: false)) { error in
            XCTAssertTrue("\(error)".contains("exists"), "\(error)")
        }
        XCTAssertEqual(try CurveKeyFile.read(path: path), pair, "refused: the old file is untouched")
        try CurveKeyFile.write(other, to: path, replace: true)
        XCTAssertEqual(try CurveKeyFile.read(path: path), other)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        XCTAssertEqual(leftovers, ["bus.key"], "no temporary file is left behind")
    }

    func testKeyFileErrors() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let pair = try CurveKeyPair.generate(), other = try CurveKeyPair.generate()
        func file(_ name: String, _ text: String, mode: Int = 0o600) throws -> String {
            let path = dir.appendingPathComponent(name).path
            XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
            return path
        }
        func problem(_ path: String) -> String {
            do {
                _ = try CurveKeyFile.read(path: path)
                return "no error"
            } catch { return error.message }
        }
        let good = CurveKeyFile.text(of: pair)
        XCTAssertTrue(problem(try file("loose", good, mode: 0o644)).contains("mode 644"))
        XCTAssertTrue(problem(try file("group", good, mode: 0o640)).contains("chmod 600"))
        XCTAssertTrue(problem(dir.appendingPathComponent("missing").path).contains("No such file"))
        XCTAssertTrue(problem(dir.path).contains("not a regular file") || problem(dir.path).contains("mode"))
        XCTAssertTrue(problem(try file("nosecret", "public: \(pair.publicZ85)\n")).contains("no \"secret:\" line"))
        XCTAssertTrue(problem(try file("short", "secret: abc\n")).contains("not 40 characters"))
        XCTAssertTrue(problem(try file("junk", "hello\n")).contains("line 1"))
        let mismatched = "public: \(other.publicZ85)\nsecret: \(Z85.encode(pair.secretKey))\n"
        XCTAssertTrue(problem(try file("mismatch", mismatched)).contains("does not belong"))
        // No error message shows the secret key.
        for name in ["loose", "mismatch"] {
            XCTAssertFalse(problem(dir.appendingPathComponent(name).path).contains(Z85.encode(pair.secretKey)))
        }
        // The public line is optional (derived from the secret key).
        XCTAssertEqual(try CurveKeyFile.read(path: try file("secretonly", "# c\n\nsecret: \(Z85.encode(pair.secretKey))\n")), pair)
    }

    func testAuthorizedKeysFile() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let keys = try (0..<3).map { _ in try CurveKeyPair.generate().publicKey }
        let text = """
            # keys of the other sites
            \(Z85.encode(keys[0]))
              \(Z85.encode(keys[1]))   eu-de-02 scanner

            #\(Z85.encode(keys[2])) (commented out)
            """
        let path = dir.appendingPathComponent("authorized").path
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
        XCTAssertEqual(try CurveKeyFile.readAuthorizedKeys(path: path), [keys[0], keys[1]])
        let bad = dir.appendingPathComponent("bad").path
        XCTAssertTrue(FileManager.default.createFile(atPath: bad, contents: Data("\(Z85.encode(keys[0]))\nnot-a-key\n".utf8)))
        XCTAssertThrowsError(try CurveKeyFile.readAuthorizedKeys(path: bad)) { error in
            XCTAssertTrue("\(error)".contains("line 2"), "\(error)")
        }
        XCTAssertThrowsError(try CurveKeyFile.readAuthorizedKeys(path: dir.appendingPathComponent("none").path))
        // Z85 never starts a key with '#' (it would exceed 32 bits), so such lines are comments.
        XCTAssertNil(Z85.decode("#" + String(repeating: "0", count: 39)))
    }
}
