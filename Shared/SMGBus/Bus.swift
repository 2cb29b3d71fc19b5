internal import CZeroMQ
public import Logging

/// One message on the bus. On the wire: a 2-frame ZeroMQ multipart message `[topic, payload]`
/// (topic as UTF-8). Messages with another number of frames are dropped by receivers.
public struct BusMessage: Sendable, Hashable {
    public var topic: String
    public var payload: [UInt8]

    public init(topic: String, payload: [UInt8]) {
        self.topic = topic
        self.payload = payload
    }
}

/// Largest frame a receiving socket accepts by default (`ZMQ_MAXMSGSIZE`), and the largest
/// payload a `BusPusher` sends by default.
///
/// Caution (libzmq 4.3 behaviour, see the test `testOversizedFrameIsNeverDelivered`): a
/// receiver treats an oversized frame as a protocol error and drops that connection for good
/// (no automatic reconnect). Producers therefore refuse oversized messages themselves
/// (`BusPusher.send` returns false); keep the limits of both ends equal.
public let busDefaultMaxMessageSize = 64 * 1024 * 1024

/// A PUSH socket that binds: the producer end of a pipeline stage ("producers bind,
/// consumers connect"). Connected `BusPuller`s are served round-robin. With a CURVE context it
/// is a CURVE server: only authorized clients complete the handshake and get messages.
///
/// **Owns** one ZeroMQ socket (see `SocketCore` for the thread rules: the socket lives on
/// its own serial queue; all methods may be called from any task).
///
/// **Backpressure.** At most `highWaterMark` messages are queued per connected peer
/// (`ZMQ_SNDHWM`; plus the peer's receive HWM and kernel socket buffers). `send` waits at
/// most `timeout` for room and then returns false — with no peer connected, or all peers
/// at their HWM — so a slow consumer slows the producer instead of growing memory.
public final class BusPusher: Sendable {
    private let core: SocketCore
    /// The resolved bind endpoint (`ZMQ_LAST_ENDPOINT`), e.g. `tcp://127.0.0.1:41234`.
    public let endpoint: String
    public let highWaterMark: Int
    /// Largest topic or payload `send` accepts; larger messages are refused (false).
    public let maxMessageSize: Int
    private let logger: Logger

    public init(context: ZMQContext, bind: String, highWaterMark: Int = 1000,
                maxMessageSize: Int = busDefaultMaxMessageSize, logger: Logger) throws {
        self.highWaterMark = highWaterMark
        self.maxMessageSize = maxMessageSize
        self.logger = logger
        core = try SocketCore(context: context, type: ZMQ_PUSH, name: "push", role: .server, logger: logger)
        endpoint = try core.setup { s in
            try SocketCore.setInt(s, ZMQ_SNDHWM, highWaterMark, "ZMQ_SNDHWM")
            try SocketCore.setInt(s, ZMQ_SNDTIMEO, 1000, "ZMQ_SNDTIMEO")
            return try SocketCore.bind(s, bind)
        }
        publicEndpoint = BusEndpoint(address: endpoint, serverKey: context.security?.keyPair.publicKey).description
    }

    /// What consumers connect to (the registry entry): `endpoint`, with `?curve=<server key>`
    /// when the context uses CURVE.
    public let publicEndpoint: String

    /// Queues `message` for one connected puller. Returns false if it could not be queued
    /// within `timeout` (no peer, or all peers at their HWM), if it is larger than
    /// `maxMessageSize`, or if the pusher is closed. Never blocks longer than about `timeout`
    /// (+ one 50 ms poll slice); task cancellation does not shorten the wait.
    public func send(_ message: BusMessage, timeout: Duration) async -> Bool {
        if message.payload.count > maxMessageSize || message.topic.utf8.count > maxMessageSize {
            logger.error("refusing oversized bus message", metadata: [
                "topic": "\(message.topic)", "size": "\(message.payload.count)", "max": "\(maxMessageSize)",
            ])
            return false
        }
        return await core.send(message, deadline: ContinuousClock.now + timeout)
    }

    /// Closes the socket; messages not yet handed to the kernel are dropped (LINGER 0).
    public func close() async { await core.close() }
}

/// A PULL socket that connects to any number of producer endpoints; libzmq fair-queues
/// between them.
///
/// **Owns** one ZeroMQ socket on its own serial queue (see `SocketCore`). `highWaterMark`
/// (`ZMQ_RCVHWM`, default 16) limits how many messages libzmq prefetches per connection,
/// so a busy consumer does not hoard work that idle consumers could take. Frames larger than
/// `maxMessageSize` (`ZMQ_MAXMSGSIZE`) make libzmq drop the offending connection.
public final class BusPuller: Sendable {
    private let core: SocketCore

    public init(context: ZMQContext, highWaterMark: Int = 16, maxMessageSize: Int = busDefaultMaxMessageSize,
                logger: Logger) throws {
        core = try SocketCore(context: context, type: ZMQ_PULL, name: "pull", role: .client, logger: logger)
        try core.setup { s in
            try SocketCore.setInt(s, ZMQ_RCVHWM, highWaterMark, "ZMQ_RCVHWM")
            var max = Int64(maxMessageSize)
            if zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, MemoryLayout<Int64>.size) != 0 {
                throw ZMQError.last("zmq_setsockopt ZMQ_MAXMSGSIZE")
            }
        }
    }

    /// Connects to a producer's registry entry (`BusEndpoint`; with CURVE, the server's key is set
    /// just before `zmq_connect`). Throws `BusEndpointError` for an entry this socket must not use
    /// (plaintext while CURVE is on, or the reverse), `ZMQError` when libzmq fails.
    public func connect(_ endpoint: String) async throws { try await core.connect(endpoint) }
    public func disconnect(_ endpoint: String) async throws { try await core.disconnect(endpoint) }
    /// Makes the connections match the registry's entries (see `BusFollowReport`).
    public func follow(_ entries: [String]) async -> BusFollowReport { await core.follow(entries) }
    /// The entries passed to `connect` (or `follow`) and connected now (empty once closed).
    public var connectedEndpoints: Set<String> { get async { await core.connectedEndpoints } }

    /// Waits for the next message. Returns nil after `close()` (also one that is pending).
    /// Throws `CancellationError` within about 50 ms when the task is cancelled.
    public func receive() async throws -> BusMessage? { try await core.receive() }

    public func close() async { await core.close() }
}

/// A PUB socket that binds, for event taps. `publish` never waits: libzmq drops messages
/// for a subscriber that is at its high-water mark (`ZMQ_SNDHWM`, default 10 000), which is
/// acceptable for taps (the event log in Redis is the record). With a CURVE context it is a
/// CURVE server: only authorized subscribers get events.
///
/// **Owns** one ZeroMQ socket on its own serial queue (see `SocketCore`).
public final class EventPublisher: Sendable {
    private let core: SocketCore
    public let endpoint: String

    public init(context: ZMQContext, bind: String, highWaterMark: Int = 10_000, logger: Logger) throws {
        core = try SocketCore(context: context, type: ZMQ_PUB, name: "pub", role: .server, logger: logger)
        endpoint = try core.setup { s in
            try SocketCore.setInt(s, ZMQ_SNDHWM, highWaterMark, "ZMQ_SNDHWM")
            return try SocketCore.bind(s, bind)
        }
        publicEndpoint = BusEndpoint(address: endpoint, serverKey: context.security?.keyPair.publicKey).description
    }

    /// What subscribers connect to (the registry entry): `endpoint`, with `?curve=<server key>`
    /// when the context uses CURVE.
    public let publicEndpoint: String

    /// Publishes to all matching subscribers. Returns false only if closed or libzmq failed.
    @discardableResult
    public func publish(_ message: BusMessage) async -> Bool { await core.publish(message) }

    /// Publishes all of `messages`, in order, without waiting (one hop onto the socket's queue,
    /// however many): the hot path of every stage, which records its events in Redis first.
    public func publishDetached(_ messages: [BusMessage]) { core.publishDetached(messages) }

    public func close() async { await core.close() }
}

/// A SUB socket that connects to any number of publishers and receives messages whose topic
/// starts with one of `subscriptions` (`""` = everything; filtering happens in the
/// publisher for TCP peers).
///
/// **Owns** one ZeroMQ socket on its own serial queue (see `SocketCore`).
public final class TapSubscriber: Sendable {
    private let core: SocketCore
    public let subscriptions: [String]

    public init(context: ZMQContext, subscriptions: [String], highWaterMark: Int = 10_000,
                maxMessageSize: Int = busDefaultMaxMessageSize, logger: Logger) throws {
        self.subscriptions = subscriptions
        core = try SocketCore(context: context, type: ZMQ_SUB, name: "sub", role: .client, logger: logger)
        try core.setup { s in
            try SocketCore.setInt(s, ZMQ_RCVHWM, highWaterMark, "ZMQ_RCVHWM")
            var max = Int64(maxMessageSize)
            if zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, MemoryLayout<Int64>.size) != 0 {
                throw ZMQError.last("zmq_setsockopt ZMQ_MAXMSGSIZE")
            }
            for prefix in subscriptions {
                try SocketCore.setBytes(s, ZMQ_SUBSCRIBE, Array(prefix.utf8), "ZMQ_SUBSCRIBE")
            }
        }
    }

    /// Connects to a publisher's registry entry; see `BusPuller.connect`.
    public func connect(_ endpoint: String) async throws { try await core.connect(endpoint) }
    public func disconnect(_ endpoint: String) async throws { try await core.disconnect(endpoint) }
    /// Makes the connections match the registry's entries (see `BusFollowReport`).
    public func follow(_ entries: [String]) async -> BusFollowReport { await core.follow(entries) }
    public var connectedEndpoints: Set<String> { get async { await core.connectedEndpoints } }

    /// Waits for the next matching message; nil after `close()`; honours cancellation.
    public func receive() async throws -> BusMessage? { try await core.receive() }

    public func close() async { await core.close() }
}

/// What `follow` did with a list of registry entries: connected new ones, disconnected those
/// no longer listed, and found problems — an entry this socket must not use (malformed, or
/// plaintext while CURVE is on, or the reverse; reported once while it stays listed), or a
/// connection whose CURVE handshake the server refused (this process's key is not authorized
/// there; reported each time, tried again after 30 s). Callers log the problems as errors.
public struct BusFollowReport: Sendable {
    public var connected: [String] = []
    public var disconnected: [String] = []
    public var problems: [BusEndpointError] = []
    public init() {}
}
