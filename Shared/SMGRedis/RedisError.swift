/// An error from the Redis layer. Extensible struct with a code (not a frozen enum).
public struct RedisError: Error, CustomStringConvertible, Sendable, Hashable {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private let raw: String
        private init(_ raw: String) { self.raw = raw }
        /// Could not connect, or the connection broke (refused, reset, EOF, DNS failure).
        public static let connection = Code("connection")
        /// Connect or a command did not complete within the configured timeout.
        public static let timeout = Code("timeout")
        /// The server answered with an error reply (`-ERR`, `-NOSCRIPT`, `-WRONGTYPE`, ...).
        public static let server = Code("server")
        /// The reply could not be parsed, or was not what the protocol allows.
        public static let `protocol` = Code("protocol")
        /// The connection or client was closed (by `close()` or after an earlier fatal error).
        public static let closed = Code("closed")
        /// The endpoint URL or an argument was invalid.
        public static let invalidArgument = Code("invalidArgument")
        /// Too many commands are queued on the client (see `RedisClient.maxWaitingPerSlot`).
        public static let overloaded = Code("overloaded")
        public var description: String { raw }
    }

    public var code: Code
    public var message: String
    /// True when it is certain that the command never reached the server: the failure
    /// happened while connecting (TCP connect, AUTH, SELECT), before anything of the
    /// command was written. Set by `RedisClient`; see `isRetryableWithoutEffect`.
    public var commandNotSent: Bool

    public init(_ code: Code, _ message: String, commandNotSent: Bool = false) {
        self.code = code
        self.message = message
        self.commandNotSent = commandNotSent
    }

    public var description: String { "RedisError(\(code)): \(message)" }

    /// For `.server` errors: the first word of the error reply (`ERR`, `NOSCRIPT`, `WRONGPASS`...).
    public var serverErrorPrefix: Substring? {
        guard code == .server else { return nil }
        return message.split(separator: " ", maxSplits: 1).first
    }

    /// Error replies with which Redis says "not executed, try again": still loading the
    /// dataset (`LOADING`), busy in a script or function (`BUSY`), a replica whose master is
    /// down (`MASTERDOWN`), a cluster slot in migration (`TRYAGAIN`), a write sent to a node that
    /// a failover made a replica (`READONLY`: a replica writes nothing, so a script that failed
    /// with it changed nothing; with Sentinel the client finds the new primary for the retry).
    public static let transientServerPrefixes: Set<Substring> = ["LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY"]

    /// True if the command certainly did not run and may simply be sent again later: one
    /// of `transientServerPrefixes`, or a connect failure before the command was written.
    /// Never true for a timeout or a connection lost after writing (the command may have
    /// run), nor for `OOM` (refused, but not transient: the caller should answer 4xx now).
    public var isRetryableWithoutEffect: Bool {
        if let prefix = serverErrorPrefix { return Self.transientServerPrefixes.contains(prefix) }
        return commandNotSent && (code == .connection || code == .timeout)
    }

    /// True if the connection that produced this error is unusable (it has been freed).
    public var isConnectionFatal: Bool {
        code == .connection || code == .timeout || code == .protocol || code == .closed
    }
}
