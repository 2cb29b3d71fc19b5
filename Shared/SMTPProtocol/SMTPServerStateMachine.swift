public import NIOCore
import Foundation

/// The envelope of one mail transaction.
public struct SMTPEnvelope: Sendable, Hashable {
    /// The reverse path without brackets; `""` for the null path `<>`.
    public var reversePath: String
    /// MAIL FROM parameters, keywords upper-cased (`SIZE`, `BODY`, `SMTPUTF8`, `RET`, `ENVID`).
    public var mailParameters: [String: String]
    /// Accepted forward paths, in order.
    public var recipients: [String]
    /// Each accepted recipient's RCPT parameters (`NOTIFY`, `ORCPT`, RFC 3461), values as sent;
    /// a recipient given twice keeps the parameters of its first RCPT.
    public var recipientParameters: [String: [String: String]] = [:]
    /// Bare LFs in the message data that were stored as CRLF (`SMTPDataDecoder` in normalize
    /// mode); the receiver of the message decides whether to accept such a message.
    public var bareLineFeeds = 0

    public init(reversePath: String, mailParameters: [String: String] = [:], recipients: [String] = []) {
        self.reversePath = reversePath
        self.mailParameters = mailParameters
        self.recipients = recipients
    }
}

/// The server side of an SMTP conversation as a pure state machine: feed it `Input`s, carry
/// out the `Action`s it returns in order. It does no I/O and never waits; decisions that
/// need policy (MAIL, RCPT, the message itself, the greeting) are returned as `ask…`
/// actions, and the answer comes back as the matching `…Decision` input. While a decision
/// is outstanding (`isAwaitingDecision`) the caller must not feed commands or data; it
/// buffers them and feeds them afterwards, in order (RFC 2920 pipelining).
///
/// Owns only the envelope of the current transaction (bounded by `maxRecipients` paths of at
/// most 256 octets). A value type; not shared between threads.
///
/// Error accounting: each reply with a protocol-error status (`SMTPStatus.isProtocolError`)
/// counts; when the count reaches `maxErrors` the machine also sends 421 4.7.0 and closes.
/// Policy refusals from the delegate do not count.
public struct SMTPServerStateMachine: Sendable {
    public struct Configuration: Sendable, Hashable {
        public var hostname: String
        public var greetingText: String
        public var maxMessageSize: Int
        public var maxRecipients: Int
        public var maxErrors: Int
        /// Advertise and accept SMTPUTF8 (RFC 6531).
        public var smtpUTF8: Bool
        /// STARTTLS can be offered (the I/O layer has a TLS context).
        public var tlsAvailable: Bool
        /// SASL mechanisms offered (`PLAIN`, `LOGIN`); empty = no AUTH.
        public var authMechanisms: [String]
        /// Offer AUTH without TLS (only when an operator explicitly allows it; R1).
        public var allowPlaintextAuth: Bool
        /// MAIL is refused with 530 5.7.0 until the client has authenticated (no open relay).
        public var requireAuth: Bool
        /// Commands per connection before 421 4.7.0 and close.
        public var maxCommands: Int
        /// Advertise and accept DSN (RFC 3461): RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT.
        public var dsn: Bool

        public init(hostname: String, greetingText: String = "ESMTP", maxMessageSize: Int = 25 * 1024 * 1024,
                    maxRecipients: Int = 100, maxErrors: Int = 20, smtpUTF8: Bool = true, tlsAvailable: Bool = false,
                    authMechanisms: [String] = [], allowPlaintextAuth: Bool = false, requireAuth: Bool = false,
                    maxCommands: Int = 10_000, dsn: Bool = true) {
            self.hostname = hostname
            self.greetingText = greetingText
            self.maxMessageSize = maxMessageSize
            self.maxRecipients = maxRecipients
            self.maxErrors = maxErrors
            self.smtpUTF8 = smtpUTF8
            self.tlsAvailable = tlsAvailable
            self.authMechanisms = authMechanisms
            self.allowPlaintextAuth = allowPlaintextAuth
            self.requireAuth = requireAuth
            self.maxCommands = maxCommands
            self.dsn = dsn
        }
    }

    public enum State: Sendable, Hashable {
        /// Greeting sent (or being decided); no HELO/EHLO yet.
        case greeting
        case afterHelo
        case inMail
        case inRcpt
        case inData
        case quit
    }

    public enum Input: Sendable, Hashable {
        /// The delegate's answer to `askConnection`: nil = normal greeting.
        case connectionDecision(SMTPReply?)
        case line(SMTPLineEvent)
        case command(SMTPCommand)
        case invalidCommand(SMTPCommandError)
        case dataComplete(SMTPDataOutcome)
        case mailDecision(SMTPReply?)
        case rcptDecision(SMTPReply?)
        case dataDecision(SMTPReply)
        case timeout
        /// The server is shutting down: close as soon as no transaction is open.
        case shutdown
        /// The I/O layer installed TLS after `startTLS`: the session starts over (RFC 3207 §4.2).
        case tlsStarted
        /// The delegate's answer to `askAuth`: nil = credentials accepted.
        case authDecision(SMTPReply?)
        /// The I/O layer cannot take this message (e.g. its memory budget is used up): at the
        /// DATA command instead of the 354, or instead of `dataComplete` once the data ended.
        /// The reply (a 4xx) is sent, the transaction is reset, the session goes on.
        case abortData(SMTPReply)
        /// A BDAT chunk that is not the last was read in full (RFC 3030).
        case chunkReceived(size: Int)
    }

    public enum Action: Sendable, Hashable {
        case send(SMTPReply)
        case askMailFrom(reversePath: String, parameters: [String: String])
        case askRcptTo(envelope: SMTPEnvelope, forwardPath: String, parameters: [String: String])
        case askData(envelope: SMTPEnvelope, message: ByteBuffer)
        /// Switch the input to DATA mode (after the 354 was sent).
        case startData
        /// Flush the 220, then install TLS, DISCARD every byte received so far (nothing pipelined
        /// in plaintext may be executed after the handshake, CVE-2011-0411), and feed `tlsStarted`.
        case startTLS
        /// Check these credentials (decoded from SASL PLAIN or LOGIN).
        case askAuth(username: String, password: String)
        /// A policy refusal the machine made itself (no delegate decision involved): tell the
        /// delegate so that it can record it (event, metric). Nothing to answer.
        case refused(reason: String, reply: SMTPReply)
        /// Flush what was sent, then close the connection.
        case close
        /// The next `size` octets are a BDAT chunk of the message (`first`: a new message starts;
        /// `last`: feed `dataComplete` after it, else `chunkReceived`). No line parsing meanwhile.
        case readChunk(size: Int, last: Bool, first: Bool)
        /// The next `size` octets are a refused BDAT chunk: read and drop them (RFC 3030 §3).
        case discardChunk(size: Int)
    }

    enum Pending: Sendable, Hashable {
        case connection
        case mail(String, [String: String])
        case rcpt(String, [String: String])
        case data
        case tls
        case auth(String)
    }

    /// A SASL exchange in progress: the next line is a response, not a command.
    enum AuthExchange: Sendable, Hashable {
        case plain
        case loginUsername
        case loginPassword(String)
    }

    public let configuration: Configuration
    public private(set) var state: State = .greeting
    public private(set) var heloName: String?
    public private(set) var envelope: SMTPEnvelope?
    public private(set) var errorCount = 0
    public private(set) var commandCount = 0
    /// The session is TLS protected (after STARTTLS, or from the start on an implicit-TLS port).
    public private(set) var tlsActive: Bool
    /// The SASL username once AUTH succeeded.
    public private(set) var authenticatedAs: String?
    private var pending: Pending? = .connection
    private var authExchange: AuthExchange?
    private var shutdownRequested = false
    /// A BDAT transaction is under way (a chunk was accepted; DATA and RCPT are out of sequence).
    public private(set) var chunking = false

    public init(configuration: Configuration, tlsActive: Bool = false) {
        self.configuration = configuration
        self.tlsActive = tlsActive
    }

    /// AUTH may be offered and used now (R1: only over TLS unless explicitly allowed).
    public var authAllowedNow: Bool {
        !configuration.authMechanisms.isEmpty && (tlsActive || configuration.allowPlaintextAuth)
    }

    public var isAwaitingDecision: Bool { pending != nil }

    /// True between transactions (no MAIL given, nothing outstanding).
    public var isIdle: Bool { pending == nil && (state == .greeting || state == .afterHelo) }

    /// The EHLO reply lines after the first (the extensions). Later issues add STARTTLS/AUTH here.
    public var extensions: [String] {
        var list = ["PIPELINING", "SIZE \(configuration.maxMessageSize)", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING"]
        if configuration.smtpUTF8 { list.append("SMTPUTF8") }
        if configuration.dsn { list.append("DSN") }
        if configuration.tlsAvailable && !tlsActive { list.append("STARTTLS") }
        if authAllowedNow && authenticatedAs == nil {
            list.append("AUTH " + configuration.authMechanisms.joined(separator: " "))
        }
        return list
    }

    public mutating func handle(_ input: Input) -> [Action] {
        var actions = process(input)
        if shutdownRequested, isIdle, state != .quit {
            state = .quit
            actions.append(.send(SMTPReply(.shuttingDown, hostname: configuration.hostname)))
            actions.append(.close)
        }
        return actions
    }

    private mutating func process(_ input: Input) -> [Action] {
        if state == .quit { return [] }
        switch input {
        case .shutdown:
            shutdownRequested = true
            return []
        case .timeout:
            state = .quit
            pending = nil
            return [.send(SMTPReply(.timeout, hostname: configuration.hostname)), .close]
        case .connectionDecision(let reply):
            guard pending == .connection else { return unexpected() }
            pending = nil
            guard let reply else {
                return [.send(.greeting(hostname: configuration.hostname, text: configuration.greetingText))]
            }
            if reply.isPositiveCompletion { return [.send(reply)] }
            state = .quit
            return [.send(reply), .close]
        case .line(let event):
            guard pending == nil, state != .inData else { return unexpected() }
            switch event {
            case .tooLong: return protocolError(.lineTooLong)
            case .bareLineFeed: return protocolError(.bareLineFeed)
            case .line(let bytes) where authExchange != nil:
                return authResponse(bytes)
            case .line(let bytes):
                commandCount += 1
                if commandCount > configuration.maxCommands {
                    state = .quit
                    return [.send(SMTPReply(.tooManyCommands, hostname: configuration.hostname)), .close]
                }
                switch SMTPCommandParser.parse(bytes) {
                case .success(let command): return process(.command(command))
                case .failure(let error): return process(.invalidCommand(error))
                }
            }
        case .invalidCommand(let error):
            guard pending == nil, state != .inData else { return unexpected() }
            if error.status == .bdatSyntax {
                // The chunk's length is unknown: its octets would be read as commands.
                state = .quit
                return [.send(SMTPReply(.bdatSyntax)), .close]
            }
            return protocolError(error.status)
        case .command(let command):
            guard pending == nil, state != .inData else { return unexpected() }
            return handleCommand(command)
        case .dataComplete(let outcome):
            guard pending == nil, state == .inData || chunking, let envelope else { return unexpected() }
            switch outcome {
            case .message(let message):
                pending = .data
                return [.askData(envelope: envelope, message: message)]
            case .tooBig:
                resetTransaction()
                return [.send(SMTPReply(.messageTooBig))]
            case .bareLineEnding:
                resetTransaction()
                return [.send(SMTPReply(.bareLineEndingInData))]
            }
        case .chunkReceived(let size):
            guard pending == nil, chunking else { return unexpected() }
            return [.send(SMTPReply(code: 250, enhanced: "2.0.0", "\(size) octets received"))]
        case .abortData(let reply):
            guard pending == nil, state == .inData || chunking else { return unexpected() }
            resetTransaction()
            return [.send(reply)]
        case .mailDecision(let reply):
            guard case .mail(let path, let parameters) = pending else { return unexpected() }
            pending = nil
            if let reply, !reply.isPositiveCompletion { return [.send(reply)] }
            envelope = SMTPEnvelope(reversePath: path, mailParameters: parameters)
            state = .inMail
            return [.send(reply ?? SMTPReply(.mailAccepted))]
        case .rcptDecision(let reply):
            guard case .rcpt(let path, let parameters) = pending else { return unexpected() }
            pending = nil
            if let reply, !reply.isPositiveCompletion { return [.send(reply)] }
            // The same recipient twice is accepted but kept once (one delivery, one outcome).
            if envelope?.recipients.contains(path) == false {
                envelope?.recipients.append(path)
                if !parameters.isEmpty { envelope?.recipientParameters[path] = parameters }
            }
            state = .inRcpt
            return [.send(reply ?? SMTPReply(.recipientAccepted))]
        case .dataDecision(let reply):
            guard pending == .data else { return unexpected() }
            pending = nil
            resetTransaction()
            return [.send(reply)]
        case .tlsStarted:
            guard pending == .tls else { return unexpected() }
            pending = nil
            tlsActive = true
            // RFC 3207 §4.2: forget everything learnt before the handshake.
            state = .greeting
            heloName = nil
            envelope = nil
            authenticatedAs = nil
            authExchange = nil
            return []
        case .authDecision(let reply):
            guard case .auth(let username) = pending else { return unexpected() }
            pending = nil
            if let reply, !reply.isPositiveCompletion { return [.send(reply)] }
            authenticatedAs = username
            return [.send(reply ?? SMTPReply(.authSucceeded))]
        }
    }

    private mutating func handleAuth(mechanism: String, initialResponse: String?) -> [Action] {
        switch state {
        case .greeting: return protocolError(.needHelo)
        case .inMail, .inRcpt, .inData: return protocolError(.badSequence)
        default: break
        }
        if configuration.authMechanisms.isEmpty { return protocolError(.authNotAvailable) }
        if authenticatedAs != nil { return protocolError(.authAlreadyDone) }
        if !authAllowedNow {
            let reply = SMTPReply(.authNeedsEncryption)
            return [.send(reply), .refused(reason: "AUTH before TLS", reply: reply)]
        }
        guard configuration.authMechanisms.contains(mechanism) else { return protocolError(.authMechanismUnknown) }
        switch mechanism {
        case "PLAIN":
            guard let initialResponse else {
                authExchange = .plain
                return [.send(.authChallenge(""))]
            }
            return plainCredentials(initialResponse)
        case "LOGIN":
            guard let initialResponse else {
                authExchange = .loginUsername
                return [.send(.authChallenge("VXNlcm5hbWU6"))]
            }
            guard let user = Self.decodeBase64(initialResponse) else { return protocolError(.authBadResponse) }
            authExchange = .loginPassword(String(decoding: user, as: UTF8.self))
            return [.send(.authChallenge("UGFzc3dvcmQ6"))]
        default:
            return protocolError(.authMechanismUnknown)
        }
    }

    /// A line during a SASL exchange: the client's base64 response, or `*` to cancel.
    private mutating func authResponse(_ bytes: [UInt8]) -> [Action] {
        let exchange = authExchange
        authExchange = nil
        let text = String(decoding: bytes, as: UTF8.self)
        if text == "*" { return [.send(SMTPReply(.authCancelled))] }
        switch exchange {
        case .plain:
            return plainCredentials(text)
        case .loginUsername:
            guard let user = Self.decodeBase64(text) else { return protocolError(.authBadResponse) }
            authExchange = .loginPassword(String(decoding: user, as: UTF8.self))
            return [.send(.authChallenge("UGFzc3dvcmQ6"))]
        case .loginPassword(let user):
            guard let password = Self.decodeBase64(text) else { return protocolError(.authBadResponse) }
            pending = .auth(user)
            return [.askAuth(username: user, password: String(decoding: password, as: UTF8.self))]
        case nil:
            return unexpected()
        }
    }

    /// SASL PLAIN (RFC 4616): authzid NUL authcid NUL passwd; authzid must be empty or the same user.
    private mutating func plainCredentials(_ response: String) -> [Action] {
        guard let bytes = Self.decodeBase64(response) else { return protocolError(.authBadResponse) }
        let parts = bytes.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[1].isEmpty else { return protocolError(.authBadResponse) }
        let authzid = String(decoding: parts[0], as: UTF8.self)
        let user = String(decoding: parts[1], as: UTF8.self)
        guard authzid.isEmpty || authzid == user else { return [.send(SMTPReply(.authFailed))] }
        pending = .auth(user)
        return [.askAuth(username: user, password: String(decoding: parts[2], as: UTF8.self))]
    }

    /// Strict base64 (`=` alone is the empty response, RFC 4954 §4); nil when malformed.
    static func decodeBase64(_ text: String) -> [UInt8]? {
        if text == "=" { return [] }
        guard text.utf8.count <= 4096, let data = Data(base64Encoded: text) else { return nil }
        return Array(data)
    }

    private mutating func handleCommand(_ command: SMTPCommand) -> [Action] {
        switch command {
        case .ehlo(let name):
            resetTransaction()
            heloName = name
            state = .afterHelo
            return [.send(.ehlo(hostname: configuration.hostname, extensions: extensions))]
        case .helo(let name):
            resetTransaction()
            heloName = name
            state = .afterHelo
            return [.send(.helo(hostname: configuration.hostname))]
        case .mail(let path, let parameters):
            switch state {
            case .greeting: return protocolError(.needHelo)
            case .inMail, .inRcpt: return protocolError(.nestedMail)
            default: break
            }
            if configuration.requireAuth && authenticatedAs == nil {
                let reply = SMTPReply(.authRequired)
                return [.send(reply), .refused(reason: "relay attempt without authentication", reply: reply)]
            }
            for (keyword, value) in parameters {
                switch keyword {
                case "SIZE":
                    guard !value.isEmpty, value.utf8.count <= 18, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                          let size = Int(value)
                    else { return protocolError(.parameterSyntax) }
                    if size > configuration.maxMessageSize {
                        let reply = SMTPReply(.messageTooBig)
                        return [.send(reply), .refused(reason: "declared size above the limit", reply: reply)]
                    }
                case "BODY":
                    guard ["7BIT", "8BITMIME"].contains(value.uppercased()) else {
                        return protocolError(.parameterSyntax)
                    }
                case "SMTPUTF8":
                    guard configuration.smtpUTF8 else { return protocolError(.parameterNotImplemented) }
                    guard value.isEmpty else { return protocolError(.parameterSyntax) }
                case "RET" where configuration.dsn:
                    guard DSNParameters.ret(value) != nil else { return protocolError(.parameterSyntax) }
                case "ENVID" where configuration.dsn:
                    guard DSNParameters.envelopeID(value) != nil else { return protocolError(.parameterSyntax) }
                default:
                    return protocolError(.parameterNotImplemented)
                }
            }
            if !SMTPPath.isASCII(path), parameters["SMTPUTF8"] == nil {
                return protocolError(.utf8NotDeclared)
            }
            pending = .mail(path, parameters)
            return [.askMailFrom(reversePath: path, parameters: parameters)]
        case .rcpt(let path, let parameters):
            switch state {
            case .greeting: return protocolError(.needHelo)
            case .afterHelo: return protocolError(.needMail)
            default: break
            }
            guard let envelope else { return unexpected() }
            if chunking { return protocolError(.badSequence) }
            for (keyword, value) in parameters {
                switch keyword {
                case "NOTIFY" where configuration.dsn:
                    guard DSNParameters.notify(value) != nil else { return protocolError(.parameterSyntax) }
                case "ORCPT" where configuration.dsn:
                    guard DSNParameters.originalRecipient(value) != nil else { return protocolError(.parameterSyntax) }
                default:
                    return protocolError(.parameterNotImplemented)
                }
            }
            if !SMTPPath.isASCII(path), envelope.mailParameters["SMTPUTF8"] == nil {
                return protocolError(.utf8NotDeclared)
            }
            if envelope.recipients.count >= configuration.maxRecipients {
                let reply = SMTPReply(.tooManyRecipients)
                return [.send(reply), .refused(reason: "too many recipients", reply: reply)]
            }
            pending = .rcpt(path, parameters)
            return [.askRcptTo(envelope: envelope, forwardPath: path, parameters: parameters)]
        case .data:
            switch state {
            case .greeting: return protocolError(.needHelo)
            case .afterHelo, .inMail: return protocolError(.needRecipient)
            default: break
            }
            if chunking { return protocolError(.badSequence) }
            state = .inData
            return [.send(SMTPReply(.startMailInput)), .startData]
        case .rset:
            resetTransaction()
            return [.send(SMTPReply(.ok))]
        case .noop:
            return [.send(SMTPReply(.ok))]
        case .quit:
            state = .quit
            return [.send(SMTPReply(.closing)), .close]
        case .vrfy:
            return [.send(SMTPReply(.cannotVerify))]
        case .help:
            return [.send(SMTPReply(.help))]
        case .starttls:
            guard configuration.tlsAvailable else { return [.send(SMTPReply(.tlsNotAvailable))] }
            if tlsActive { return protocolError(.tlsAlreadyActive) }
            switch state {
            case .greeting: return protocolError(.needHelo)
            case .inMail, .inRcpt, .inData: return protocolError(.badSequence)
            default: break
            }
            pending = .tls
            return [.send(SMTPReply(.readyToStartTLS)), .startTLS]
        case .auth(let mechanism, let initialResponse):
            return handleAuth(mechanism: mechanism, initialResponse: initialResponse)
        case .bdat(let size, let last):
            let refusal: SMTPStatus?
            switch state {
            case .greeting: refusal = .needHelo
            case .afterHelo: refusal = .needMail
            case .inMail: refusal = .needRecipient
            default: refusal = nil
            }
            if let refusal { return [.discardChunk(size: size)] + protocolError(refusal) }
            let first = !chunking
            chunking = true
            return [.readChunk(size: size, last: last, first: first)]
        }
    }

    private mutating func resetTransaction() {
        envelope = nil
        chunking = false
        if state != .greeting && state != .quit { state = .afterHelo }
    }

    private mutating func protocolError(_ status: SMTPStatus) -> [Action] {
        var actions: [Action] = [.send(SMTPReply(status))]
        if status.isProtocolError {
            errorCount += 1
            if errorCount >= configuration.maxErrors {
                state = .quit
                pending = nil
                actions.append(.send(SMTPReply(.tooManyErrors, hostname: configuration.hostname)))
                actions.append(.close)
            }
        }
        return actions
    }

    /// An input that the caller should never feed in this state (a bug in the caller).
    /// Fail safe: temporary error and close, never crash.
    private mutating func unexpected() -> [Action] {
        state = .quit
        pending = nil
        return [.send(SMTPReply(.storageFailure)), .close]
    }
}
