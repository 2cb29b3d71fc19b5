import XCTest
import NIOCore
import NIOPosix
import NIOSSL
import Logging
import Foundation
@testable import SMTPClient
import SMTPServer
import SMTPProtocol

/// A test CA and a server certificate for `mx.tls.test`, made with openssl at test time.
struct TestPKI {
    let dir: URL
    var caFile: String { dir.appendingPathComponent("ca.pem").path }
    var certFile: String { dir.appendingPathComponent("server.pem").path }
    var keyFile: String { dir.appendingPathComponent("server.key").path }

    static func make(name: String) throws -> TestPKI {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-pki-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let script = """
        set -e
        cd '\(dir.path)'
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
          -subj '/CN=SMG Test CA' -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign' 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj '/CN=\(name)' 2>/dev/null
        printf 'subjectAltName=DNS:\(name)\\nextendedKeyUsage=serverAuth\\n' > ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf 2>/dev/null
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script]
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw NSError(domain: "openssl", code: Int(p.terminationStatus)) }
        return TestPKI(dir: dir)
    }

    func serverContext() throws -> NIOSSLContext {
        let config = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certFile).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem)))
        return try NIOSSLContext(configuration: config)
    }

    func remove() { try? FileManager.default.removeItem(at: dir) }
}

final class SMTPSessionTLSTests: XCTestCase {
    final class Sink: SMTPServerDelegate, @unchecked Sendable {
        let lock = NSLock()
        var tlsSeen: [Bool] = []
        func connectionOpened(_ session: SMTPSessionInfo) async -> SMTPReply? { nil }
        func mailFrom(_ session: SMTPSessionInfo, reversePath: String, parameters: [String: String]) async -> SMTPReply? { nil }
        func rcptTo(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, forwardPath: String,
                    parameters: [String: String]) async -> SMTPReply? { nil }
        func connectionClosed(_ session: SMTPSessionInfo) async {}
        func dataReceived(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, message: ByteBuffer) async -> SMTPReply {
            lock.withLock { tlsSeen.append(session.tls) }
            return SMTPReply(code: 250, enhanced: "2.0.0", "queued")
        }
    }

    func logger() -> Logger { var l = Logger(label: "test"); l.logLevel = .warning; return l }

    func withServer(tls: NIOSSLContext?, _ body: (Int, Sink) async throws -> Void) async throws {
        let sink = Sink()
        let server = try await SMTPServer.start(
            host: "127.0.0.1", port: 0,
            configuration: SMTPServerConfiguration(hostname: "mx.tls.test", tls: tls),
            delegate: sink, group: MultiThreadedEventLoopGroup.singleton, logger: logger())
        do { try await body(server.localAddress!.port!, sink) } catch { try? await server.close(); throw error }
        try await server.close()
    }

    func open(port: Int, trust: TLSTrust?, hostname: String = "mx.tls.test") async -> Result<SMTPSession, SMTPSessionFailure> {
        var t = SMTPClientStateMachine.Timeouts()
        t.greeting = .seconds(5); t.command = .seconds(5); t.tlsHandshake = .seconds(5)
        return await SMTPSession.open(
            target: SMTPTarget(hostname: hostname, address: "127.0.0.1", port: port), sourceAddress: nil,
            heloName: "gw.test", tlsMode: .opportunistic, trust: trust, timeouts: t, connectTimeout: .seconds(5),
            group: MultiThreadedEventLoopGroup.singleton, logger: logger())
    }

    /// Trusted CA: verified, TLS 1.3, a named cipher, the leaf's SHA-256; two messages over one connection.
    func testVerifiedTLSIsRecordedAndTheConnectionIsReused() async throws {
        let pki = try TestPKI.make(name: "mx.tls.test")
        defer { pki.remove() }
        let expected = TLSTrust.fingerprint(try NIOSSLCertificate.fromPEMFile(pki.certFile).first)
        try await withServer(tls: try pki.serverContext()) { port, sink in
            let trust = try TLSTrust(extraAnchorsFile: pki.caFile, includeSystem: false)
            guard case .success(var session) = await open(port: port, trust: trust) else { return XCTFail("no session") }
            let tls = try XCTUnwrap(session.tls)
            XCTAssertTrue(tls.verified, tls.verifyError ?? "")
            XCTAssertEqual(tls.version, "TLSv1.3")
            XCTAssertTrue(tls.cipher.hasPrefix("TLS_"), tls.cipher)
            XCTAssertEqual(tls.peerCertificateSHA256, expected)
            for n in 0..<2 {
                let r = await session.send(reversePath: "s@c.test", recipients: ["u\(n)@d.test"],
                                           message: ByteBuffer(string: "Subject: \(n)\r\n\r\nhi\r\n"))
                XCTAssertEqual(r.replies.first?.code, 250)
            }
            XCTAssertEqual(session.transactions, 2)
            XCTAssertTrue(session.isUsable)
            await session.close()
            XCTAssertEqual(sink.lock.withLock { sink.tlsSeen }, [true, true])
        }
    }

    /// Untrusted (no anchor) or wrong name: still TLS, still delivered, but recorded as not verified.
    func testUnverifiedTLSIsRecordedButUsed() async throws {
        let pki = try TestPKI.make(name: "mx.tls.test")
        defer { pki.remove() }
        try await withServer(tls: try pki.serverContext()) { port, _ in
            let noAnchor = try TLSTrust(extraAnchorsFile: nil, includeSystem: false)
            guard case .success(var s1) = await open(port: port, trust: noAnchor) else { return XCTFail("no session") }
            XCTAssertEqual(s1.tls?.verified, false)
            XCTAssertNotNil(s1.tls?.verifyError)
            let r = await s1.send(reversePath: "s@c.test", recipients: ["u@d.test"], message: ByteBuffer(string: "\r\nhi\r\n"))
            XCTAssertEqual(r.replies.first?.code, 250)
            await s1.close()

            let anchor = try TLSTrust(extraAnchorsFile: pki.caFile, includeSystem: false)
            guard case .success(var s2) = await open(port: port, trust: anchor, hostname: "other.test") else { return XCTFail() }
            XCTAssertEqual(s2.tls?.verified, false, "the name must match the MX host")
            await s2.close()
        }
    }

    /// A server without STARTTLS: plaintext, no report.
    func testNoStartTLSOfferedMeansPlaintext() async throws {
        try await withServer(tls: nil) { port, _ in
            let trust = try TLSTrust(extraAnchorsFile: nil, includeSystem: false)
            guard case .success(var s) = await open(port: port, trust: trust) else { return XCTFail() }
            XCTAssertNil(s.tls)
            await s.close()
        }
    }

    /// A peer that says 220 to STARTTLS and then talks garbage: the handshake fails and says so.
    func testBrokenHandshakeIsFlagged() async throws {
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(FakeTLSPeer())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { listener.close(promise: nil) }
        let trust = try TLSTrust(extraAnchorsFile: nil, includeSystem: false)
        let result = await open(port: listener.localAddress!.port!, trust: trust)
        guard case .failure(let failure) = result else { return XCTFail("expected a failure") }
        XCTAssertTrue(failure.tlsHandshakeFailed)
        XCTAssertFalse(failure.connectFailed)
    }
}

/// Greets, offers STARTTLS, says 220, then answers the ClientHello with plaintext junk.
final class FakeTLSPeer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    var tls = false
    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "220 fake ready\r\n")), promise: nil)
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let text = String(buffer: unwrapInboundIn(data))
        if tls {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "this is not TLS at all\r\n")), promise: nil)
        } else if text.hasPrefix("EHLO") {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "250-fake\r\n250 STARTTLS\r\n")), promise: nil)
        } else if text.hasPrefix("STARTTLS") {
            tls = true
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "220 go ahead\r\n")), promise: nil)
        }
    }
}
