/// Internal status of an SMTP exchange; `reply` maps it to the one reply the client sees.
///
/// Postfix style (`cleanup_strerror.c`): this file is the single table from internal
/// status to SMTP reply. Clients see generic text; details belong in logs.
/// An extensible struct rather than a frozen enum: later issues add statuses.
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
