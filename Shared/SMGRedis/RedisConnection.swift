internal import CHiredis
public import NIOCore
internal import NIOPosix
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// One blocking connection to Redis: owns exactly one hiredis `redisContext`.
///
/// **Thread rules.** The hiredis README (0.14.1) says: "Note: A `redisContext` is not
/// thread-safe." A `RedisConnection` is therefore deliberately not `Sendable`: use it
/// from one thread at a time. Every call blocks the calling thread for up to `timeout`, so
/// never call it from Swift's cooperative thread pool — `RedisClient` runs each connection
/// on its own serial `DispatchQueue`.
///
/// **Ownership.** The context is created in `init` and freed (`redisFree`) exactly once: by
/// `close()`, by `deinit`, or as soon as a connection/timeout/protocol error makes it
/// unusable. After that every call throws `RedisError(.closed)`; make a new connection.
/// Every reply object is copied into a `RedisValue` and freed (`freeReplyObject`) before
/// the call returns.
///
/// **Limits.** A reply is limited by the server (`proto-max-bulk-len`, 512 MiB by default);
/// a command by `maxCommandBytes` (checked before anything is written).
///
/// **TLS** (`endpoint.tls`, `rediss://`): hiredis 0.14.1 has none, so hiredis talks to one end of
/// a unix socketpair (`redisConnectFd`) and `RedisTLSBridge` relays the other end over a NIOSSL
/// connection on `eventLoopGroup`. Everything above (timeouts, errors, `isIdleAndAlive`) works
/// as over TCP; `timeout` bounds TCP connect and TLS handshake together.
public final class RedisConnection {
    /// Largest total size of the arguments of one command this client sends.
    public static let maxCommandBytes = 512 * 1024 * 1024

    public let endpoint: RedisEndpoint
    public let timeout: Duration
    private var context: UnsafeMutablePointer<redisContext>?
    /// The TLS relay of a `rediss://` connection (nil for plain TCP and unix sockets).
    private let bridge: RedisTLSBridge?

    /// Connects (within `timeout`), sets the per-command timeout, then sends AUTH and SELECT
    /// if the endpoint asks for them (over TLS at least a PING, so that a server refusing the
    /// client certificate fails here, not at the first command). Throws `.connection`,
    /// `.timeout` or `.server` (e.g. `WRONGPASS`); on any failure the partial context is freed.
    /// - Parameter eventLoopGroup: carries the TLS of `rediss://` endpoints (ignored otherwise);
    ///   nil = NIO's shared singleton group.
    public init(endpoint: RedisEndpoint, timeout: Duration = .seconds(2),
                eventLoopGroup: (any EventLoopGroup)? = nil) throws {
        self.endpoint = endpoint
        self.timeout = timeout
        let tv = Self.makeTimeval(timeout)
        let ctx: UnsafeMutablePointer<redisContext>?
        if let path = endpoint.unixSocket {
            bridge = nil
            ctx = redisConnectUnixWithTimeout(path, tv)
        } else if let tls = endpoint.tls {
            let (tlsBridge, fd) = try RedisTLSBridge.open(
                host: endpoint.host, port: endpoint.port, tls: tls,
                group: eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton, timeout: timeout)
            bridge = tlsBridge
            ctx = redisConnectFd(fd)
            if ctx == nil { closeDescriptor(fd) }
        } else {
            bridge = nil
            ctx = redisConnectWithTimeout(endpoint.host, Int32(endpoint.port), tv)
        }
        guard let ctx else {
            throw RedisError(.connection, "cannot allocate hiredis context for \(endpoint)")
        }
        if ctx.pointee.err != 0 {
            let error = Self.classify(ctx, savedErrno: errno, during: "connect to \(endpoint)")
            redisFree(ctx)
            throw error
        }
        guard redisSetTimeout(ctx, tv) == REDIS_OK else {
            let error = Self.classify(ctx, savedErrno: errno, during: "set timeout")
            redisFree(ctx)
            throw error
        }
        self.context = ctx
        // From here on `deinit` frees the context if AUTH/SELECT throw.
        if let password = endpoint.password {
            if let user = endpoint.username {
                _ = try command(["AUTH", RedisArg(user), RedisArg(password)])
            } else {
                _ = try command(["AUTH", RedisArg(password)])
            }
        }
        if endpoint.database != 0 {
            _ = try command(["SELECT", RedisArg(endpoint.database)])
        } else if bridge != nil && endpoint.password == nil {
            _ = try command(["PING"])
        }
    }

    deinit {
        if let context { redisFree(context) }
    }

    /// True until `close()` or a fatal error freed the context.
    public var isOpen: Bool { context != nil }

    /// Checks, without sending anything, that an idle connection was not closed by the
    /// server: on an idle RESP2 connection nothing may be readable, so readable/EOF/error on
    /// the socket means the connection is dead (e.g. the server restarted). Because nothing
    /// was written, re-connecting after a failed check can never duplicate a command.
    public var isIdleAndAlive: Bool {
        guard let context else { return false }
        var pfd = pollfd(fd: context.pointee.fd, events: Int16(POLLIN), revents: 0)
        let rc = poll(&pfd, 1, 0)
        return rc == 0
    }

    /// Frees the hiredis context. Idempotent.
    public func close() {
        if let context {
            self.context = nil
            redisFree(context)
        }
    }

    /// Sends one command and waits for its reply.
    /// - Throws: `RedisError(.server)` for an error reply (the connection stays usable);
    ///   `.connection`/`.timeout`/`.protocol` when the connection broke (it is then closed);
    ///   `.closed` if it was closed before.
    public func command(_ args: [RedisArg]) throws -> RedisValue {
        let ctx = try openContext()
        try Self.checkSize([args])
        let raw: UnsafeMutableRawPointer? = Self.withArgv(args) { argc, argv, lens in
            redisCommandArgv(ctx, argc, argv, lens)
        }
        guard let raw else { throw fail(ctx, during: "command") }
        defer { freeReplyObject(raw) }
        let value = try Self.convert(raw.assumingMemoryBound(to: redisReply.self), depth: 0)
        if case .error(let message) = value { throw RedisError(.server, message) }
        return value
    }

    /// Sends all commands in one write and reads one reply per command, in order.
    /// Error replies come back as `.error(...)` in their slot; only connection-level
    /// failures throw (and then no reply is returned: the caller cannot know which of the
    /// commands the server executed).
    public func pipeline(_ commands: [[RedisArg]]) throws -> [RedisValue] {
        let ctx = try openContext()
        if commands.isEmpty { return [] }
        try Self.checkSize(commands)
        for args in commands {
            let rc = Self.withArgv(args) { argc, argv, lens in
                redisAppendCommandArgv(ctx, argc, argv, lens)
            }
            if rc != REDIS_OK { throw fail(ctx, during: "pipeline append") }
        }
        var replies: [RedisValue] = []
        replies.reserveCapacity(commands.count)
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            let rc = redisGetReply(ctx, &raw)
            guard rc == REDIS_OK, let raw else {
                if let raw { freeReplyObject(raw) }
                throw fail(ctx, during: "pipeline read")
            }
            defer { freeReplyObject(raw) }
            replies.append(try Self.convert(raw.assumingMemoryBound(to: redisReply.self), depth: 0))
        }
        return replies
    }

    // MARK: - internals

    private func openContext() throws -> UnsafeMutablePointer<redisContext> {
        guard let context else { throw RedisError(.closed, "connection to \(endpoint) is closed") }
        return context
    }

    /// Turns the context's error into a `RedisError` and frees the (now unusable) context.
    private func fail(_ ctx: UnsafeMutablePointer<redisContext>, during operation: String) -> RedisError {
        let saved = errno
        var error = Self.classify(ctx, savedErrno: saved, during: operation)
        close()
        if let tlsProblem = bridge?.failureDescription {
            // hiredis only saw the relay close; say why the TLS connection ended.
            error.message += " (TLS to \(bridge?.peer ?? ""): \(tlsProblem)"
                + (tlsProblem.contains("CERTIFICATE_REQUIRED") ? "; the server wants a client certificate (redis.tls_certificate, redis.tls_key)" : "")
                + ")"
        }
        return error
    }

    /// Deepest array nesting accepted in a reply (hiredis itself limits nesting to 7).
    private static let maxDepth = 16

    private static func convert(_ r: UnsafeMutablePointer<redisReply>, depth: Int) throws -> RedisValue {
        let reply = r.pointee
        func bytes() -> [UInt8] {
            guard let str = reply.str, reply.len > 0 else { return [] }
            return Array(UnsafeRawBufferPointer(start: str, count: Int(reply.len)))
        }
        switch reply.type {
        case REDIS_REPLY_STRING: return .bulk(bytes())
        case REDIS_REPLY_STATUS: return .status(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_ERROR: return .error(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_INTEGER: return .integer(Int64(reply.integer))
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_ARRAY:
            guard depth < maxDepth else { throw RedisError(.protocol, "reply nested too deeply") }
            var out: [RedisValue] = []
            out.reserveCapacity(Int(reply.elements))
            for i in 0..<Int(reply.elements) {
                guard let element = reply.element[i] else { throw RedisError(.protocol, "nil array element") }
                out.append(try convert(element, depth: depth + 1))
            }
            return .array(out)
        default:
            throw RedisError(.protocol, "unknown reply type \(reply.type)")
        }
    }

    private static func classify(_ ctx: UnsafeMutablePointer<redisContext>, savedErrno: Int32,
                                 during operation: String) -> RedisError {
        let text = withUnsafeBytes(of: ctx.pointee.errstr) { raw -> String in
            let bytes = raw.prefix(while: { $0 != 0 })
            return String(decoding: bytes, as: UTF8.self)
        }
        let message = "\(operation): \(text.isEmpty ? "unknown error" : text)"
        switch ctx.pointee.err {
        case REDIS_ERR_IO:
            // hiredis sets errstr from strerror(errno): SO_RCVTIMEO/SO_SNDTIMEO expiry shows up
            // as EAGAIN ("Resource temporarily unavailable"), a connect timeout as ETIMEDOUT.
            if savedErrno == EAGAIN || savedErrno == EWOULDBLOCK || savedErrno == ETIMEDOUT
                || text.contains("temporarily unavailable") || text.contains("timed out") {
                return RedisError(.timeout, message)
            }
            return RedisError(.connection, message)
        case REDIS_ERR_EOF:
            return RedisError(.connection, message)
        case REDIS_ERR_PROTOCOL:
            return RedisError(.protocol, message)
        default:
            if text.contains("timed out") { return RedisError(.timeout, message) }
            return RedisError(.connection, message)
        }
    }

    /// Each command on its own (Redis's limit is per command, so a pipeline of commands that each
    /// pass is sent whole).
    private static func checkSize(_ commands: [[RedisArg]]) throws {
        for args in commands {
            if args.isEmpty { throw RedisError(.invalidArgument, "empty command") }
            if args.count > Int(Int32.max) { throw RedisError(.invalidArgument, "too many arguments") }
            var total = 0
            for a in args { total += a.bytes.count }
            if total > maxCommandBytes {
                throw RedisError(.invalidArgument, "command of \(total) bytes exceeds \(maxCommandBytes)")
            }
        }
    }

    /// Lays the arguments out in one buffer and calls `body` with hiredis' argv/argvlen.
    private static func withArgv<T>(
        _ args: [RedisArg],
        _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> T
    ) -> T {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(args.reduce(1) { $0 + $1.bytes.count })
        var offsets: [Int] = []
        var lengths: [Int] = []
        offsets.reserveCapacity(args.count)
        lengths.reserveCapacity(args.count)
        for a in args {
            offsets.append(buffer.count)
            lengths.append(a.bytes.count)
            buffer.append(contentsOf: a.bytes)
        }
        buffer.append(0) // never empty, so the base address is never nil
        return buffer.withUnsafeBufferPointer { buf in
            let base = UnsafeRawPointer(buf.baseAddress!).assumingMemoryBound(to: CChar.self)
            var argv: [UnsafePointer<CChar>?] = offsets.map { base + $0 }
            return argv.withUnsafeMutableBufferPointer { argvBuf in
                lengths.withUnsafeBufferPointer { lenBuf in
                    body(Int32(args.count), argvBuf.baseAddress!, lenBuf.baseAddress!)
                }
            }
        }
    }

    /// `timeval` for hiredis; never zero (hiredis/SO_RCVTIMEO treat zero as "no timeout").
    private static func makeTimeval(_ d: Duration) -> timeval {
        var tv = timeval()
        tv.tv_usec = 1000
        guard d > .zero else { return tv }
        let (seconds, atto) = d.components
        tv.tv_sec = Int(seconds)
        tv.tv_usec = Int(atto / 1_000_000_000_000)
        if tv.tv_sec == 0 && tv.tv_usec == 0 { tv.tv_usec = 1 }
        return tv
    }
}

/// `close(2)`, out of reach of `RedisConnection.close()`.
private func closeDescriptor(_ fd: CInt) {
    _ = close(fd)
}

/// A connection owns a hiredis context that must not be shared between threads.
@available(*, unavailable)
extension RedisConnection: Sendable {}
