public import NIOCore
import NIOPosix
import NIOHTTP1
public import Prometheus

/// The health and metrics endpoint of every process, over plain HTTP/1.1:
/// - `GET /healthz`: 200 `{"status":"ok"}` while the process works, 503 with the reason otherwise
///   (e.g. Redis unreachable); for supervisors and load balancers.
/// - `GET /metrics`: Prometheus text format (swift-metrics → swift-prometheus).
///
/// SECURITY: no authentication; bind it to loopback or a management network (`http.listen`).
public final class HTTPStatusServer: Sendable {
    public typealias HealthCheck = @Sendable () async -> (healthy: Bool, detail: String)

    let channel: any Channel

    public var localAddress: SocketAddress? { channel.localAddress }

    public static func start(host: String, port: Int, group: any EventLoopGroup, registry: PrometheusCollectorRegistry,
                             health: @escaping HealthCheck) async throws -> HTTPStatusServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(StatusHandler(registry: registry, health: health))
                }
            }
            .bind(host: host, port: port).get()
        return HTTPStatusServer(channel: channel)
    }

    init(channel: any Channel) { self.channel = channel }

    public func close() async {
        try? await channel.close()
    }
}

final class StatusHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let registry: PrometheusCollectorRegistry
    let health: HTTPStatusServer.HealthCheck
    var head: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry, health: @escaping HTTPStatusServer.HealthCheck) {
        self.registry = registry
        self.health = health
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let loop = context.eventLoop
            let ctx = NIOLoopBound(context, eventLoop: loop)
            let keepAlive = head.isKeepAlive
            switch (head.method, head.uri.split(separator: "?").first.map(String.init) ?? head.uri) {
            case (.GET, "/metrics"):
                let body = registry.emitToBuffer()
                respond(ctx.value, status: .ok, type: "text/plain; version=0.0.4", body: body, keepAlive: keepAlive)
            case (.GET, "/healthz"):
                let check = health
                let future = loop.makeFutureWithTask { await check() }
                future.whenSuccess { result in
                    let json = "{\"status\":\"\(result.healthy ? "ok" : "unhealthy")\",\"detail\":\"\(result.detail.replacingOccurrences(of: "\"", with: "'"))\"}\n"
                    self.respond(ctx.value, status: result.healthy ? .ok : .serviceUnavailable,
                                 type: "application/json", body: Array(json.utf8), keepAlive: keepAlive)
                }
            default:
                respond(context, status: .notFound, type: "text/plain", body: Array("not found\n".utf8),
                        keepAlive: keepAlive)
            }
        }
    }

    func respond(_ context: ChannelHandlerContext, status: HTTPResponseStatus, type: String, body: [UInt8],
                 keepAlive: Bool) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.count))
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
                      promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: body.count)
        buffer.writeBytes(body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
