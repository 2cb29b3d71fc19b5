import Foundation

/// Internal status of an SMTP exchange; `reply` maps it to the one reply the client sees.
///
/// Postfix style (`cleanup_strerror.c`): this file is the single table from internal
/// status to SMTP reply. Clients see generic text; details belong in logs.
/// An extensible struct rather than a frozen enum: later issues add statuses.
///
/// Replies whose text carries a parameter (a host, a queue id, a signature) are the functions
/// in the `SMTPReply` extension below, the rest of the same table. Every reply the gateway makes
/// up (the SMTP server's, ingress's policy refusals, the SMTP client's synthetic replies, the
/// replies the stages record for recipients) is named here and nowhere else.
public struct SMTPStatus: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    // Positive
    public static let ok = SMTPStatus("ok")
    public static let mailAccepted = SMTPStatus("mail-accepted")
    public static let recipientAccepted = SMTPStatus("recipient-accepted")
    public static let startMailInput = SMTPStatus("start-mail-input")
    public static let messageQueued = SMTPStatus("message-queued")
    public static let closing = SMTPStatus("closing")
    public static let cannotVerify = SMTPStatus("cannot-verify")
    public static let help = SMTPStatus("help")
    // Protocol errors (count towards maxErrors)
    public static let syntaxError = SMTPStatus("syntax-error")
    public static let lineTooLong = SMTPStatus("line-too-long")
    public static let bareLineFeed = SMTPStatus("bare-line-feed")
    public static let invalidCharacter = SMTPStatus("invalid-character")
    public static let parameterSyntax = SMTPStatus("parameter-syntax")
    public static let senderSyntax = SMTPStatus("sender-syntax")
    public static let recipientSyntax = SMTPStatus("recipient-syntax")
    public static let parameterNotImplemented = SMTPStatus("parameter-not-implemented")
    public static let needHelo = SMTPStatus("need-helo")
    public static let needMail = SMTPStatus("need-mail")
    public static let needRecipient = SMTPStatus("need-recipient")
    public static let nestedMail = SMTPStatus("nested-mail")
    public static let badSequence = SMTPStatus("bad-sequence")
    /// A BDAT line that does not parse: its chunk cannot be skipped, so the session is closed.
    public static let bdatSyntax = SMTPStatus("bdat-syntax")
    public static let utf8NotDeclared = SMTPStatus("utf8-not-declared")
    // Transaction outcomes
    public static let messageTooBig = SMTPStatus("message-too-big")
    public static let bareLineEndingInData = SMTPStatus("bare-line-ending-in-data")
    public static let tooManyRecipients = SMTPStatus("too-many-recipients")
    public static let storageFailure = SMTPStatus("storage-failure")
    /// Backpressure: too much mail waiting in the pipeline, or the store near its memory limit.
    public static let systemBusy = SMTPStatus("system-busy")
    /// The process's budget for DATA buffered in memory (all sessions together) is used up.
    public static let insufficientStorage = SMTPStatus("insufficient-storage")
    // TLS and authentication (RFC 3207, RFC 4954)
    public static let readyToStartTLS = SMTPStatus("ready-to-start-tls")
    public static let tlsNotAvailable = SMTPStatus("tls-not-available")
    public static let tlsAlreadyActive = SMTPStatus("tls-already-active")
    public static let authSucceeded = SMTPStatus("auth-succeeded")
    public static let authFailed = SMTPStatus("auth-failed")
    public static let authCancelled = SMTPStatus("auth-cancelled")
    public static let authBadResponse = SMTPStatus("auth-bad-response")
    public static let authMechanismUnknown = SMTPStatus("auth-mechanism-unknown")
    public static let authNeedsEncryption = SMTPStatus("auth-needs-encryption")
    public static let authAlreadyDone = SMTPStatus("auth-already-done")
    public static let authRequired = SMTPStatus("auth-required")
    public static let authTemporaryFailure = SMTPStatus("auth-temporary-failure")
    public static let authNotAvailable = SMTPStatus("auth-not-available")
    public static let tooManyCommands = SMTPStatus("too-many-commands")
    // Connection level (421 and close)
    public static let timeout = SMTPStatus("timeout")
    public static let tooManyErrors = SMTPStatus("too-many-errors")
    public static let shuttingDown = SMTPStatus("shutting-down")
    // Gateway policy (ingress): connection, AUTH and transaction refusals
    public static let accessDenied = SMTPStatus("access-denied")
    public static let tooManyConnections = SMTPStatus("too-many-connections")
    public static let tooManyConnectionsFromHost = SMTPStatus("too-many-connections-from-host")
    public static let tooManyFailedLogins = SMTPStatus("too-many-failed-logins")
    public static let senderDomainUnresolvable = SMTPStatus("sender-domain-unresolvable")
    public static let senderDomainTemporary = SMTPStatus("sender-domain-temporary")
    public static let rateLimited = SMTPStatus("rate-limited")
    public static let accountBraked = SMTPStatus("account-braked")
    public static let networkNotAllowed = SMTPStatus("network-not-allowed")
    public static let senderNotOwned = SMTPStatus("sender-not-owned")
    public static let tlsRequired = SMTPStatus("tls-required")
    public static let reverseDNSFailed = SMTPStatus("reverse-dns-failed")
    public static let reverseDNSTemporary = SMTPStatus("reverse-dns-temporary")
    public static let temporaryFailure = SMTPStatus("temporary-failure")
    public static let fromNotOwned = SMTPStatus("from-not-owned")
    public static let tooManyHops = SMTPStatus("too-many-hops")
    public static let addressHeaderMalformed = SMTPStatus("address-header-malformed")
    public static let messageStoreFailed = SMTPStatus("message-store-failed")
    // Delivery (SMTP client and egress): replies made up when the peer gave none
    public static let deliveryIncomplete = SMTPStatus("delivery-incomplete")
    public static let deliveryHandedOff = SMTPStatus("delivery-handed-off")
    public static let noResultForRecipient = SMTPStatus("no-result-for-recipient")

    /// The table. `hostname` is only used by the 421 replies (RFC 5321 §4.2: 421 names the host).
    public static let table: [SMTPStatus: (code: Int, enhanced: String?, text: String)] = [
        .ok: (250, "2.0.0", "Ok"),
        .mailAccepted: (250, "2.1.0", "Ok"),
        .recipientAccepted: (250, "2.1.5", "Ok"),
        .startMailInput: (354, nil, "End data with <CR><LF>.<CR><LF>"),
        .messageQueued: (250, "2.0.0", "Ok: queued"),
        .closing: (221, "2.0.0", "Bye"),
        .cannotVerify: (252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery"),
        .help: (214, "2.0.0", "See https://www.rfc-editor.org/rfc/rfc5321"),
        .syntaxError: (500, "5.5.2", "Error: command not recognized"),
        .lineTooLong: (500, "5.5.2", "Error: line too long"),
        .bareLineFeed: (500, "5.5.2", "Error: bare <LF> received"),
        .invalidCharacter: (500, "5.5.2", "Error: invalid character in command"),
        .parameterSyntax: (501, "5.5.4", "Syntax error in parameters or arguments"),
        .senderSyntax: (501, "5.1.7", "Bad sender address syntax"),
        .recipientSyntax: (501, "5.1.3", "Bad recipient address syntax"),
        .parameterNotImplemented: (555, "5.5.4", "Unsupported option"),
        .needHelo: (503, "5.5.1", "Error: send HELO/EHLO first"),
        .needMail: (503, "5.5.1", "Error: need MAIL command"),
        .needRecipient: (503, "5.5.1", "Error: need RCPT command"),
        .nestedMail: (503, "5.5.1", "Error: nested MAIL command"),
        .badSequence: (503, "5.5.1", "Error: bad sequence of commands"),
        .bdatSyntax: (501, "5.5.4", "Syntax: BDAT <size> [LAST]; closing, the chunk cannot be skipped"),
        .utf8NotDeclared: (553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8"),
        .messageTooBig: (552, "5.3.4", "Error: message file too big"),
        .bareLineEndingInData: (554, "5.5.2", "Error: bare <CR> or <LF> in message data"),
        .tooManyRecipients: (452, "4.5.3", "Error: too many recipients"),
        .storageFailure: (451, "4.3.0", "Error: queue file write error"),
        .systemBusy: (451, "4.3.2", "System busy, try again later"),
        .insufficientStorage: (452, "4.3.1", "Insufficient system storage, try again later"),
        .readyToStartTLS: (220, "2.0.0", "Ready to start TLS"),
        .tlsNotAvailable: (454, "4.7.0", "TLS not available"),
        .tlsAlreadyActive: (503, "5.5.1", "Error: TLS already active"),
        .authSucceeded: (235, "2.7.0", "Authentication successful"),
        .authFailed: (535, "5.7.8", "Error: authentication failed"),
        .authCancelled: (501, "5.0.0", "Authentication cancelled"),
        .authBadResponse: (501, "5.5.2", "Error: invalid authentication response"),
        .authMechanismUnknown: (504, "5.5.4", "Error: unsupported authentication mechanism"),
        .authNeedsEncryption: (538, "5.7.11", "Encryption required for requested authentication mechanism"),
        .authAlreadyDone: (503, "5.5.1", "Error: already authenticated"),
        .authRequired: (530, "5.7.0", "Authentication required"),
        .authTemporaryFailure: (454, "4.7.0", "Temporary authentication failure"),
        .authNotAvailable: (502, "5.5.1", "Error: authentication not enabled"),
        .tooManyCommands: (421, "4.7.0", "Error: too many commands"),
        .timeout: (421, "4.4.2", "Error: timeout exceeded"),
        .tooManyErrors: (421, "4.7.0", "Error: too many errors"),
        .shuttingDown: (421, "4.3.2", "Service shutting down, closing transmission channel"),
        .accessDenied: (554, "5.7.1", "Access denied"),
        .tooManyConnections: (421, "4.7.0", "Too many connections, try again later"),
        .tooManyConnectionsFromHost: (421, "4.7.0", "Too many connections from your host"),
        .tooManyFailedLogins: (454, "4.7.0", "Too many failed logins, try again later"),
        .senderDomainUnresolvable: (550, "5.7.1", "Sender Domain must resolve"),
        .senderDomainTemporary: (451, "4.4.3", "Temporary DNS failure checking the sender domain"),
        .rateLimited: (451, "4.7.1", "Ratelimit reached"),
        .accountBraked: (451, "4.7.1", "Sending from this account is paused after unusual activity; contact your provider's support"),
        .networkNotAllowed: (550, "5.7.1", "Client host not allowed for this account"),
        .senderNotOwned: (553, "5.7.1", "Sender address not owned by your account"),
        .tlsRequired: (530, "5.7.0", "Must issue a STARTTLS command first"),
        .reverseDNSFailed: (550, "5.7.25", "Reverse DNS validation failed for your IP address"),
        .reverseDNSTemporary: (451, "4.7.25", "Temporary DNS failure checking reverse DNS"),
        .temporaryFailure: (451, "4.3.0", "Temporary failure, try again later"),
        .fromNotOwned: (550, "5.7.1", "From header missing or not owned by your account"),
        .tooManyHops: (554, "5.4.6", "Too many hops (Received headers): mail loop"),
        .addressHeaderMalformed: (550, "5.6.0", "Malformed From or Sender header"),
        .messageStoreFailed: (451, "4.3.0", "Temporary failure storing the message, try again later"),
        .deliveryIncomplete: (451, "4.4.2", "Delivery incomplete"),
        .deliveryHandedOff: (451, "4.3.0", "Not sent: delivery handed to another process"),
        .noResultForRecipient: (451, "4.3.0", "No result for this recipient"),
    ]

    /// Statuses whose replies count as protocol errors (towards `maxErrors`).
    public var isProtocolError: Bool {
        switch self {
        case .syntaxError, .lineTooLong, .bareLineFeed, .invalidCharacter, .parameterSyntax,
             .senderSyntax, .recipientSyntax, .parameterNotImplemented, .needHelo, .needMail,
             .needRecipient, .nestedMail, .badSequence, .utf8NotDeclared, .tlsAlreadyActive, .authBadResponse,
             .authMechanismUnknown, .authAlreadyDone, .authNotAvailable:
            return true
        default:
            return false
        }
    }

    /// The reply for this status. Unknown statuses map to 451 4.3.0 (unknown = temporary).
    public func reply(hostname: String? = nil) -> SMTPReply {
        guard let entry = SMTPStatus.table[self] else {
            return SMTPReply(code: 451, enhanced: "4.3.0", "Error: internal error")
        }
        if entry.code == 421, let hostname {
            return SMTPReply(code: entry.code, enhanced: entry.enhanced, "\(hostname) \(entry.text)")
        }
        return SMTPReply(code: entry.code, enhanced: entry.enhanced, entry.text)
    }
}

extension SMTPReply {
    /// The table reply for `status`.
    public init(_ status: SMTPStatus, hostname: String? = nil) {
        self = status.reply(hostname: hostname)
    }
}

/// The parameterised rows of the table: replies whose text names a host, an id or a finding.
extension SMTPReply {
    /// 220: the greeting, `<hostname> <text>` (RFC 5321 §4.2: the greeting names the host).
    public static func greeting(hostname: String, text: String) -> SMTPReply {
        SMTPReply(code: 220, "\(hostname) \(text)")
    }
    /// 250 to EHLO: the hostname, then one line per extension.
    public static func ehlo(hostname: String, extensions: [String]) -> SMTPReply {
        SMTPReply(code: 250, lines: [hostname] + extensions)
    }
    /// 250 to HELO: the hostname alone.
    public static func helo(hostname: String) -> SMTPReply { SMTPReply(code: 250, hostname) }
    /// 334: a SASL challenge, base64 (empty for PLAIN without an initial response).
    public static func authChallenge(_ base64: String) -> SMTPReply { SMTPReply(code: 334, lines: [base64]) }
    /// 250 to the final dot: the message is stored under `id`.
    public static func queued(as id: String) -> SMTPReply {
        SMTPReply(code: 250, enhanced: "2.0.0", "Ok: queued as \(id)")
    }

    /// 421 4.4.1 (synthetic, SMTP client): no connection to the next hop.
    public static func connectionFailed(host: String, port: Int) -> SMTPReply {
        SMTPReply(code: 421, enhanced: "4.4.1", "Connection to \(host):\(port) failed")
    }
    /// 451 4.4.2 (synthetic, SMTP client): the peer did not answer `stage` in time.
    public static func replyTimeout(during stage: String) -> SMTPReply {
        SMTPReply(code: 451, enhanced: "4.4.2", "Timeout waiting for reply to \(stage)")
    }
    /// 451 4.4.2 (synthetic, SMTP client): the connection broke during `stage`.
    public static func connectionLost(during stage: String) -> SMTPReply {
        SMTPReply(code: 451, enhanced: "4.4.2", "Connection lost during \(stage)")
    }
    /// 451 4.4.4 (egress): no next hop for the recipient's domain.
    public static func noRoute(to domain: String) -> SMTPReply {
        SMTPReply(code: 451, enhanced: "4.4.4", "No route to \(domain) (no static route; MX routing not configured)")
    }
    /// 554 5.7.1 (scanner): the first finding of the virus scan.
    public static func virusFound(signature: String, part: String, engine: String) -> SMTPReply {
        SMTPReply(code: 554, enhanced: "5.7.1", "Message rejected: virus \(signature) found in \(part) (engine \(engine))")
    }
    /// 554 5.4.7 (stage runner): a stage kept failing past the maximum age; `reason` is clipped
    /// to 200 characters and the text kept on one line.
    public static func expired(stage: String, hours: Int, reason: String) -> SMTPReply {
        let clipped = reason.count > 200 ? String(reason.prefix(200)) + "…" : reason
        let text = "Delivery time expired: the \(stage) stage kept failing for \(hours) h (\(clipped))"
            .replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        return SMTPReply(code: 554, enhanced: "5.4.7", text)
    }
}
