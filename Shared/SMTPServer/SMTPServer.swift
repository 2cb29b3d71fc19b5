public import NIOCore
import NIOPosix
import NIOConcurrencyHelpers
import NIOSSL
public import Logging
import SMTPProtocol

/// An ESMTP listener. Owns the listening channel and tracks its sessions' channels.
///
/// `start` binds and returns; `close` stops accepting, asks idle sessions to close (421
/// 4.3.2), lets open transactions finish for `shutdownGracePeriod`, then closes the rest.
/// Thread-safe (`Sendable`).
public final class SMTPServer: Sendable {
    private let serverChannel: any Channel
    private let children: NIOLockedValueBox<[ObjectIdentifier: any Channel]>
    private let shuttingDown: NIOLockedValueBox<Bool>
    private let configuration: SMTPServerConfiguration
    let stats: SMTPServerStats

    private init(serverChannel: any Channel, children: NIOLockedValueBox<[ObjectIdentifier: any Channel]>,
                 shuttingDown: NIOLockedValueBox<Bool>, configuration: SMTPServerConfiguration, stats: SMTPServerStats) {
        self.serverChannel = serverChannel
        self.children = children
        self.shuttingDown = shuttingDown
        self.configuration = configuration
        self.stats = stats
    }

    /// The bound address (use port 0 to let the kernel choose).
    public var localAddress: SocketAddress? { serverChannel.localAddress }

    public static func start(
        host: String,
        port: Int,
        configuration: SMTPServerConfiguration,
        delegate: any SMTPServerDelegate,
        group: any EventLoopGroup,
        logger: Logger
    ) async throws -> SMTPServer {
        let children = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
        let shuttingDown = NIOLockedValueBox(false)
        let stats = SMTPServerStats()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: false)
            .childChannelInitializer { channel in
                let isShuttingDown = shuttingDown.withLockedValue { $0 }
                let key = ObjectIdentifier(channel)
                children.withLockedValue { $0[key] = channel }
                channel.closeFuture.whenComplete { _ in
                    _ = children.withLockedValue { $0.removeValue(forKey: key) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    if configuration.implicitTLS, let tls = configuration.tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    }
                    let handler = SMTPServerHandler(configuration: configuration, delegate: delegate,
                                                    logger: logger, stats: stats, shuttingDown: isShuttingDown)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .bind(host: host, port: port)
            .get()
        logger.info("smtp server listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        return SMTPServer(serverChannel: channel, children: children, shuttingDown: shuttingDown,
                          configuration: configuration, stats: stats)
    }

    /// Stops accepting, lets sessions finish up to the grace period, then closes them.
    public func close() async throws {
        shuttingDown.withLockedValue { $0 = true }
        try? await serverChannel.close()
        let channels = children.withLockedValue { Array($0.values) }
        let grace = configuration.shutdownGracePeriod
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(SMTPServerShutdownEvent())
            let forced = channel.eventLoop.scheduleTask(in: grace) { channel.close(promise: nil) }
            channel.closeFuture.whenComplete { _ in forced.cancel() }
        }
        for channel in channels {
            try? await channel.closeFuture.get()
        }
    }
}
