import NIOCore
import NIOConcurrencyHelpers
import NIOSSL
import Logging
import SMTPProtocol

/// Sent through a session's pipeline when the server shuts down.
struct SMTPServerShutdownEvent: Sendable {}

/// Counters shared by all sessions of one server (for tests and metrics).
final class SMTPServerStats: Sendable {
    private let box = NIOLockedValueBox<(peakBufferedBytes: Int, sessions: Int)>((0, 0))
    func observeBuffered(_ bytes: Int) {
        box.withLockedValue { if bytes > $0.peakBufferedBytes { $0.peakBufferedBytes = bytes } }
    }
    var peakBufferedBytes: Int { box.withLockedValue { $0.peakBufferedBytes } }
    func sessionOpened() { box.withLockedValue { $0.sessions += 1 } }
    var sessions: Int { box.withLockedValue { $0.sessions } }
}

/// The thin I/O layer of one SMTP session: reads bytes, splits them into command lines or
/// DATA, feeds `SMTPServerStateMachine`, writes its replies, calls the delegate.
///
/// Owns: the input not yet processed (`pending`, ≤ maxPipelineBuffer + one read, enforced by
/// holding back `read()` while a decision is awaited), the line decoder (≤ maxLineLength)
/// and the DATA decoder (≤ maxMessageSize, and only against a reservation of the shared
/// `inflightBudget`, taken before the bytes are buffered and returned once the delegate
/// answered the message or the DATA phase ended otherwise). Thread rules: every method runs on the
/// channel's event loop; delegate calls run as Swift tasks and their results hop back to
/// the event loop before they touch any state.
///
/// STARTTLS: after the 220 is flushed in plaintext, a NIOSSLServerHandler is inserted at the
/// front of the pipeline, every byte received so far is DISCARDED (no plaintext injection
/// across the TLS boundary, CVE-2011-0411), and the state machine starts over (`greeting`,
/// no HELO, no AUTH) with `session.tls = true`.
final class SMTPServerHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let configuration: SMTPServerConfiguration
    private let delegate: any SMTPServerDelegate
    private var logger: Logger
    private let stats: SMTPServerStats
    private var machine: SMTPServerStateMachine
    private var lineDecoder: SMTPLineDecoder
    private var dataDecoder: SMTPDataDecoder?
    /// Bare LFs the last DATA had (normalize mode), handed to the delegate with the envelope.
    private var lastBareLineFeeds = 0
    /// BDAT (RFC 3030): the message assembled so far, and the chunk being read.
    private var assembler: SMTPChunkAssembler?
    private var chunk: (size: Int, remaining: Int, last: Bool, discard: Bool)?
    private var pending = ByteBuffer()
    private var session: SMTPSessionInfo
    private var readHeld = false
    private var closing = false
    private var inactive = false
    private var closedReported = false
    private var timer: Scheduled<Void>?
    /// Deadline of the whole DATA phase (slow clients), armed at the 354.
    private var dataDeadline: Scheduled<Void>?
    private var lastWrite: EventLoopFuture<Void>?
    private let shutdownAtStart: Bool
    /// Bytes of `configuration.inflightBudget` this session holds (only during DATA and until
    /// the delegate answered the message); `overBudget`: the budget ran out during this DATA,
    /// the body is being discarded.
    private var reserved = 0
    private var overBudget = false

    init(configuration: SMTPServerConfiguration, delegate: any SMTPServerDelegate, logger: Logger,
         stats: SMTPServerStats, shuttingDown: Bool) {
        self.configuration = configuration
        self.delegate = delegate
        self.stats = stats
        self.machine = SMTPServerStateMachine(configuration: configuration.stateMachineConfiguration,
                                              tlsActive: configuration.implicitTLS)
        self.lineDecoder = SMTPLineDecoder(maximumLineLength: configuration.maxLineLength)
        let id = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        self.session = SMTPSessionInfo(id: String(repeating: "0", count: 16 - id.count) + id,
                                       remoteAddress: nil, localAddress: nil, heloName: nil,
                                       tls: configuration.implicitTLS)
        var logger = logger
        logger[metadataKey: "smtp.session"] = "\(session.id)"
        self.logger = logger
        self.shutdownAtStart = shuttingDown
    }

    // MARK: inbound

    func channelActive(context: ChannelHandlerContext) {
        session.remoteAddress = context.channel.remoteAddress
        session.localAddress = context.channel.localAddress
        stats.sessionOpened()
        logger.debug("smtp connection opened", metadata: ["remote": "\(session.remoteAddress.map { "\($0)" } ?? "?")"])
        if shutdownAtStart { perform(context: context, machine.handle(.shutdown)) }
        let session = self.session
        let delegate = self.delegate
        ask(context: context, { await delegate.connectionOpened(session) }, then: { .connectionDecision($0) })
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        guard !closing else { return }
        pending.writeBuffer(&buffer)
        // In DATA the idle timer restarts with every chunk (bounded overall by the DATA deadline);
        // for commands it does not: a command line must be complete within commandTimeout, so a
        // client dripping one byte at a time cannot hold a session forever.
        if dataDecoder != nil || chunk != nil { armTimer(context: context) }
        processInput(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        inactive = true
        closing = true
        timer?.cancel()
        timer = nil
        dataDeadline?.cancel()
        dataDeadline = nil
        pending = ByteBuffer()
        dataDecoder = nil
        chunk = nil
        assembler = nil
        if !machine.isAwaitingDecision {
            releaseBudget()
            reportClosed()
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is SMTPServerShutdownEvent {
            perform(context: context, machine.handle(.shutdown))
            context.flush()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("smtp connection error", metadata: ["error": "\(error)"])
        closing = true
        context.close(promise: nil)
    }

    // MARK: outbound (backpressure)

    func read(context: ChannelHandlerContext) {
        if mustHoldReads {
            readHeld = true
        } else {
            context.read()
        }
    }

    private var mustHoldReads: Bool {
        machine.isAwaitingDecision || pending.readableBytes >= configuration.maxPipelineBuffer
    }

    private func resumeReadsIfPossible(context: ChannelHandlerContext) {
        if readHeld, !mustHoldReads, !closing {
            readHeld = false
            context.read()
        }
    }

    // MARK: processing

    private func processInput(context: ChannelHandlerContext) {
        while !closing, !machine.isAwaitingDecision {
            if chunk == nil, assembler != nil, !machine.chunking {
                // The BDAT transaction was reset (RSET, a refusal): drop what it had collected.
                assembler = nil
                dataDeadline?.cancel()
                dataDeadline = nil
                releaseBudget()
            }
            if let current = chunk {
                let take = min(current.remaining, pending.readableBytes)
                if take > 0 {
                    if !current.discard {
                        reserveForChunk(take)
                        pending.withUnsafeReadableBytes { assembler!.append(UnsafeRawBufferPointer(rebasing: $0[0..<take])) }
                    }
                    pending.moveReaderIndex(forwardBy: take)
                    chunk!.remaining -= take
                }
                guard chunk!.remaining == 0 else { break }
                chunk = nil
                if current.discard {
                    // A refused chunk is gone; its reply was sent with the refusal.
                } else if current.last {
                    let outcome = assembler!.finish()
                    lastBareLineFeeds = assembler!.bareLineFeeds
                    assembler = nil
                    messageComplete(context: context, outcome)
                } else {
                    perform(context: context, machine.handle(.chunkReceived(size: current.size)))
                }
                if !closing, !machine.isAwaitingDecision { armTimer(context: context) }
                continue
            }
            if dataDecoder != nil {
                reserveForData()
                guard let outcome = dataDecoder!.feed(&pending) else { break }
                lastBareLineFeeds = dataDecoder!.bareLineFeeds
                dataDecoder = nil
                messageComplete(context: context, outcome)
                if !closing, !machine.isAwaitingDecision { armTimer(context: context) }
            } else {
                guard let event = lineDecoder.next(&pending) else { break }
                perform(context: context, machine.handle(.line(event)))
                if !closing, !machine.isAwaitingDecision, dataDecoder == nil { armTimer(context: context) }
            }
        }
        let buffered = pending.readableBytes + lineDecoder.bufferedByteCount + (dataDecoder?.bufferedByteCount ?? 0)
            + (assembler?.bufferedByteCount ?? 0)
        stats.observeBuffered(buffered)
        if pending.readableBytes == 0 {
            pending.clear()
        } else if pending.readerIndex > 16 * 1024 {
            pending.discardReadBytes()
        }
        context.flush()
        resumeReadsIfPossible(context: context)
    }

    private func perform(context: ChannelHandlerContext, _ actions: [SMTPServerStateMachine.Action]) {
        var actions = actions
        if let budget = configuration.inflightBudget, actions.contains(.startData) {
            // The DATA command: reserve what MAIL FROM's SIZE declared before the 354.
            let declared = machine.envelope?.mailParameters["SIZE"].flatMap { Int($0) } ?? 0
            if budget.tryReserve(declared) {
                reserved = declared
            } else {
                let reply = SMTPReply(.insufficientStorage)
                logger.info("smtp DATA refused: declared size exceeds the in-flight byte budget",
                            metadata: ["size": "\(declared)", "inUse": "\(budget.inUse)"])
                reportRefusal(reason: "in-flight DATA budget used up", reply: reply)
                actions = actions.filter { action in
                    switch action {
                    case .startData: return false
                    case .send(let r) where r.code == 354: return false
                    default: return true
                    }
                } + machine.handle(.abortData(reply))
            }
        }
        for action in actions {
            switch action {
            case .send(let reply):
                var out = context.channel.allocator.buffer(capacity: 64)
                reply.write(into: &out)
                if !reply.isPositive {
                    logger.debug("smtp reply", metadata: ["reply": "\(reply)"])
                }
                lastWrite = context.write(wrapOutboundOut(out))
            case .askMailFrom(let reversePath, let parameters):
                session.heloName = machine.heloName
                session.authenticatedAs = machine.authenticatedAs
                if session.tls, session.tlsVersion == nil, let version = try? context.pipeline.syncOperations.nioSSL_tlsVersion() {
                    session.tlsVersion = "\(version)"
                }
                let (session, delegate) = (self.session, self.delegate)
                ask(context: context, {
                    await delegate.mailFrom(session, reversePath: reversePath, parameters: parameters)
                }, then: { .mailDecision($0) })
            case .startTLS:
                guard let tls = configuration.tls else {
                    perform(context: context, [.close])
                    return
                }
                context.flush()
                pending.clear()
                lineDecoder.reset()
                do {
                    try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
                } catch {
                    logger.warning("could not start TLS", metadata: ["error": "\(error)"])
                    perform(context: context, [.close])
                    return
                }
                session.tls = true
                session.authenticatedAs = nil
                perform(context: context, machine.handle(.tlsStarted))
            case .refused(let reason, let reply):
                reportRefusal(reason: reason, reply: reply)
            case .askAuth(let username, let password):
                let (session, delegate) = (self.session, self.delegate)
                ask(context: context, {
                    await delegate.authenticate(session, username: username, password: password)
                }, then: { .authDecision($0) })
            case .askRcptTo(let envelope, let forwardPath, let parameters):
                let (session, delegate) = (self.session, self.delegate)
                ask(context: context, {
                    await delegate.rcptTo(session, envelope: envelope, forwardPath: forwardPath, parameters: parameters)
                }, then: { .rcptDecision($0) })
            case .askData(let asked, let message):
                var withCount = asked
                withCount.bareLineFeeds = lastBareLineFeeds
                let envelope = withCount
                let (session, delegate) = (self.session, self.delegate)
                ask(context: context, {
                    await delegate.dataReceived(session, envelope: envelope, message: message)
                }, then: { reply in
                    self.releaseBudget()
                    return .dataDecision(reply)
                })
            case .startData:
                lineDecoder.reset()
                dataDecoder = SMTPDataDecoder(maximumMessageSize: configuration.maxMessageSize,
                                              normalizeBareLineFeeds: configuration.normalizeBareLineFeeds,
                                              allocator: context.channel.allocator)
                armTimer(context: context)
                startDataDeadline(context: context)
            case .readChunk(let size, let last, let first):
                lineDecoder.reset()
                if first || assembler == nil {
                    assembler = SMTPChunkAssembler(maximumMessageSize: configuration.maxMessageSize,
                                                   normalizeBareLineFeeds: configuration.normalizeBareLineFeeds,
                                                   allocator: context.channel.allocator)
                    startDataDeadline(context: context)  // the whole BDAT transaction, as for DATA
                }
                chunk = (size, size, last, false)
                armTimer(context: context)
            case .discardChunk(let size):
                lineDecoder.reset()
                chunk = (size, size, false, true)
                armTimer(context: context)
            case .close:
                closing = true
                timer?.cancel()
                timer = nil
                dataDeadline?.cancel()
                dataDeadline = nil
                context.flush()
                if let lastWrite {
                    lastWrite.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                } else {
                    context.close(promise: nil)
                }
            }
        }
    }

    /// Runs a delegate call as a task; its result re-enters the state machine on the event loop.
    private func ask<T: Sendable>(
        context: ChannelHandlerContext,
        _ operation: @escaping @Sendable () async -> T,
        then makeInput: @escaping (T) -> SMTPServerStateMachine.Input
    ) {
        timer?.cancel()
        timer = nil
        context.flush()
        let promise = context.eventLoop.makePromise(of: T.self)
        promise.completeWithTask(operation)
        promise.futureResult.assumeIsolated().whenSuccess { value in
            if self.inactive {
                self.releaseBudget()
                self.reportClosed()
                return
            }
            self.perform(context: context, self.machine.handle(makeInput(value)))
            if !self.closing { self.armTimer(context: context) }
            self.processInput(context: context)
        }
    }

    private func armTimer(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        guard !closing, !machine.isAwaitingDecision else { return }
        let timeout = dataDecoder != nil || chunk != nil ? configuration.dataTimeout : configuration.commandTimeout
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            self.timer = nil
            guard !self.closing, !self.machine.isAwaitingDecision else { return }
            self.logger.info("smtp timeout", metadata: ["data": "\(self.dataDecoder != nil || self.chunk != nil)"])
            self.timedOut(context: context)
        }
    }

    /// Before message octets are buffered (DATA or a BDAT chunk): extends the reservation to
    /// cover them, or (budget used up) gives it back and makes the decoder or assembler discard
    /// the body from here on.
    private func reserveForData() {
        guard let decoder = dataDecoder else { return }
        if !reserve(holding: decoder.bufferedByteCount, adding: pending.readableBytes) { dataDecoder!.discardBody() }
    }

    private func reserveForChunk(_ adding: Int) {
        guard let held = assembler?.bufferedByteCount else { return }
        if !reserve(holding: held, adding: adding) { assembler!.discardBody() }
    }

    /// False when the budget is used up (and the reservation was given back).
    private func reserve(holding held: Int, adding: Int) -> Bool {
        guard let budget = configuration.inflightBudget, !overBudget else { return true }
        let need = min(held + adding, configuration.maxMessageSize)
        guard need > reserved else { return true }
        if budget.tryReserve(need - reserved) {
            reserved = need
            return true
        }
        overBudget = true
        budget.release(reserved)
        reserved = 0
        return false
    }

    /// The end of a DATA phase or of the LAST BDAT chunk: the message goes to the machine (and
    /// the delegate), unless the in-flight budget made the decoder drop it.
    private func messageComplete(context: ChannelHandlerContext, _ outcome: SMTPDataOutcome) {
        dataDeadline?.cancel()
        dataDeadline = nil
        if overBudget, case .message = outcome {
            let reply = SMTPReply(.insufficientStorage)
            logger.info("smtp message refused: in-flight byte budget used up")
            reportRefusal(reason: "in-flight DATA budget used up", reply: reply)
            perform(context: context, machine.handle(.abortData(reply)))
        } else {
            perform(context: context, machine.handle(.dataComplete(outcome)))
        }
        if !machine.isAwaitingDecision { releaseBudget() }
    }

    /// `maxDataDuration` for one DATA phase or one BDAT transaction (slow senders are cut off
    /// even when every read restarts the idle timer).
    private func startDataDeadline(context: ChannelHandlerContext) {
        dataDeadline?.cancel()
        dataDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: configuration.maxDataDuration) {
            self.dataDeadline = nil
            guard !self.closing, self.dataDecoder != nil || self.assembler != nil else { return }
            self.logger.info("smtp DATA deadline exceeded")
            self.timedOut(context: context)
        }
    }

    /// An idle timer or the data deadline ran out: drop what the message had, 421 and close.
    private func timedOut(context: ChannelHandlerContext) {
        dataDecoder = nil
        chunk = nil
        assembler = nil
        releaseBudget()
        perform(context: context, machine.handle(.timeout))
        context.flush()
    }

    /// Returns this session's reservation of the in-flight budget.
    private func releaseBudget() {
        overBudget = false
        guard reserved > 0 else { return }
        configuration.inflightBudget?.release(reserved)
        reserved = 0
    }

    /// Tells the delegate about a refusal the protocol layer made, without waiting.
    private func reportRefusal(reason: String, reply: SMTPReply) {
        var session = self.session
        session.heloName = machine.heloName
        session.authenticatedAs = machine.authenticatedAs
        delegate.protocolRefusal(session, reason: reason, reply: reply)
    }

    private func reportClosed() {
        guard !closedReported else { return }
        closedReported = true
        var session = self.session
        session.heloName = machine.heloName
        let delegate = self.delegate
        logger.debug("smtp connection closed")
        Task { await delegate.connectionClosed(session) }
    }
}
