import SMGCore
import SMGSync
import SMGRuntime
import SMGStore
import SMGBus
import SMTPServer
import SMTPProtocol
import NIOCore
import Logging
import Metrics
import ServiceLifecycle
import Foundation

/// The SMTP side of ingress: every accepted message is stored in Redis (record, body,
/// `accepted` event, pending entry for the scanners) in one atomic script BEFORE the 250 is
/// sent; only then is its id published on `mail.accepted`. A lost frame costs latency (redrive),
/// never mail; a failed store costs the client a 451 and a retry, never a silent drop.
final class IngressDelegate: SMTPServerDelegate {
    let process: GatewayProcess
    let producer: BusPusher
    let hostname: String
    let allow: NetworkList
    let maxPending: Int
    let redriveAfter: Int
    let pending = Locked(0)
    let accepted = Counter(label: "smg_ingress_accepted_total")
    let refused = Counter(label: "smg_ingress_refused_total")
    let storeFailures = Counter(label: "smg_ingress_store_failures_total")

    init(process: GatewayProcess, producer: BusPusher) throws {
        self.process = process
        self.producer = producer
        hostname = try process.config.get(IngressKeys.hostname)
        allow = try process.config.get(IngressKeys.allowNetworks)
        maxPending = try process.config.get(IngressKeys.maxPending)
        redriveAfter = try process.config.get(StageKeys.redriveAfter).milliseconds
    }

    func connectionOpened(_ session: SMTPSessionInfo) async -> SMTPReply? {
        let ip = session.remoteAddress?.ipAddress ?? ""
        guard allow.contains(ip) else {
            refused.increment()
            await recordRefusal(session, reason: "client network not allowed", reply: "554 5.7.1")
            return SMTPReply(code: 554, enhanced: "5.7.1", lines: ["Access denied"])
        }
        return nil
    }

    func mailFrom(_ session: SMTPSessionInfo, reversePath: String, parameters: [String: String]) async -> SMTPReply? {
        if pending.withLock({ $0 }) > maxPending {
            refused.increment()
            return SMTPReply(code: 451, enhanced: "4.3.2", lines: ["System busy, try again later"])
        }
        return nil
    }

    func rcptTo(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, forwardPath: String,
                parameters: [String: String]) async -> SMTPReply? {
        nil
    }

    func dataReceived(_ session: SMTPSessionInfo, envelope: SMTPEnvelope, message: ByteBuffer) async -> SMTPReply {
        let id = MessageID.make()
        var logger = process.logger
        logger[metadataKey: "msgid"] = .string(id.rawValue)
        let now = Date()
        var body = Array(receivedHeader(id: id, session: session, envelope: envelope, date: now).utf8)
        body.append(contentsOf: message.readableBytesView)
        let facts = SubmissionFacts(
            clientAddress: session.remoteAddress?.ipAddress ?? "", heloName: session.heloName, tls: session.tls,
            authenticatedAs: nil, site: process.site, ingress: process.instance, receivedAt: now, size: body.count)
        let env = Envelope(customer: nil, sender: envelope.reversePath,
                           recipients: envelope.recipients.map { Recipient(address: $0) }, submission: facts)
        let event = process.event(EventType.accepted, id: id, facts: [
            "sender": .string(envelope.reversePath), "recipients": .int(envelope.recipients.count),
            "size": .int(body.count), "tls": .bool(session.tls), "session": .string(session.id),
        ])
        do {
            try await process.store.accept(id: id, envelope: env, body: body, event: event, topic: Topic.accepted,
                                           redriveAfterMilliseconds: redriveAfter)
        } catch {
            storeFailures.increment()
            logger.error("could not store message; answering 451", metadata: ["error": "\(error)"])
            return SMTPReply(code: 451, enhanced: "4.3.0", lines: ["Temporary failure storing the message, try again later"])
        }
        accepted.increment()
        logger.info("accepted", metadata: ["size": "\(body.count)", "recipients": "\(envelope.recipients.count)"])
        await process.publish([event])
        let producer = self.producer
        Task {
            // The record is durable: if this frame is lost, redrive delivers the message to a scanner.
            _ = await producer.send(BusMessage(topic: Topic.accepted, payload: Array(id.rawValue.utf8)),
                                    timeout: .milliseconds(500))
        }
        return SMTPReply(code: 250, enhanced: "2.0.0", lines: ["Ok: queued as \(id)"])
    }

    func connectionClosed(_ session: SMTPSessionInfo) async {}

    func recordRefusal(_ session: SMTPSessionInfo, reason: String, reply: String) async {
        let event = process.event(EventType.rejectedPolicy, id: nil, facts: [
            "client": .string(session.remoteAddress?.ipAddress ?? ""), "reason": .string(reason), "reply": .string(reply),
        ])
        try? await process.record([event])
    }

    /// Our Received header. It names the customer's HELO but not its IP address (R8: the
    /// customer's original address is not shown to recipients).
    func receivedHeader(id: MessageID, session: SMTPSessionInfo, envelope: SMTPEnvelope, date: Date) -> String {
        let helo = (session.heloName ?? "unknown").filter { $0.isASCII && !$0.isWhitespace && $0 != ";" }
        let with = session.tls ? "ESMTPS" : "ESMTP"
        let forClause = envelope.recipients.count == 1 ? "\r\n\tfor <\(envelope.recipients[0])>" : ""
        return "Received: from \(helo)\r\n\tby \(hostname) (smg-ingress) with \(with) id \(id)\(forClause);\r\n\t\(RFC5322Date.format(date))\r\n"
    }

    /// Keeps the backpressure figure fresh without a Redis call per MAIL command.
    func watchPending() async {
        while !Task.isCancelled {
            if let count = try? await process.store.pendingCount(Topic.accepted) { pending.withLock { $0 = count } }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }
}

/// Runs the SMTP listener until SIGTERM, then stops accepting and lets sessions finish.
struct IngressService: Service {
    let process: GatewayProcess
    let delegate: IngressDelegate
    let configuration: SMTPServerConfiguration
    let host: String
    let port: Int

    func run() async throws {
        let server = try await SMTPServer.start(host: host, port: port, configuration: configuration,
                                                delegate: delegate, group: process.group, logger: process.logger)
        process.logger.info("SMTP listening", metadata: ["address": "\(server.localAddress.map { "\($0)" } ?? "?")"])
        let watcher = Task { await delegate.watchPending() }
        try? await gracefulShutdown()
        watcher.cancel()
        try await server.close()
    }
}

enum RFC5322Date {
    static func format(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&t, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(parts.tm_wday)]), \(parts.tm_mday) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) +0000"
    }
}
