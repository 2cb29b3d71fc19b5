import NIOCore
import NIOPosix
import NIOSSL
import Logging
import Foundation
import SMTPClient
import SMTPServer
import SMTPProtocol

// smg-delivery-bench — the egress SMTP client's cost, without the pipeline around it.
//
//   smg-delivery-bench deliver HOST:PORT [--messages N] [--concurrency C] [--size BYTES] [--reuse] [--tls] [--ca FILE]
//       N messages over C parallel sessions; --reuse keeps each session for many messages (as egress's
//       connection cache does), otherwise one connection per message. --tls: STARTTLS when offered.
//   smg-delivery-bench serve-tls PORT CERT KEY
//       a minimal SMTP server with STARTTLS (the project's SMTPServer), accepting everything.
// See bench/README.md ("delivery").

struct Accept: SMTPServerDelegate {
    func connectionOpened(_ session: SMTPSessionInfo) async -> SMTPReply? { nil }
    func mailFrom(_ session: SMTPSessionInfo, reversePath: String, parameters: [String: String]) async -> SMTPReply? { nil }
    func rcptTo(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, forwardPath: String, parameters: [String: String]) async -> SMTPReply? { nil }
    func dataReceived(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, message: ByteBuffer) async -> SMTPReply {
        SMTPReply(code: 250, enhanced: "2.0.0", "ok")
    }
    func connectionClosed(_ session: SMTPSessionInfo) async {}
}

func fail(_ text: String) -> Never {
    FileHandle.standardError.write(Data("smg-delivery-bench: \(text)\n".utf8))
    exit(64)
}

var args = Array(CommandLine.arguments.dropFirst())
guard let command = args.first else { fail("usage: deliver HOST:PORT [...] | serve-tls PORT CERT KEY") }
args.removeFirst()
var logger = Logger(label: "bench")
logger.logLevel = .error

if command == "serve-tls" {
    guard args.count == 3, let port = Int(args[0]) else { fail("serve-tls PORT CERT KEY") }
    let config = TLSConfiguration.makeServerConfiguration(
        certificateChain: try NIOSSLCertificate.fromPEMFile(args[1]).map { .certificate($0) },
        privateKey: .privateKey(try NIOSSLPrivateKey(file: args[2], format: .pem)))
    let server = try await SMTPServer.start(
        host: "127.0.0.1", port: port,
        configuration: SMTPServerConfiguration(hostname: "bench.test", tls: try NIOSSLContext(configuration: config)),
        delegate: Accept(), group: MultiThreadedEventLoopGroup.singleton, logger: logger)
    print("listening on \(server.localAddress!)")
    try await Task.sleep(for: .seconds(86400))
    exit(0)
}

guard command == "deliver", let target = args.first, let colon = target.lastIndex(of: ":"),
      let port = Int(target[target.index(after: colon)...]) else { fail("deliver HOST:PORT [...]") }
let host = String(target[..<colon])
args.removeFirst()
var messages = 2000, concurrency = 8, size = 10240, reuse = false, tls = false
var ca: String? = nil
while let a = args.first {
    args.removeFirst()
    switch a {
    case "--messages": messages = Int(args.removeFirst()) ?? messages
    case "--concurrency": concurrency = Int(args.removeFirst()) ?? concurrency
    case "--size": size = Int(args.removeFirst()) ?? size
    case "--reuse": reuse = true
    case "--tls": tls = true
    case "--ca": ca = args.removeFirst()
    default: fail("unknown argument \(a)")
    }
}
let body = ByteBuffer(string: "From: a@bench.test\r\nTo: b@bench.test\r\nSubject: bench\r\n\r\n"
                      + String(repeating: String(repeating: "x", count: 76) + "\r\n", count: max(1, size / 78)))
let trust: TLSTrust? = tls ? try TLSTrust(extraAnchorsFile: ca, includeSystem: ca == nil) : nil
var timeouts = SMTPClientStateMachine.Timeouts()
timeouts.greeting = .seconds(30)
let (messageCount, parallel, reusing) = (messages, concurrency, reuse)
let t0 = ContinuousClock.now
let counts = await withTaskGroup(of: (Int, Int, Int).self) { group in
    for worker in 0..<parallel {
        group.addTask {
            var ok = 0, failed = 0, connections = 0
            var session: SMTPSession? = nil
            var n = worker
            while n < messageCount {
                if session == nil || !(session!.isUsable) || !reusing {
                    if var old = session { await old.close() }
                    switch await SMTPSession.open(
                        target: SMTPTarget(hostname: "bench.test", address: host, port: port), sourceAddress: nil,
                        heloName: "bench-client.test", tlsMode: .opportunistic, trust: trust, timeouts: timeouts,
                        connectTimeout: .seconds(10), group: MultiThreadedEventLoopGroup.singleton, logger: logger) {
                    case .success(let s): session = s; connections += 1
                    case .failure: failed += 1; n += parallel; session = nil; continue
                    }
                }
                let r = await session!.send(reversePath: "a@bench.test", recipients: ["b\(n)@bench.test"], message: body)
                if r.replies.first?.isPositiveCompletion == true { ok += 1 } else { failed += 1 }
                n += parallel
            }
            if var s = session { await s.close() }
            return (ok, failed, connections)
        }
    }
    var total = (0, 0, 0)
    for await c in group { total = (total.0 + c.0, total.1 + c.1, total.2 + c.2) }
    return total
}
let elapsed = ContinuousClock.now - t0
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
print(String(format: "%d delivered, %d failed, %d connections in %.2f s: %.0f msg/s, %.0f connections/s",
             counts.0, counts.1, counts.2, seconds, Double(counts.0) / seconds, Double(counts.2) / seconds)
      + " (size \(size), concurrency \(concurrency), reuse \(reuse ? "yes" : "no"), tls \(tls ? "yes" : "no"))")
