public import AsyncHTTPClient
import SMGCore
public import NIOCore
import Foundation

/// The optional rspamd backend: the message goes to rspamd's `/checkv2` (its normal worker, HTTP)
/// with the envelope in request headers; rspamd's action, score and symbols map to our category,
/// score and reasons. Our own engine stays the default and needs no external service.
public struct RspamdClient: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public let url: String
    public let timeout: TimeAmount
    let client: HTTPClient

    /// `url`: the worker's base URL, e.g. `http://127.0.0.1:11333`.
    public init(url: String, timeout: TimeAmount = .seconds(10), client: HTTPClient = .shared) {
        self.url = url.hasSuffix("/") ? String(url.dropLast()) : url
        self.timeout = timeout
        self.client = client
    }

    /// The facts rspamd is told about a message.
    public struct Envelope: Sendable {
        public var sender: String
        public var recipients: [String]
        public var clientAddress: String?
        public var helo: String?
        public var login: String?
        public var queueID: String?

        public init(sender: String, recipients: [String], clientAddress: String? = nil, helo: String? = nil,
                    login: String? = nil, queueID: String? = nil) {
            self.sender = sender
            self.recipients = recipients
            self.clientAddress = clientAddress
            self.helo = helo
            self.login = login
            self.queueID = queueID
        }
    }

    /// rspamd's verdict as it sent it.
    public struct Result: Sendable, Hashable {
        public var action: String
        public var score: Double
        public var requiredScore: Double
        public var symbols: [RuleHit]
        /// rspamd's own text for the SMTP reply (`messages.smtp_message`), e.g. GTUBE's, which
        /// scores through the action alone (its symbol carries 0 points).
        public var message: String?
    }

    public func check(_ raw: [UInt8], envelope: Envelope) async throws -> Result {
        var request = HTTPClientRequest(url: "\(url)/checkv2")
        request.method = .POST
        request.headers.add(name: "From", value: envelope.sender)
        for r in envelope.recipients { request.headers.add(name: "Rcpt", value: r) }
        if let ip = envelope.clientAddress, !ip.isEmpty { request.headers.add(name: "IP", value: ip) }
        if let helo = envelope.helo, !helo.isEmpty { request.headers.add(name: "Helo", value: helo) }
        if let login = envelope.login, !login.isEmpty { request.headers.add(name: "User", value: login) }
        if let id = envelope.queueID { request.headers.add(name: "Queue-Id", value: id) }
        request.body = .bytes(ByteBuffer(bytes: raw))
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: timeout)
        } catch {
            throw Failure(description: "rspamd at \(url) did not answer: \(error)")
        }
        guard response.status == .ok else {
            throw Failure(description: "rspamd at \(url) answered HTTP \(response.status.code)")
        }
        let body = try await response.body.collect(upTo: 4 * 1024 * 1024)
        return try Self.parse(Array(body.readableBytesView))
    }

    static func parse(_ bytes: [UInt8]) throws -> Result {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw Failure(description: "rspamd's reply is not a JSON object")
        }
        guard let action = object["action"] as? String, let score = (object["score"] as? NSNumber)?.doubleValue else {
            throw Failure(description: "rspamd's reply has no action or score")
        }
        let required = (object["required_score"] as? NSNumber)?.doubleValue ?? 15
        var symbols: [RuleHit] = []
        for (name, value) in (object["symbols"] as? [String: Any]) ?? [:] {
            guard let symbol = value as? [String: Any] else { continue }
            let points = (symbol["score"] as? NSNumber)?.doubleValue ?? 0
            var text = (symbol["description"] as? String) ?? name
            if let options = symbol["options"] as? [String], !options.isEmpty {
                text += " (\(options.prefix(3).joined(separator: ", ")))"
            }
            symbols.append(RuleHit(name: name, points: points, description: text))
        }
        symbols.sort { $0.points != $1.points ? $0.points > $1.points : $0.name < $1.name }
        let message = (object["messages"] as? [String: Any])?["smtp_message"] as? String
        return Result(action: action, score: score, requiredScore: required, symbols: symbols, message: message)
    }

    /// rspamd's action → our category: `reject` is spam; `add header`, `rewrite subject` and
    /// `soft reject` are suspect; `greylist` and `no action` are clean (bulk when a list header
    /// marks it). The score is rspamd's own.
    public static func verdict(_ result: Result, policy: SpamPolicy, bulk: Bool) -> SpamVerdict {
        let category: SpamCategory
        switch result.action {
        case "reject": category = .spam
        case "add header", "rewrite subject", "soft reject": category = .suspect
        default: category = bulk ? .bulk : .clean
        }
        var scored = result.symbols.filter { $0.points != 0 }
        if let message = result.message, !message.isEmpty {
            scored.insert(RuleHit(name: "RSPAMD_\(result.action.uppercased().replacingOccurrences(of: " ", with: "_"))",
                                  points: 0, description: message), at: 0)
        }
        return SpamVerdict(category: category, score: result.score, lane: policy.lane(for: category),
                           probability: 0.5, rules: scored, evidence: [], engine: "rspamd")
    }
}
