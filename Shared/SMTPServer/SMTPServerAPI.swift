@_exported public import SMTPProtocol
public import NIOCore
public import NIOSSL
import NIOConcurrencyHelpers

/// Settings of one SMTP listener. Defaults, bounds and meaning in one place.
public struct SMTPServerConfiguration: Sendable {
    /// Name in the greeting, the EHLO reply and 421 replies.
    public var hostname: String
    /// Text after the hostname in the 220 greeting.
    public var greetingText: String
    /// Largest accepted message (unstuffed bytes); advertised as SIZE. Default 25 MiB.
    public var maxMessageSize: Int
    /// Store bare LFs in message data as CRLF (counted in `SMTPEnvelope.bareLineFeeds`) instead
    /// of refusing the message with 554 5.5.2; only `CRLF.CRLF` ever ends the data either way.
    public var normalizeBareLineFeeds = false
    /// Recipients per transaction; more get 452 4.5.3. Default 100.
    public var maxRecipients: Int
    /// Command line limit including CRLF; at least 512 (RFC 5321). Default 2048.
    public var maxLineLength: Int
    /// Time allowed for the next complete command line (idle or dripping). Default 300 s (RFC 5321 §4.5.3.2.7).
    public var commandTimeout: TimeAmount
    /// Idle time allowed between DATA chunks. Default 180 s.
    public var dataTimeout: TimeAmount
    /// The whole DATA phase must end within this (slow clients). Default 30 min.
    public var maxDataDuration: TimeAmount = .minutes(30)
    /// Protocol errors before 421 4.7.0 and close. Default 20 (Postfix smtpd_hard_error_limit).
    public var maxErrors: Int
    /// Pipelined input buffered while a delegate decision is awaited; reading pauses above it.
    /// Default 64 KiB. Per connection the server holds at most maxMessageSize +
    /// maxLineLength + maxPipelineBuffer + one event-loop read burst (NIO defaults:
    /// maxMessagesPerRead 4 × receive buffer ≤ 64 KiB).
    public var maxPipelineBuffer: Int
    /// Advertise and accept SMTPUTF8. Default true.
    public var smtpUTF8: Bool
    /// How long `close()` lets open transactions finish. Default 30 s.
    public var shutdownGracePeriod: TimeAmount
    /// Server certificate and key; nil = no TLS (no STARTTLS, no implicit TLS).
    public var tls: NIOSSLContext?
    /// TLS from the first byte (submissions port 465, RFC 8314) instead of STARTTLS.
    public var implicitTLS: Bool
    /// SASL mechanisms offered (`PLAIN`, `LOGIN`); empty = no AUTH.
    public var authMechanisms: [String]
    /// Offer AUTH on unencrypted sessions (off: AUTH only after TLS, R1).
    public var allowPlaintextAuth: Bool
    /// Refuse MAIL with 530 5.7.0 until AUTH succeeded (never an open relay).
    public var requireAuth: Bool
    /// Commands per connection before 421 4.7.0. Default 10 000.
    public var maxCommands: Int
    /// Advertise and accept DSN (RFC 3461). Default true.
    public var dsn: Bool = true
    /// Bytes of DATA all sessions sharing this budget may buffer together; nil = no global
    /// limit (each session is still bounded by `maxMessageSize`). A transaction that would go
    /// beyond it gets 452 4.3.1: at DATA when its SIZE parameter already says so, else at the
    /// final dot (the rest of its data is read and discarded; the session stays usable).
    public var inflightBudget: SMTPByteBudget? = nil

    public init(
        hostname: String,
        greetingText: String = "ESMTP",
        maxMessageSize: Int = 25 * 1024 * 1024,
        maxRecipients: Int = 100,
        maxLineLength: Int = 2048,
        commandTimeout: TimeAmount = .seconds(300),
        dataTimeout: TimeAmount = .seconds(180),
        maxErrors: Int = 20,
        maxPipelineBuffer: Int = 64 * 1024,
        smtpUTF8: Bool = true,
        shutdownGracePeriod: TimeAmount = .seconds(30),
        tls: NIOSSLContext? = nil,
        implicitTLS: Bool = false,
        authMechanisms: [String] = [],
        allowPlaintextAuth: Bool = false,
        requireAuth: Bool = false,
        maxCommands: Int = 10_000
    ) {
        self.tls = tls
        self.implicitTLS = implicitTLS && tls != nil
        self.authMechanisms = authMechanisms
        self.allowPlaintextAuth = allowPlaintextAuth
        self.requireAuth = requireAuth
        self.maxCommands = max(10, maxCommands)
        self.hostname = hostname
        self.greetingText = greetingText
        self.maxMessageSize = maxMessageSize
        self.maxRecipients = maxRecipients
        self.maxLineLength = max(512, maxLineLength)
        self.commandTimeout = commandTimeout
        self.dataTimeout = dataTimeout
        self.maxErrors = max(1, maxErrors)
        self.maxPipelineBuffer = max(4096, maxPipelineBuffer)
        self.smtpUTF8 = smtpUTF8
        self.shutdownGracePeriod = shutdownGracePeriod
    }

    var stateMachineConfiguration: SMTPServerStateMachine.Configuration {
        .init(hostname: hostname, greetingText: greetingText, maxMessageSize: maxMessageSize,
              maxRecipients: maxRecipients, maxErrors: maxErrors, smtpUTF8: smtpUTF8,
              tlsAvailable: tls != nil && !implicitTLS, authMechanisms: authMechanisms,
              allowPlaintextAuth: allowPlaintextAuth, requireAuth: requireAuth, maxCommands: maxCommands,
              dsn: dsn)
    }
}

/// A byte budget shared by sessions (all listeners of one process): DATA is buffered only
/// against a reservation, so the memory held by messages in flight never exceeds `limit`.
/// Thread-safe; reservations are taken and returned on the sessions' event loops.
public final class SMTPByteBudget: Sendable {
    public let limit: Int
    private let used = NIOLockedValueBox(0)

    public init(limit: Int) {
        precondition(limit > 0, "limit must be positive")
        self.limit = limit
    }

    /// Bytes reserved right now.
    public var inUse: Int { used.withLockedValue { $0 } }

    /// Reserves `bytes` if they fit; false (and nothing reserved) otherwise.
    public func tryReserve(_ bytes: Int) -> Bool {
        guard bytes > 0 else { return true }
        return used.withLockedValue { u in
            guard u + bytes <= limit else { return false }
            u += bytes
            return true
        }
    }

    /// Returns a reservation.
    public func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        used.withLockedValue { $0 = max(0, $0 - bytes) }
    }
}

/// What the delegate knows about one connection.
public struct SMTPSessionInfo: Sendable {
    /// Unique per process (16 hex digits), for logs.
    public var id: String
    public var remoteAddress: SocketAddress?
    public var localAddress: SocketAddress?
    /// The last HELO/EHLO argument, nil before it.
    public var heloName: String?
    /// Whether the connection is TLS protected (after STARTTLS or on an implicit-TLS port).
    public var tls: Bool
    /// The negotiated TLS version (`TLSv1.3`), once known.
    public var tlsVersion: String?
    /// The SASL username after a successful AUTH.
    public var authenticatedAs: String?

    public init(id: String, remoteAddress: SocketAddress?, localAddress: SocketAddress?, heloName: String?, tls: Bool,
                tlsVersion: String? = nil, authenticatedAs: String? = nil) {
        self.id = id
        self.remoteAddress = remoteAddress
        self.localAddress = localAddress
        self.heloName = heloName
        self.tls = tls
        self.tlsVersion = tlsVersion
        self.authenticatedAs = authenticatedAs
    }
}

/// Policy and storage decisions of the server. Called from Swift concurrency (not on the
/// event loop); calls for one connection never overlap and come in protocol order.
public protocol SMTPServerDelegate: Sendable {
    /// nil → normal 220 greeting; a 4xx/5xx reply is sent and the connection closed.
    func connectionOpened(_ session: SMTPSessionInfo) async -> SMTPReply?
    /// nil → 250 2.1.0; a non-2xx reply refuses the sender.
    func mailFrom(_ session: SMTPSessionInfo, reversePath: String, parameters: [String: String]) async -> SMTPReply?
    /// nil → 250 2.1.5; a non-2xx reply refuses the recipient.
    func rcptTo(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, forwardPath: String, parameters: [String: String]) async -> SMTPReply?
    /// `message` is the unstuffed message with CRLF line ends. The reply answers the final
    /// dot; answer 250 only once the message is durable.
    func dataReceived(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, message: ByteBuffer) async -> SMTPReply
    /// Called once per connection after it closed (also after aborted transactions).
    func connectionClosed(_ session: SMTPSessionInfo) async
    /// Checks SASL credentials: nil → 235 2.7.0; otherwise the reply to send (535 5.7.8 for wrong
    /// credentials, 454 4.7.0 when temporarily unable to check).
    func authenticate(_ session: SMTPSessionInfo, username: String, password: String) async -> SMTPReply?
    /// A refusal made by the protocol layer itself, for events and metrics. Not awaited by the session.
    func commandRefused(_ session: SMTPSessionInfo, reason: String, reply: SMTPReply) async
    /// The same refusal, reported synchronously on the session's event loop: must not block.
    /// The session calls this one. The default starts one task per refusal that calls
    /// `commandRefused`; a delegate that records refusals should implement this with a bounded
    /// buffer instead, so that a client pipelining thousands of refused commands cannot
    /// create thousands of tasks.
    func protocolRefusal(_ session: SMTPSessionInfo, reason: String, reply: SMTPReply)
}

extension SMTPServerDelegate {
    /// Refusals the protocol layer made itself (relay without AUTH, AUTH before TLS, size and
    /// recipient limits); by default they are not recorded anywhere.
    public func commandRefused(_ session: SMTPSessionInfo, reason: String, reply: SMTPReply) async {}

    public func protocolRefusal(_ session: SMTPSessionInfo, reason: String, reply: SMTPReply) {
        Task { await self.commandRefused(session, reason: reason, reply: reply) }
    }

    /// Without an implementation every login fails.
    public func authenticate(_ session: SMTPSessionInfo, username: String, password: String) async -> SMTPReply? {
        SMTPReply(.authFailed)
    }
}
