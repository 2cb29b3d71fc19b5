public import NIOCore
import NIOPosix
import NIOSSL
import NIOConcurrencyHelpers
public import Logging
import Foundation

/// Where a session goes: the name the certificate must carry (the MX host; nil for an address
/// literal), the IP to connect to, and the port.
public struct SMTPTarget: Sendable, Hashable, CustomStringConvertible {
    public var hostname: String?
    public var address: String
    public var port: Int
    public init(hostname: String?, address: String, port: Int) {
        self.hostname = hostname
        self.address = address
        self.port = port
    }
    public var description: String {
        let a = address.contains(":") ? "[\(address)]" : address
        return "\(hostname ?? "")[\(a)]:\(port)"
    }
}

/// Why a session could not be opened.
public struct SMTPSessionFailure: Error, Sendable {
    /// The reply that decides the recipients (the server's, or a synthetic 4xx for network errors).
    public var reply: SMTPReply
    /// No TCP connection was made (try the next address).
    public var connectFailed: Bool
    /// The TLS handshake failed (opportunistic mode retries once without TLS).
    public var tlsHandshakeFailed: Bool
    /// The session did not meet its `TLSRequirement` (STARTTLS missing, handshake or
    /// certificate check failed): never retried in plaintext.
    public var tlsPolicyFailure: TLSPolicyFailure? = nil
}

/// One open SMTP connection, ready for transactions: the pure `SMTPClientStateMachine` driven
/// over an `SMTPClientConnection`. Used by one task at a time (a connection cache hands it out
/// and takes it back). `Sendable` value: the connection is a channel reference, the machine a value.
public struct SMTPSession: Sendable {
    public let target: SMTPTarget
    public let sourceAddress: String?
    public let heloName: String
    public private(set) var machine: SMTPClientStateMachine
    public private(set) var tls: TLSReport?
    /// What the destination's TLS policy demanded of this session (checked in the handshake).
    public let requirement: TLSRequirement
    public let openedAt: NIODeadline
    let connection: SMTPClientConnection
    let logger: Logger

    public var extensions: SMTPServerExtensions { machine.extensions }
    public var isUsable: Bool { machine.isReady && connection.channel.isActive }
    public var transactions: Int { machine.transactions }

    /// Connects, reads the greeting, says EHLO (HELO as fallback), does STARTTLS per `tlsMode`.
    /// A `requirement` that is `required` makes STARTTLS mandatory and is checked during the
    /// handshake: a server that does not meet it gets no SMTP command over the channel.
    public static func open(
        target: SMTPTarget, sourceAddress: String?, heloName: String, tlsMode: SMTPClientStateMachine.TLSMode,
        trust: TLSTrust?, requirement: TLSRequirement = .none, timeouts: SMTPClientStateMachine.Timeouts, connectTimeout: TimeAmount,
        maxReplyLineLength: Int = 4096, group: any EventLoopGroup, logger: Logger
    ) async -> Result<SMTPSession, SMTPSessionFailure> {
        var logger = logger
        logger[metadataKey: "smtp.peer"] = "\(target)"
        let configuration = SMTPClientConfiguration(
            heloName: heloName, connectTimeout: connectTimeout, sourceAddress: sourceAddress,
            maxReplyLineLength: maxReplyLineLength)
        let connection: SMTPClientConnection
        do {
            connection = try await SMTPClientConnection.connect(host: target.address, port: target.port,
                                                                configuration: configuration, group: group)
        } catch {
            logger.info("smtp connect failed", metadata: ["error": "\(error)"])
            return .failure(SMTPSessionFailure(reply: .connectionFailed(host: target.address, port: target.port),
                                               connectFailed: true, tlsHandshakeFailed: false))
        }
        let mode: SMTPClientStateMachine.TLSMode = requirement.required ? .required : trust == nil ? .never : tlsMode
        var session = SMTPSession(
            target: target, sourceAddress: sourceAddress, heloName: heloName,
            machine: SMTPClientStateMachine(heloName: heloName, tlsMode: mode, timeouts: timeouts),
            tls: nil, requirement: requirement, openedAt: .now(), connection: connection, logger: logger)
        var sink = ActionSink()
        await session.drive([], trust: trust, sink: &sink)
        if let failure = sink.sessionFailure {
            await connection.close()
            var policyFailure: TLSPolicyFailure? = nil
            if requirement.required, !session.machine.tlsActive {
                policyFailure = sink.policyFailure
                    ?? (session.machine.tlsHandshakeFailed
                        ? TLSPolicyFailure(type: "validation-failure", detail: "TLS handshake failed")
                        : failure.enhanced == "4.7.5"   // the machine's "does not offer / refused STARTTLS"
                        ? TLSPolicyFailure(type: "starttls-not-supported", detail: failure.text) : nil)
            }
            var reply = failure
            if let policyFailure {
                reply = SMTPReply(code: 451, enhanced: "4.7.5", "TLS policy not met at \(target): \(policyFailure.detail)")
            }
            return .failure(SMTPSessionFailure(reply: reply, connectFailed: false,
                                               tlsHandshakeFailed: session.machine.tlsHandshakeFailed,
                                               tlsPolicyFailure: policyFailure))
        }
        return .success(session)
    }

    /// The server advertised DSN (RFC 3461) in its last EHLO reply: it takes over the notices the
    /// sender asked for.
    public var offersDSN: Bool { machine.extensions.dsn }

    /// The result of one transaction.
    public struct TransactionResult: Sendable {
        /// One reply per recipient, in the order given.
        public var replies: [SMTPReply]
        /// The caller declined DATA: nothing was sent.
        public var abandoned: Bool
        /// Set when the session broke during the transaction (then it is closed).
        public var sessionFailure: SMTPReply?
        /// The message body was written (a later failure may still have delivered it).
        public var bodySent: Bool
    }

    /// Runs one transaction. `message` is the raw message (CRLF lines); it is dot-stuffed here.
    /// `dsn` carries the RFC 3461 parameters; they go out only when the server offers DSN (`offersDSN`).
    public mutating func send(reversePath: String, recipients: [String], message: ByteBuffer,
                              dsn: SMTPClientStateMachine.DSNOptions? = nil,
                              beforeData: (@Sendable () async -> Bool)? = nil) async -> TransactionResult {
        precondition(machine.isReady, "send on a session that is not ready")
        let eightBit = message.readableBytesView.contains(where: { $0 >= 0x80 })
        let transaction = SMTPClientStateMachine.Transaction(
            reversePath: reversePath, recipients: recipients, size: message.readableBytes, eightBit: eightBit,
            dsn: dsn)
        var sink = ActionSink(recipients: recipients.count, body: message, beforeData: beforeData)
        let actions = machine.begin(transaction)
        await drive(actions, trust: nil, sink: &sink)
        let fallback = sink.sessionFailure ?? SMTPReply(.deliveryIncomplete)
        if sink.sessionFailure != nil { await connection.close() }
        return TransactionResult(replies: sink.replies.map { $0 ?? fallback }, abandoned: sink.abandoned,
                                 sessionFailure: sink.sessionFailure, bodySent: sink.bodySent)
    }

    /// QUIT (when the session is still good) and close.
    public mutating func close() async {
        var sink = ActionSink()
        let actions = machine.quit()
        if !actions.isEmpty {
            // Do not wait minutes for a QUIT reply.
            await drive(actions, trust: nil, sink: &sink, replyTimeout: .seconds(5))
        }
        await connection.close()
    }

    /// What the actions decided, collected while driving.
    struct ActionSink {
        var replies: [SMTPReply?] = []
        var body: ByteBuffer?
        var beforeData: (@Sendable () async -> Bool)?
        var abandoned = false
        var bodySent = false
        var sessionFailure: SMTPReply?
        /// The handshake's certificate check against the session's `TLSRequirement` failed.
        var policyFailure: TLSPolicyFailure?
        init(recipients: Int = 0, body: ByteBuffer? = nil, beforeData: (@Sendable () async -> Bool)? = nil) {
            replies = Array(repeating: nil, count: recipients)
            self.body = body
            self.beforeData = beforeData
        }
    }

    /// Performs `actions`, then reads replies while the machine awaits one, until it does not.
    private mutating func drive(_ initial: [SMTPClientStateMachine.Action], trust: TLSTrust?, sink: inout ActionSink,
                                replyTimeout: TimeAmount? = nil) async {
        var queue = initial[...]
        while true {
            while let action = queue.popFirst() {
                var next: [SMTPClientStateMachine.Action] = []
                switch action {
                case .send(let lines):
                    var buffer = connection.channel.allocator.buffer(capacity: lines.reduce(0) { $0 + $1.utf8.count + 2 })
                    for line in lines {
                        buffer.writeString(line)
                        buffer.writeString("\r\n")
                    }
                    do { try await connection.write(buffer) } catch {
                        next = machine.receive(.connectionClosed("\(error)"))
                    }
                case .sendBody:
                    guard let body = sink.body else { next = machine.receive(.connectionClosed("no body")); break }
                    sink.bodySent = true
                    do { try await connection.write(SMTPClient.encodeData(body)) } catch {
                        next = machine.receive(.connectionClosed("\(error)"))
                    }
                case .startTLS:
                    next = await handshake(trust: trust, sink: &sink)
                case .confirmData:
                    let yes = await sink.beforeData?() ?? true
                    next = machine.receive(.dataConfirmed(yes))
                case .recipient(let index, let reply):
                    if index < sink.replies.count { sink.replies[index] = reply }
                case .transactionDone(let abandoned):
                    sink.abandoned = abandoned
                case .sessionFailed(let reply):
                    sink.sessionFailure = reply
                    logger.info("smtp session failed", metadata: ["reply": "\(reply)"])
                case .ready:
                    break
                case .close:
                    await connection.close()
                }
                queue.append(contentsOf: next)
            }
            guard machine.awaitingReply else { return }
            let input: SMTPClientStateMachine.Input
            do {
                input = .reply(try await connection.readReply(timeout: replyTimeout ?? machine.timeout))
            } catch let error as SMTPClientError where error.code == SMTPClientError.timeout {
                input = .timeout
            } catch {
                input = .connectionClosed("\(error)")
            }
            queue.append(contentsOf: machine.receive(input))
        }
    }

    private mutating func handshake(trust: TLSTrust?, sink: inout ActionSink) async -> [SMTPClientStateMachine.Action] {
        guard let trust else { return machine.receive(.tlsFailed("no TLS configuration")) }
        let hostname = target.hostname
        let requirement = self.requirement
        // The verification result, written by the callback on the event loop, read after the handshake.
        let outcome = NIOLockedValueBox<(Bool, String?)>((false, "not verified"))
        let policyFailure = NIOLockedValueBox<TLSPolicyFailure?>(nil)
        let sni = hostname.flatMap { name -> String? in
            // SNI must be a host name, never an IP literal.
            (name.isEmpty || name.allSatisfy { $0.isNumber || $0 == "." || $0 == ":" }) ? nil : name
        }
        let verify: NIOSSLCustomVerificationCallback = { certificates, promise in
            promise.completeWithTask {
                let result = await trust.verify(certificates, hostname: hostname)
                outcome.withLockedValue { $0 = result }
                // Opportunistic TLS delivers whatever the verdict (it is recorded); a policy's
                // requirement fails the handshake itself, so not even EHLO crosses.
                if let failure = await requirement.check(certificates, trust: trust, webPKI: result) {
                    policyFailure.withLockedValue { $0 = failure }
                    return .failed
                }
                return .certificateVerified
            }
        }
        let observer = TLSServerHelloObserver()
        do {
            let (version, certificate) = try await connection.startTLS(
                context: trust.context, serverHostname: sni, verify: verify, observer: observer,
                timeout: machine.timeouts.tlsHandshake)
            let suite = try? await connection.channel.eventLoop.submit { observer.cipherSuite }.get()
            let (verified, error) = outcome.withLockedValue { $0 }
            tls = TLSReport(version: version?.name ?? "unknown",
                            cipher: (suite ?? nil).map(TLSServerHelloObserver.name(of:)) ?? "unknown",
                            peerCertificateSHA256: TLSTrust.fingerprint(certificate), verified: verified,
                            verifyError: verified ? nil : error)
            logger.debug("tls established", metadata: ["tls": "\(tls!)"])
            return machine.receive(.tlsEstablished)
        } catch {
            logger.info("tls handshake failed", metadata: ["error": "\(error)"])
            sink.policyFailure = policyFailure.withLockedValue { $0 }
            await connection.close()
            return machine.receive(.tlsFailed("\(error)"))
        }
    }
}
