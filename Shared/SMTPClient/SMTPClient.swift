@_exported public import SMTPProtocol
public import NIOCore
import NIOPosix
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

/// SMTP client: delivers one message over one connection.
public enum SMTPClient {
    /// Delivers `message` to `recipients` via `host:port`. Never throws: every recipient gets
    /// a result. EHLO (HELO on 5xx), [STARTTLS seam], MAIL FROM (with SIZE if advertised,
    /// BODY=8BITMIME if advertised and the message has 8-bit octets), RCPT each, DATA with
    /// CRLF normalisation and dot-stuffing, QUIT.
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
        var logger = logger
        logger[metadataKey: "smtp.peer"] = "\(host):\(port)"
        let connection: SMTPClientConnection
        do {
            connection = try await SMTPClientConnection.connect(host: host, port: port, configuration: configuration,
                                                                group: group)
        } catch {
            logger.info("smtp connect failed", metadata: ["error": "\(error)"])
            let reply = SMTPReply.connectionFailed(host: host, port: port)
            return DeliveryResult(recipients: recipients.map { RecipientResult(recipient: $0, reply: reply) },
                                  sessionFailure: reply)
        }
        var session = DeliverySession(connection: connection, configuration: configuration, logger: logger,
                                      recipients: recipients, beforeData: beforeData)
        await session.run(reversePath: reversePath, message: message)
        await connection.close()
        return session.result
    }

    /// Converts bare LF and bare CR to CRLF, dot-stuffs, ensures a final CRLF and appends
    /// the `.CRLF` terminator.
    public static func encodeData(_ message: ByteBuffer) -> ByteBuffer {
        let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), dot = UInt8(ascii: ".")
        var out = ByteBuffer()
        out.reserveCapacity(message.readableBytes + message.readableBytes / 50 + 8)
        var atLineStart = true
        var pendingCR = false
        for byte in message.readableBytesView {
            if pendingCR {
                pendingCR = false
                out.writeBytes([cr, lf])
                atLineStart = true
                if byte == lf { continue }
            }
            if byte == cr {
                pendingCR = true
                continue
            }
            if byte == lf {
                out.writeBytes([cr, lf])
                atLineStart = true
                continue
            }
            if atLineStart, byte == dot { out.writeInteger(dot) }
            out.writeInteger(byte)
            atLineStart = false
        }
        if pendingCR {
            out.writeBytes([cr, lf])
            atLineStart = true
        }
        if !atLineStart { out.writeBytes([cr, lf]) }
        out.writeString(".\r\n")
        return out
    }
}

/// One delivery's dialogue; owns the per-recipient results as they are decided.
struct DeliverySession {
    let connection: SMTPClientConnection
    let configuration: SMTPClientConfiguration
    let logger: Logger
    let recipientList: [String]
    var results: [SMTPReply?]
    var sessionFailure: SMTPReply?
    var extensions: [String] = []
    let beforeData: (@Sendable () async -> Bool)?
    var abandoned = false

    init(connection: SMTPClientConnection, configuration: SMTPClientConfiguration, logger: Logger, recipients: [String],
         beforeData: (@Sendable () async -> Bool)? = nil) {
        self.beforeData = beforeData
        self.connection = connection
        self.configuration = configuration
        self.logger = logger
        self.recipientList = recipients
        self.results = Array(repeating: nil, count: recipients.count)
    }

    var result: DeliveryResult {
        let fallback = sessionFailure ?? SMTPReply(.deliveryIncomplete)
        var result = DeliveryResult(
            recipients: zip(recipientList, results).map { RecipientResult(recipient: $0, reply: $1 ?? fallback) },
            sessionFailure: sessionFailure, extensions: extensions)
        result.abandonedBeforeData = abandoned
        return result
    }

    /// Decides every open recipient with `reply` and records it as the session failure.
    mutating func failAll(_ reply: SMTPReply) {
        sessionFailure = reply
        for index in results.indices where results[index] == nil { results[index] = reply }
    }

    static func lostReply(_ error: any Error, during stage: String) -> SMTPReply {
        if let error = error as? SMTPClientError, error.code == SMTPClientError.timeout {
            return .replyTimeout(during: stage)
        }
        return .connectionLost(during: stage)
    }

    mutating func run(reversePath: String, message: ByteBuffer) async {
        var stage = "greeting"
        do {
            // Greeting.
            let greeting = try await connection.readReply(timeout: configuration.greetingTimeout)
            guard greeting.isPositiveCompletion else {
                failAll(greeting)
                await quit()
                return
            }
            // EHLO, HELO fallback on 5xx.
            stage = "EHLO"
            let ehlo = try await connection.command("EHLO \(configuration.heloName)", timeout: configuration.commandTimeout)
            if ehlo.isPositiveCompletion {
                extensions = ehlo.lines.dropFirst().map { $0.uppercased() }
            } else if ehlo.isPermanent {
                stage = "HELO"
                let helo = try await connection.command("HELO \(configuration.heloName)", timeout: configuration.commandTimeout)
                guard helo.isPositiveCompletion else { failAll(helo); await quit(); return }
            } else {
                failAll(ehlo); await quit(); return
            }
            // STARTTLS seam: a later issue inserts the TLS policy here (opportunistic / DANE /
            // MTA-STS): send STARTTLS if advertised or required, add NIOSSLClientHandler in front
            // of SMTPClientHandler, then EHLO again and replace `extensions`.

            // MAIL FROM.
            stage = "MAIL FROM"
            var mail = "MAIL FROM:<\(reversePath)>"
            if extensions.contains(where: { $0 == "SIZE" || $0.hasPrefix("SIZE ") }) {
                mail += " SIZE=\(message.readableBytes)"
            }
            if extensions.contains("8BITMIME"), message.readableBytesView.contains(where: { $0 >= 0x80 }) {
                mail += " BODY=8BITMIME"
            }
            if extensions.contains("SMTPUTF8"),
               !SMTPPath.isASCII(reversePath) || recipientList.contains(where: { !SMTPPath.isASCII($0) }) {
                mail += " SMTPUTF8"
            }
            let mailReply = try await connection.command(mail, timeout: configuration.commandTimeout)
            guard mailReply.isPositiveCompletion else { failAll(mailReply); await quit(); return }
            // RCPT each.
            stage = "RCPT TO"
            var accepted: [Int] = []
            for (index, recipient) in recipientList.enumerated() {
                let reply = try await connection.command("RCPT TO:<\(recipient)>", timeout: configuration.commandTimeout)
                if reply.isPositiveCompletion {
                    accepted.append(index)
                } else {
                    results[index] = reply
                }
            }
            guard !accepted.isEmpty else { await quit(); return }
            // The caller's last word before the side effect (egress: is the lease still ours?).
            if let beforeData, !(await beforeData()) {
                abandoned = true
                failAll(SMTPReply(.deliveryHandedOff))
                await quit()
                return
            }
            // DATA.
            stage = "DATA"
            let dataReply = try await connection.command("DATA", timeout: configuration.commandTimeout)
            guard dataReply.isPositiveIntermediate else { failAll(dataReply); await quit(); return }
            stage = "end of data"
            let final = try await connection.send(SMTPClient.encodeData(message), timeout: configuration.dataTimeout)
            for index in accepted { results[index] = final }
            logger.debug("smtp data reply", metadata: ["reply": "\(final)"])
            await quit()
        } catch {
            logger.info("smtp session failed", metadata: ["stage": "\(stage)", "error": "\(error)"])
            failAll(DeliverySession.lostReply(error, during: stage))
        }
    }

    func quit() async {
        _ = try? await connection.command("QUIT", timeout: .seconds(10))
    }
}
