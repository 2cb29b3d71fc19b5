@_exported public import SMTPProtocol
public import NIOCore
public import Logging

/// Settings of outbound SMTP sessions.
public struct SMTPClientConfiguration: Sendable {
    /// Name sent in EHLO/HELO (R17: per egress).
    public var heloName: String
    public var connectTimeout: TimeAmount
    /// RFC 5321 §4.5.3.2: 5 minutes for the greeting, MAIL, RCPT; 2 min DATA; 10 min final dot.
    public var greetingTimeout: TimeAmount
    public var commandTimeout: TimeAmount
    /// Timeout for the reply to the final dot (and the 354).
    public var dataTimeout: TimeAmount
    /// Local address to bind before connecting (separate egress IPs), e.g. "127.0.0.2".
    public var sourceAddress: String?
    /// Longest reply line accepted (RFC 5321: 512); longer → session failure. Default 4096.
    public var maxReplyLineLength: Int

    public init(heloName: String, connectTimeout: TimeAmount = .seconds(30), greetingTimeout: TimeAmount = .seconds(300),
                commandTimeout: TimeAmount = .seconds(300), dataTimeout: TimeAmount = .seconds(600),
                sourceAddress: String? = nil, maxReplyLineLength: Int = 4096) {
        self.heloName = heloName
        self.connectTimeout = connectTimeout
        self.greetingTimeout = greetingTimeout
        self.commandTimeout = commandTimeout
        self.dataTimeout = dataTimeout
        self.sourceAddress = sourceAddress
        self.maxReplyLineLength = maxReplyLineLength
    }
}

/// Outcome for one recipient: its RCPT reply if refused, else the reply to the final dot
/// (or the session-level reply that decided it).
public struct RecipientResult: Sendable, Hashable {
    public var recipient: String
    public var reply: SMTPReply
    public init(recipient: String, reply: SMTPReply) {
        self.recipient = recipient
        self.reply = reply
    }
    public var isDelivered: Bool { reply.isPositiveCompletion }
    /// Only an explicit 5xx is permanent; everything else not delivered is retried.
    public var isPermanentFailure: Bool { reply.isPermanent }
    public var isTransientFailure: Bool { !isDelivered && !isPermanentFailure }
}

/// The result of one delivery attempt. Every recipient has exactly one result, in the
/// order given.
public struct DeliveryResult: Sendable {
    public var recipients: [RecipientResult]
    /// Set when a session-level event decided all still-open recipients: connect failure or
    /// timeout (synthetic 421 4.4.1), greeting/EHLO/MAIL/DATA refusal, lost connection or
    /// timeout mid-session (synthetic 451 4.4.2).
    public var sessionFailure: SMTPReply?
    /// The extensions the server advertised (upper-cased keywords with arguments).
    public var extensions: [String]
    /// True when the caller's `beforeData` check said no: the session ended before DATA and
    /// nothing was sent; the recipients' replies say so but are not the remote's.
    public var abandonedBeforeData = false

    public init(recipients: [RecipientResult], sessionFailure: SMTPReply?, extensions: [String] = []) {
        self.recipients = recipients
        self.sessionFailure = sessionFailure
        self.extensions = extensions
    }

    public var delivered: [String] { recipients.filter(\.isDelivered).map(\.recipient) }
}

/// Error of the client's connection layer (never escapes `deliver`; mapped to replies).
public struct SMTPClientError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: String
    public var detail: String
    public init(code: String, detail: String) {
        self.code = code
        self.detail = detail
    }
    public var description: String { "\(code): \(detail)" }

    public static let connectFailed = "connect-failed"
    public static let timeout = "timeout"
    public static let connectionClosed = "connection-closed"
    public static let protocolViolation = "protocol-violation"
}

/// SMTP client: delivers one message over one new connection (plaintext). Egress uses
/// `SMTPSession` directly (connection reuse, TLS); this is the simple form for tools and tests.
public enum SMTPClient {
    /// Delivers `message` to `recipients` via `host:port`. Never throws: every recipient gets
    /// a result. EHLO (HELO on 5xx), MAIL FROM (SIZE, BODY=8BITMIME, SMTPUTF8 as needed and
    /// advertised), RCPT each (pipelined when offered), DATA with CRLF normalisation and
    /// dot-stuffing, QUIT.
    public static func deliver(
        to host: String,
        port: Int,
        reversePath: String,
        recipients: [String],
        message: ByteBuffer,
        configuration: SMTPClientConfiguration,
        group: any EventLoopGroup,
        logger: Logger,
        beforeData: (@Sendable () async -> Bool)? = nil
    ) async -> DeliveryResult {
        var timeouts = SMTPClientStateMachine.Timeouts()
        timeouts.greeting = configuration.greetingTimeout
        timeouts.command = configuration.commandTimeout
        timeouts.mail = configuration.commandTimeout
        timeouts.rcpt = configuration.commandTimeout
        timeouts.dataInitiation = configuration.commandTimeout
        timeouts.dataTermination = configuration.dataTimeout
        let opened = await SMTPSession.open(
            target: SMTPTarget(hostname: nil, address: host, port: port), sourceAddress: configuration.sourceAddress,
            heloName: configuration.heloName, tlsMode: .never, trust: nil, timeouts: timeouts,
            connectTimeout: configuration.connectTimeout, maxReplyLineLength: configuration.maxReplyLineLength,
            group: group, logger: logger)
        switch opened {
        case .failure(let failure):
            return DeliveryResult(recipients: recipients.map { RecipientResult(recipient: $0, reply: failure.reply) },
                                  sessionFailure: failure.reply)
        case .success(var session):
            let sent = await session.send(reversePath: reversePath, recipients: recipients, message: message,
                                          beforeData: beforeData)
            await session.close()
            var result = DeliveryResult(
                recipients: zip(recipients, sent.replies).map { RecipientResult(recipient: $0, reply: $1) },
                sessionFailure: sent.sessionFailure ?? (sent.abandoned ? SMTPReply(.deliveryHandedOff) : nil),
                extensions: session.extensions.keywords.sorted())
            result.abandonedBeforeData = sent.abandoned
            return result
        }
    }

    /// Converts bare LF and bare CR to CRLF, dot-stuffs, ensures a final CRLF and appends
    /// the `.CRLF` terminator.
    public static func encodeData(_ message: ByteBuffer) -> ByteBuffer {
        let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), dot = UInt8(ascii: ".")
        var out = ByteBuffer()
        out.reserveCapacity(message.readableBytes + message.readableBytes / 50 + 8)
        var atLineStart = true
        message.withUnsafeReadableBytes { bytes in
            // Ordinary bytes are copied in runs; only line ends and leading dots are looked at.
            var run = 0
            var i = 0
            let n = bytes.count
            func flush(_ upTo: Int) {
                if upTo > run { out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[run..<upTo])) }
            }
            while i < n {
                let byte = bytes[i]
                if byte == cr || byte == lf {
                    flush(i)
                    out.writeStaticString("\r\n")
                    atLineStart = true
                    // CRLF, bare CR and bare LF each end one line.
                    i += (byte == cr && i + 1 < n && bytes[i + 1] == lf) ? 2 : 1
                    run = i
                    continue
                }
                if atLineStart {
                    atLineStart = false
                    if byte == dot {
                        flush(i)
                        out.writeInteger(dot)
                        run = i
                    }
                }
                i += 1
            }
            flush(n)
        }
        if !atLineStart { out.writeStaticString("\r\n") }
        out.writeString(".\r\n")
        return out
    }
}
