public import NIOCore

/// What the server said it supports in its EHLO reply (RFC 5321 §4.1.1.1 and the extensions'
/// RFCs). A value parsed once per session; `HELO` sessions have none.
public struct SMTPServerExtensions: Sendable, Hashable {
    public var keywords: Set<String> = []
    /// `SIZE n` (RFC 1870): 0 means "SIZE without a fixed limit"; nil means not advertised.
    public var sizeLimit: Int?

    public init() {}

    /// Parses the lines after the first of a 250 EHLO reply (keywords are case-insensitive).
    public init(ehloLines: [String]) {
        for line in ehloLines {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = parts.first else { continue }
            let keyword = first.uppercased()
            keywords.insert(keyword)
            if keyword == "SIZE" { sizeLimit = parts.count > 1 ? Int(parts[1]) ?? 0 : 0 }
        }
    }

    public func supports(_ keyword: String) -> Bool { keywords.contains(keyword) }
    public var pipelining: Bool { supports("PIPELINING") }
    public var startTLS: Bool { supports("STARTTLS") }
    public var eightBitMIME: Bool { supports("8BITMIME") }
    public var smtpUTF8: Bool { supports("SMTPUTF8") }
    public var enhancedStatusCodes: Bool { supports("ENHANCEDSTATUSCODES") }
    public var dsn: Bool { supports("DSN") }
}

/// The pure client side of an SMTP session over one connection (RFC 5321 §3–4, 3207, 2920,
/// 1870, 6152, 6531): replies and I/O events in, actions out. It never touches a socket, a clock
/// or a certificate; the driver (`SMTPClient`) performs the actions and feeds back what happened.
///
/// One connection carries any number of transactions (`begin`), one after another; between them
/// the session is `ready`. A transaction that ended before the final reply (MAIL refused, every
/// RCPT refused, abandoned) is followed by `RSET`, so the connection can be reused. With
/// PIPELINING, MAIL and every RCPT go out in one write and DATA waits for their replies (the
/// caller's last check before the side effect sits there).
///
/// Never sends an 8-bit body to a server that did not advertise 8BITMIME, nor non-ASCII
/// addresses to one without SMTPUTF8: such a transaction is refused locally with a permanent
/// reply (the gateway does not convert signed mail; see Services/egress-good/README.md).
public struct SMTPClientStateMachine: Sendable {
    public enum TLSMode: Sendable, Hashable {
        /// Never send STARTTLS.
        case never
        /// STARTTLS when the server offers it; carry on in plaintext when it is not offered or
        /// refused (the driver retries a failed handshake without TLS on a new connection).
        case opportunistic
        /// The session fails unless TLS is established (forced TLS, DANE, MTA-STS enforce).
        case required
    }

    /// RFC 5321 §4.5.3.2 timeouts per phase of the dialogue.
    public struct Timeouts: Sendable, Hashable {
        public var greeting: TimeAmount = .minutes(5)
        public var command: TimeAmount = .minutes(5)     // EHLO, HELO, STARTTLS, RSET, QUIT
        public var mail: TimeAmount = .minutes(5)
        public var rcpt: TimeAmount = .minutes(5)
        public var dataInitiation: TimeAmount = .minutes(2)
        public var dataBlock: TimeAmount = .minutes(3)
        public var dataTermination: TimeAmount = .minutes(10)
        public var tlsHandshake: TimeAmount = .minutes(1)
        public init() {}
    }

    /// The DSN parameters (RFC 3461) of a transaction: `RET` (`FULL`/`HDRS`) and `ENVID` (decoded)
    /// for MAIL; per recipient, in the transaction's order, `NOTIFY` and the decoded `ORCPT`.
    public struct DSNOptions: Sendable, Hashable {
        public struct Recipient: Sendable, Hashable {
            public var notify: [String]?
            public var originalRecipient: String?
            public init(notify: [String]? = nil, originalRecipient: String? = nil) {
                self.notify = notify
                self.originalRecipient = originalRecipient
            }
        }
        public var ret: String?
        public var envelopeID: String?
        public var recipients: [Recipient]
        public init(ret: String? = nil, envelopeID: String? = nil, recipients: [Recipient] = []) {
            self.ret = ret
            self.envelopeID = envelopeID
            self.recipients = recipients
        }
    }

    /// One message's envelope as the session needs it.
    public struct Transaction: Sendable, Hashable {
        public var reversePath: String
        public var recipients: [String]
        /// Octets of the message as it will be sent (for SIZE=).
        public var size: Int
        /// The body has octets ≥ 0x80.
        public var eightBit: Bool
        /// RFC 3461 parameters, passed on only when the server offers DSN.
        public var dsn: DSNOptions?

        public init(reversePath: String, recipients: [String], size: Int, eightBit: Bool, dsn: DSNOptions? = nil) {
            self.reversePath = reversePath
            self.recipients = recipients
            self.size = size
            self.eightBit = eightBit
            self.dsn = dsn
        }
        var needsUTF8: Bool { !SMTPPath.isASCII(reversePath) || recipients.contains { !SMTPPath.isASCII($0) } }
    }

    public enum Input: Sendable, Hashable {
        case reply(SMTPReply)
        case tlsEstablished
        case tlsFailed(String)
        case timeout
        case connectionClosed(String)
        /// The answer to `.confirmData`: true → send DATA, false → abandon (nothing sent).
        case dataConfirmed(Bool)
    }

    public enum Action: Sendable, Hashable {
        /// Write these command lines (each CRLF-terminated) in one write.
        case send([String])
        /// Run the TLS handshake now, then feed `.tlsEstablished` or `.tlsFailed`.
        case startTLS
        /// The recipients are known; ask whether DATA may go out (egress: is the lease ours?).
        case confirmData
        /// Write the dot-stuffed message and its terminating `.CRLF`.
        case sendBody
        /// The session can take a transaction (`begin`).
        case ready
        /// A recipient's result is decided (RCPT refusal, or the final reply for accepted ones).
        case recipient(index: Int, reply: SMTPReply)
        /// The transaction is over; every recipient has had its `.recipient` action.
        /// `abandoned` when the caller declined DATA.
        case transactionDone(abandoned: Bool)
        /// The session is over and unusable; every undecided recipient got this reply.
        case sessionFailed(SMTPReply)
        /// Close the connection.
        case close
    }

    public enum Phase: String, Sendable, Hashable {
        case greeting, ehlo, helo, startTLS, tlsHandshake, ready, mail, rcpt, confirmingData, data, body, rset, quit, closed
    }

    public let heloName: String
    public let tlsMode: TLSMode
    public let timeouts: Timeouts
    public private(set) var phase: Phase = .greeting
    public private(set) var extensions = SMTPServerExtensions()
    public private(set) var tlsActive = false
    /// The last reply that failed the session (for logs).
    public private(set) var failure: SMTPReply?
    /// True when the session failed because the TLS handshake did (the driver may retry once in plaintext).
    public private(set) var tlsHandshakeFailed = false
    /// Transactions completed on this connection (for the reuse limit).
    public private(set) var transactions = 0

    private var transaction: Transaction?
    private var decided: [Bool] = []
    private var accepted: [Int] = []
    /// Replies still expected for a pipelined MAIL+RCPT batch, in order: -1 = MAIL, n = RCPT n.
    private var pending: [Int] = []
    private var mailReply: SMTPReply?
    private var afterRSET: Phase = .ready

    public init(heloName: String, tlsMode: TLSMode, timeouts: Timeouts = Timeouts()) {
        self.heloName = heloName
        self.tlsMode = tlsMode
        self.timeouts = timeouts
    }

    /// How long the driver waits for the next input in the current phase.
    public var timeout: TimeAmount {
        switch phase {
        case .greeting: return timeouts.greeting
        case .mail: return timeouts.mail
        case .rcpt: return timeouts.rcpt
        case .data: return timeouts.dataInitiation
        case .body: return timeouts.dataTermination
        case .tlsHandshake: return timeouts.tlsHandshake
        default: return timeouts.command
        }
    }

    public var isReady: Bool { phase == .ready }

    /// True while the server owes a reply: the driver reads one (within `timeout`) and feeds it.
    public var awaitingReply: Bool {
        switch phase {
        case .greeting, .ehlo, .helo, .startTLS, .mail, .rcpt, .data, .body, .rset, .quit: return true
        case .ready, .confirmingData, .tlsHandshake, .closed: return false
        }
    }

    // MARK: - Inputs

    public mutating func receive(_ input: Input) -> [Action] {
        switch input {
        case .timeout:
            return fail(.replyTimeout(during: phase.rawValue))
        case .connectionClosed:
            if phase == .quit || phase == .closed { phase = .closed; return [] }
            return fail(.connectionLost(during: phase.rawValue))
        case .tlsFailed(let reason):
            guard phase == .tlsHandshake else { return fail(.protocolError("TLS event outside a handshake")) }
            tlsHandshakeFailed = true
            return fail(SMTPReply(code: 421, enhanced: "4.7.0", "TLS handshake failed: \(reason)"))
        case .tlsEstablished:
            guard phase == .tlsHandshake else { return fail(.protocolError("TLS event outside a handshake")) }
            tlsActive = true
            extensions = SMTPServerExtensions()
            phase = .ehlo
            return [.send(["EHLO \(heloName)"])]
        case .dataConfirmed(let yes):
            guard phase == .confirmingData else { return [] }
            if yes {
                phase = .data
                return [.send(["DATA"])]
            }
            return endTransaction(undecided: SMTPReply(.deliveryHandedOff), abandoned: true)
        case .reply(let reply):
            return handle(reply)
        }
    }

    /// Starts a transaction; only in `ready`.
    public mutating func begin(_ t: Transaction) -> [Action] {
        precondition(phase == .ready, "begin outside ready")
        precondition(!t.recipients.isEmpty, "a transaction needs a recipient")
        transaction = t
        decided = Array(repeating: false, count: t.recipients.count)
        accepted = []
        mailReply = nil
        // Refusals decided here, before anything is sent.
        if let limit = extensions.sizeLimit, limit > 0, t.size > limit {
            return refuseLocally(SMTPReply(code: 552, enhanced: "5.3.4",
                                           "message of \(t.size) octets exceeds the next hop's SIZE limit of \(limit)"))
        }
        if t.eightBit && !extensions.eightBitMIME {
            return refuseLocally(SMTPReply(code: 554, enhanced: "5.6.3",
                "message has 8-bit content and the next hop does not support 8BITMIME (signed mail is not converted)"))
        }
        if t.needsUTF8 && !extensions.smtpUTF8 {
            return refuseLocally(SMTPReply(code: 553, enhanced: "5.6.7",
                "non-ASCII address and the next hop does not support SMTPUTF8"))
        }
        var mail = "MAIL FROM:<\(t.reversePath)>"
        if extensions.sizeLimit != nil { mail += " SIZE=\(t.size)" }
        if t.eightBit { mail += " BODY=8BITMIME" }
        if t.needsUTF8 { mail += " SMTPUTF8" }
        if extensions.dsn, let dsn = t.dsn {
            if let ret = dsn.ret { mail += " RET=\(ret)" }
            if let envid = dsn.envelopeID { mail += " ENVID=\(XText.encode(envid))" }
        }
        let rcpts = t.recipients.indices.map { rcptLine(t, $0) }
        if extensions.pipelining {
            pending = [-1] + Array(t.recipients.indices)
            phase = .rcpt
            return [.send([mail] + rcpts)]
        }
        pending = [-1]
        phase = .mail
        return [.send([mail])]
    }

    /// The RCPT command for recipient `index`, with its DSN parameters when the server offers DSN.
    private func rcptLine(_ t: Transaction, _ index: Int) -> String {
        var line = "RCPT TO:<\(t.recipients[index])>"
        if extensions.dsn, let options = t.dsn, index < options.recipients.count {
            let dsn = options.recipients[index]
            if let notify = dsn.notify, !notify.isEmpty { line += " NOTIFY=" + notify.joined(separator: ",") }
            if let original = dsn.originalRecipient { line += " ORCPT=" + DSNParameters.encodeOriginalRecipient(original) }
        }
        return line
    }

    /// Ends the session politely (QUIT) if it is ready, otherwise just closes.
    public mutating func quit() -> [Action] {
        switch phase {
        case .ready:
            phase = .quit
            return [.send(["QUIT"])]
        case .closed, .quit:
            return []
        default:
            phase = .closed
            return [.close]
        }
    }

    // MARK: - Replies

    private mutating func handle(_ reply: SMTPReply) -> [Action] {
        switch phase {
        case .greeting:
            guard reply.isPositiveCompletion else { return fail(reply, quit: true) }
            phase = .ehlo
            return [.send(["EHLO \(heloName)"])]
        case .ehlo:
            if reply.isPositiveCompletion {
                extensions = SMTPServerExtensions(ehloLines: Array(reply.lines.dropFirst()))
                return afterHello()
            }
            // RFC 5321 §3.2: a server that does not know EHLO answers 5xx; fall back to HELO
            // (never after STARTTLS: a server that offered TLS knows EHLO).
            if reply.isPermanent && !tlsActive {
                phase = .helo
                return [.send(["HELO \(heloName)"])]
            }
            return fail(reply, quit: true)
        case .helo:
            guard reply.isPositiveCompletion else { return fail(reply, quit: true) }
            extensions = SMTPServerExtensions()
            return afterHello()
        case .startTLS:
            if reply.code == 220 {
                phase = .tlsHandshake
                return [.startTLS]
            }
            if tlsMode == .required { return fail(SMTPReply(code: 451, enhanced: "4.7.5",
                                                             "next hop refused STARTTLS: \(reply.description)"), quit: true) }
            // Opportunistic: carry on in plaintext with what the first EHLO said.
            phase = .ready
            return [.ready]
        case .mail, .rcpt:
            return handleEnvelopeReply(reply)
        case .data:
            guard reply.isPositiveIntermediate else {
                return endTransaction(undecided: reply, abandoned: false)
            }
            phase = .body
            return [.sendBody]
        case .body:
            transactions += 1
            var actions: [Action] = []
            for index in accepted where !decided[index] {
                decided[index] = true
                actions.append(.recipient(index: index, reply: reply))
            }
            transaction = nil
            phase = .ready
            actions.append(.transactionDone(abandoned: false))
            actions.append(.ready)
            return actions
        case .rset:
            guard reply.isPositiveCompletion else { return fail(reply, quit: true) }
            phase = afterRSET
            return phase == .ready ? [.ready] : []
        case .quit:
            phase = .closed
            return [.close]
        case .ready, .confirmingData, .tlsHandshake, .closed:
            // A reply nobody asked for: the server is out of step; the connection cannot be trusted.
            return fail(.protocolError("unexpected reply \(reply.description) in \(phase.rawValue)"))
        }
    }

    private mutating func afterHello() -> [Action] {
        if !tlsActive && tlsMode != .never && extensions.startTLS {
            phase = .startTLS
            return [.send(["STARTTLS"])]
        }
        if !tlsActive && tlsMode == .required {
            return fail(SMTPReply(code: 451, enhanced: "4.7.5", "next hop does not offer STARTTLS and TLS is required"),
                        quit: true)
        }
        phase = .ready
        return [.ready]
    }

    private mutating func handleEnvelopeReply(_ reply: SMTPReply) -> [Action] {
        guard let t = transaction, !pending.isEmpty else { return fail(.protocolError("reply without a command")) }
        let which = pending.removeFirst()
        var actions: [Action] = []
        if which == -1 {
            mailReply = reply
            if !extensions.pipelining {
                guard reply.isPositiveCompletion else { return endTransaction(undecided: reply, abandoned: false) }
                pending = Array(t.recipients.indices)
                phase = .rcpt
                return [.send([rcptLine(t, 0)])]
            }
        } else {
            if let mail = mailReply, !mail.isPositiveCompletion {
                // Pipelined RCPTs after a refused MAIL are meaningless (503s): the MAIL reply decides.
            } else if reply.isPositiveCompletion {
                accepted.append(which)
            } else {
                decided[which] = true
                actions.append(.recipient(index: which, reply: reply))
            }
            if !extensions.pipelining, !pending.isEmpty {
                actions.append(.send([rcptLine(t, pending[0])]))
                return actions
            }
        }
        guard pending.isEmpty else { return actions }
        if let mail = mailReply, !mail.isPositiveCompletion {
            return actions + endTransaction(undecided: mail, abandoned: false)
        }
        if accepted.isEmpty {
            return actions + endTransaction(undecided: nil, abandoned: false)
        }
        phase = .confirmingData
        return actions + [.confirmData]
    }

    /// Decides every undecided recipient with `reply`, then RSETs so the connection stays usable.
    private mutating func endTransaction(undecided reply: SMTPReply?, abandoned: Bool) -> [Action] {
        var actions: [Action] = []
        if let reply {
            for index in decided.indices where !decided[index] {
                decided[index] = true
                actions.append(.recipient(index: index, reply: reply))
            }
        }
        transaction = nil
        pending = []
        actions.append(.transactionDone(abandoned: abandoned))
        phase = .rset
        afterRSET = .ready
        actions.append(.send(["RSET"]))
        return actions
    }

    /// A refusal decided before anything was sent: the session stays ready.
    private mutating func refuseLocally(_ reply: SMTPReply) -> [Action] {
        var actions: [Action] = decided.indices.map { .recipient(index: $0, reply: reply) }
        decided = decided.map { _ in true }
        transaction = nil
        actions.append(.transactionDone(abandoned: false))
        actions.append(.ready)
        return actions
    }

    private mutating func fail(_ reply: SMTPReply, quit: Bool = false) -> [Action] {
        var actions: [Action] = []
        for index in decided.indices where !decided[index] {
            decided[index] = true
            actions.append(.recipient(index: index, reply: reply))
        }
        if transaction != nil { actions.append(.transactionDone(abandoned: false)) }
        transaction = nil
        pending = []
        failure = reply
        actions.append(.sessionFailed(reply))
        if quit && phase != .closed {
            phase = .quit
            actions.append(.send(["QUIT"]))
        } else {
            phase = .closed
            actions.append(.close)
        }
        return actions
    }
}

extension SMTPReply {
    /// The client's own reply for a server that broke the protocol.
    public static func protocolError(_ detail: String) -> SMTPReply {
        SMTPReply(code: 451, enhanced: "4.5.0", "protocol error: \(detail)")
    }
}
