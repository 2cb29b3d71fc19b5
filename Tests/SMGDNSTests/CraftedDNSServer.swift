import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SMGDNS

/// A tiny scripted DNS server on 127.0.0.1 for fault injection: for every query it calls
/// `respond` and sends back exactly the bytes returned (possibly several datagrams, possibly
/// from a second socket on another port). Also answers over TCP on the same port.
/// Owns three channels; `stop()` closes them. Records every query it sees (thread-safe).
final class CraftedDNSServer: Sendable {
    enum Via: Sendable { case udp, tcp }
    struct Reply: Sendable {
        var bytes: [UInt8]
        /// Send from the second socket (a different source port).
        var fromOtherPort = false
    }
    struct Seen: Sendable {
        var message: DNSMessage
        var via: Via
        var from: SocketAddress
    }
    typealias Responder = @Sendable (DNSMessage, Via) -> [Reply]

    let port: Int
    let otherPort: Int
    private let udp: any Channel
    private let other: any Channel
    private let tcp: any Channel
    let seen: NIOLockedValueBox<[Seen]>

    var queries: [Seen] { seen.withLockedValue { $0 } }

    private init(port: Int, otherPort: Int, udp: any Channel, other: any Channel, tcp: any Channel, seen: NIOLockedValueBox<[Seen]>) {
        self.port = port; self.otherPort = otherPort; self.udp = udp; self.other = other; self.tcp = tcp; self.seen = seen
    }

    static func start(_ respond: @escaping Responder) async throws -> CraftedDNSServer {
        let group = MultiThreadedEventLoopGroup.singleton
        let seen = NIOLockedValueBox<[Seen]>([])
        let other = try await DatagramBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        // Find a port free for both UDP and TCP.
        for _ in 0..<20 {
            let udp = try await DatagramBootstrap(group: group)
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHandler(UDPHandler(respond: respond, other: other, seen: seen))
                    }
                }
                .bind(host: "127.0.0.1", port: 0).get()
            let port = udp.localAddress!.port!
            do {
                let tcp = try await ServerBootstrap(group: group)
                    .childChannelInitializer { ch in
                        ch.eventLoop.makeCompletedFuture {
                            try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(TestTCPFrameDecoder()))
                            try ch.pipeline.syncOperations.addHandler(TCPHandler(respond: respond, seen: seen))
                        }
                    }
                    .bind(host: "127.0.0.1", port: port).get()
                return CraftedDNSServer(port: port, otherPort: other.localAddress!.port!, udp: udp, other: other, tcp: tcp, seen: seen)
            } catch {
                try? await udp.close()
            }
        }
        try? await other.close()
        throw DNSError(.network, "no port for crafted server")
    }

    func stop() async {
        try? await udp.close()
        try? await other.close()
        try? await tcp.close()
    }

    final class UDPHandler: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        let respond: Responder
        let other: any Channel
        let seen: NIOLockedValueBox<[Seen]>
        init(respond: @escaping Responder, other: any Channel, seen: NIOLockedValueBox<[Seen]>) {
            self.respond = respond; self.other = other; self.seen = seen
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let env = Self.unwrapInboundIn(data)
            guard let q = try? DNSMessageParser.parse(Array(env.data.readableBytesView)) else { return }
            seen.withLockedValue { $0.append(Seen(message: q, via: .udp, from: env.remoteAddress)) }
            for r in respond(q, .udp) {
                let out = AddressedEnvelope(remoteAddress: env.remoteAddress, data: ByteBuffer(bytes: r.bytes))
                if r.fromOtherPort {
                    other.writeAndFlush(out, promise: nil)
                } else {
                    context.writeAndFlush(Self.wrapOutboundOut(out), promise: nil)
                }
            }
        }
    }

    final class TCPHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let respond: Responder
        let seen: NIOLockedValueBox<[Seen]>
        init(respond: @escaping Responder, seen: NIOLockedValueBox<[Seen]>) { self.respond = respond; self.seen = seen }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let frame = Self.unwrapInboundIn(data)
            guard let q = try? DNSMessageParser.parse(Array(frame.readableBytesView)) else { return }
            seen.withLockedValue { $0.append(Seen(message: q, via: .tcp, from: context.remoteAddress!)) }
            for r in respond(q, .tcp) {
                var b = context.channel.allocator.buffer(capacity: r.bytes.count + 2)
                b.writeInteger(UInt16(r.bytes.count))
                b.writeBytes(r.bytes)
                context.writeAndFlush(Self.wrapOutboundOut(b), promise: nil)
            }
        }
    }
}

/// Builds a response to `query` (same id and question unless overridden).
func makeResponse(to query: DNSMessage, rcode: DNSResponseCode = .noError, answers: [DNSRecord] = [],
                  authorities: [DNSRecord] = [], ad: Bool = false, tc: Bool = false,
                  id: UInt16? = nil, question: DNSQuestion? = nil) -> [UInt8] {
    var f = DNSHeaderFlags(rawValue: 0)
    f.isResponse = true
    f.recursionDesired = true
    f.recursionAvailable = true
    f.authenticData = ad
    f.truncated = tc
    f.rcodeLow = UInt8(rcode.rawValue & 0xF)
    let m = DNSMessage(id: id ?? query.id, flags: f, questions: [question ?? query.questions[0]],
                       answers: answers, authorities: authorities, edns: DNSEDNS(udpPayloadSize: 1232, dnssecOK: true))
    return try! DNSMessageEncoder.encode(m)
}

func aRecord(_ name: DNSName, _ v: DNSIPv4Address, ttl: UInt32 = 300) -> DNSRecord {
    DNSRecord(name: name, type: .a, ttl: ttl, data: .a(v))
}

func soaRecord(_ zone: DNSName, ttl: UInt32, minimum: UInt32) -> DNSRecord {
    DNSRecord(name: zone, type: .soa, ttl: ttl,
              data: .soa(DNSSOAData(mname: try! zone.prepending("ns1"), rname: try! zone.prepending("hostmaster"),
                                    serial: 1, refresh: 3600, retry: 900, expire: 604800, minimum: minimum)))
}

/// A clock the test moves by hand.
final class ManualClock: DNSClock {
    private let now = NIOLockedValueBox<UInt64>(1_000_000_000_000)
    func nowNanoseconds() -> UInt64 { now.withLockedValue { $0 } }
    func advance(seconds: Double) { now.withLockedValue { $0 += UInt64(seconds * 1e9) } }
}

/// A name from a literal known to be valid.
func n(_ s: String) -> DNSName { try! DNSName(s) }

/// 2-octet length framing for the test server's TCP side (RFC 1035 §4.2.2).
struct TestTCPFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let len = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
              buffer.readableBytes >= 2 + Int(len) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(Self.wrapInboundOut(buffer.readSlice(length: Int(len))!))
        return .continue
    }
}
