import Hummingbird
import HTTPTypes
import SMGAdmin
import SMGCore
import SMGNDR
import SMGRuntime
import SMGStore
import Foundation

/// The queue operations the API and the page offer: `QueueAdmin`'s, as `smgctl queue` has them.
enum QueueVerb: String, CaseIterable {
    case hold, release, bounce, delete, requeue

    /// The words of the result notice ("held", "released", …).
    var done: String {
        switch self {
        case .hold: "held"
        case .release: "released"
        case .bounce: "bounced"
        case .delete: "deleted"
        case .requeue: "requeued"
        }
    }
}

/// The queue's query parameters, checked once for page and API (every error names the parameter).
enum QueueQuery {
    static let names = ["topic", "state", "sender", "recipient_domain", "customer", "older_than", "limit"]

    static func filter(_ query: [String: String]) throws -> QueueFilter {
        func given(_ name: String) -> String? {
            guard let v = query[name]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
            return v
        }
        var filter = QueueFilter(limit: try Admin.count(given("limit"), field: "limit", default: 100))
        if let topic = given("topic") {
            guard Topic.all.contains(topic) else {
                throw Failure.badRequest("topic", "unknown topic \"\(topic)\" (one of \(Topic.all.joined(separator: ", ")))")
            }
            filter.topic = topic
        }
        if let state = given("state") {
            guard let s = QueueState(rawValue: state) else {
                throw Failure.badRequest("state", "unknown state \"\(state)\" (one of \(QueueState.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            filter.state = s
        }
        if let older = given("older_than") {
            guard let ms = duration(older) else {
                throw Failure.badRequest("older_than", "\"\(older)\" is not a duration (e.g. 30s, 5m, 2h, 1d, or milliseconds)")
            }
            filter.olderThanMilliseconds = ms
        }
        filter.sender = given("sender")
        filter.recipientDomain = given("recipient_domain").map { $0.hasPrefix("@") ? String($0.dropFirst()) : $0 }
        filter.customer = given("customer")
        return filter
    }

    /// `30s`, `5m`, `2h`, `1d`, `250ms`, or a plain number of milliseconds.
    static func duration(_ text: String) -> Int64? {
        if !text.isEmpty, text.allSatisfy(\.isASCII), text.allSatisfy(\.isNumber) { return Int64(text) }
        guard text.last?.isLetter == true, let d = parseDuration(text) else { return nil }
        return Int64(d.milliseconds)
    }

    /// The filter parameters of `query` that are set, as a query string ("" when none), for links
    /// and for the way back after an action.
    static func string(_ query: [String: String]) -> String {
        let parts = names.compactMap { name -> String? in
            guard let v = query[name], !v.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
            return name + "=" + (v.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~@"))) ?? "")
        }
        return parts.isEmpty ? "" : "?" + parts.joined(separator: "&")
    }
}

extension Admin {
    var queueAdmin: QueueAdmin { QueueAdmin(store: process.store, site: process.site, process: process.instance) }

    func queueRoutes(_ router: Router<AdminContext>) {
        // MARK: API

        router.get("/api/v1/queue") { request, context -> Response in
            let filter = try QueueQuery.filter(request.query)
            let admin = queueAdmin
            let summary = try await admin.summary()
            let items = try await admin.list(filter)
            return JSONOut.response(JSONValue.object([
                "summary": Self.summaryJSON(summary),
                "items": .array(items.map { .object($0.listing) }),
            ]))
        }

        router.post("/api/v1/queue/:id/:action") { request, context -> Response in
            let verb = try Self.queueVerb(try context.param("action"))
            let id = try Self.messageID(try context.param("id"))
            let input = try await Input.read(request, context: context, fields: ["reason", "stage"])
            let result = try await queueAction(id, verb, input, by: try context.who)
            return JSONOut.response(JSONValue.object(["id": .string(id.rawValue), "result": Self.resultJSON(verb, result)]))
        }

        // MARK: Pages

        router.get("/queue") { request, context -> Response in
            let query = request.query
            do {
                let filter = try QueueQuery.filter(query)
                return Page.render("Queue", context, request: request,
                                   body: try await queuePage(query, filter: filter, context: context, failure: nil))
            } catch {
                guard let failure = Failure.from(error), failure.status == .badRequest else { throw error }
                return Page.render("Queue", context, request: request, status: failure.status,
                                   body: try await queuePage(query, filter: nil, context: context, failure: failure))
            }
        }

        router.post("/queue/:id/:action") { request, context -> Response in
            let verb = try Self.queueVerb(try context.param("action"))
            let id = try Self.messageID(try context.param("id"))
            let input = try await Input.read(request, context: context, fields: ["reason", "stage", "back", "from"])
            // The way back: the filter the page showed (only the known parameters), or the message page.
            let backQuery = Form((try input.string("back")).map { $0.hasPrefix("?") ? String($0.dropFirst()) : $0 } ?? "").values
            let toMessage = try input.string("from") == "message"
            let back = toMessage ? "/messages/\(Page.segment(id.rawValue))" : "/queue" + QueueQuery.string(backQuery)
            do {
                let result = try await queueAction(id, verb, input, by: try context.who)
                return redirect(back, notice: Self.resultText(verb, result))
            } catch {
                guard !toMessage, let failure = Failure.from(error), failure.status != .internalServerError else { throw error }
                let filter = try? QueueQuery.filter(backQuery)
                return Page.render("Queue", context, request: request, status: failure.status,
                                   body: try await queuePage(backQuery, filter: filter, context: context, failure: failure))
            }
        }
    }

    // MARK: The operation (shared by page and API)

    /// Runs one `QueueAdmin` action as `who` (the operator name its event records) and audits it.
    /// `reason` is required for bounce and delete; `stage` is for requeue only.
    func queueAction(_ id: MessageID, _ verb: QueueVerb, _ input: Input, by who: Principal) async throws -> QueueActionResult {
        var reason = try input.string("reason").map {
            $0.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        }
        if reason?.isEmpty == true { reason = nil }
        if let reason, reason.count > 500 { throw Failure.badRequest("reason", "at most 500 characters") }
        if (verb == .bounce || verb == .delete) && reason == nil {
            throw Failure.badRequest("reason", "required to \(verb.rawValue) a message")
        }
        var stage: QueueStage?
        if let text = try input.string("stage"), !text.isEmpty {
            guard verb == .requeue else { throw Failure.badRequest("stage", "only requeue takes a stage") }
            guard let s = QueueStage(rawValue: text) else {
                throw Failure.badRequest("stage", "unknown stage \"\(text)\" (one of \(QueueStage.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            stage = s
        }
        let admin = queueAdmin
        let result: QueueActionResult
        do {
            switch verb {
            case .hold: result = try await admin.hold(id, reason: reason, operator: who.name)
            case .release: result = try await admin.release(id, operator: who.name)
            case .delete: result = try await admin.delete(id, reason: reason ?? "", operator: who.name)
            case .requeue: result = try await admin.requeue(id, stage: stage, operator: who.name)
            case .bounce:
                let config = process.config
                let domain = (try? config.get(NDRKeys.domain)) ?? "localhost"
                let mta = (try? config.get(NDRKeys.reportingMTA)) ?? ""
                let (site, instance) = (process.site, process.instance)
                let why = reason ?? ""
                result = try await admin.bounce(id, reason: why, operator: who.name) { message, bounced in
                    NDRSender.prepare(for: message, bounced: bounced, reason: "an operator bounced it: \(why)",
                                      kind: NDRSender.operatorBounceKind, domain: domain, reportingMTA: mta,
                                      site: site, process: instance)
                }
            }
        } catch let error as QueueError {
            if error.code == .unknownMessage { throw Failure.notFound("id", "no message \(id) (unknown, or expired)") }
            throw Failure(.conflict, field: nil, "\(id) \(error.message)")
        }
        var after: [String: JSONValue] = ["where": .string(result.to)]
        if let reason { after["reason"] = .string(reason) }
        if let stage { after["stage"] = .string(stage.rawValue) }
        if let ndr = result.ndr { after["ndr"] = .string(ndr.rawValue) }
        await audited(who, "queue.\(verb.rawValue)", target: id.rawValue, before: .object(["where": .string(result.from)]),
                      after: .object(after))
        return result
    }

    static func queueVerb(_ text: String) throws -> QueueVerb {
        guard let verb = QueueVerb(rawValue: text) else {
            throw Failure.notFound("action", "no action \"\(text)\" (\(QueueVerb.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return verb
    }

    static func messageID(_ text: String) throws -> MessageID {
        guard let id = MessageID(text) else { throw Failure.badRequest("id", "\"\(text)\" is not a message id (ULID)") }
        return id
    }

    static func summaryJSON(_ s: QueueSummary) -> JSONValue {
        .object(["pending": .object(s.pending.mapValues { .int($0) }), "held": .int(s.held), "quarantined": .int(s.quarantined)])
    }

    /// `{action, from, to, events: [type], bounced: [address], ndr}`.
    static func resultJSON(_ verb: QueueVerb, _ r: QueueActionResult) -> JSONValue {
        var o: [String: JSONValue] = [
            "action": .string(verb.rawValue), "from": .string(r.from), "to": .string(r.to),
            "events": .array(r.events.map { .string($0.type) }), "ndr": r.ndr.map { .string($0.rawValue) } ?? .null,
        ]
        if verb == .bounce {
            o["bounced"] = .array(r.events.filter { $0.type == EventType.bounced }.compactMap { $0.facts["recipient"] })
        }
        return .object(o)
    }

    /// What the page says after an action (as `smgctl queue` does).
    static func resultText(_ verb: QueueVerb, _ r: QueueActionResult) -> String {
        switch verb {
        case .hold: return "\(r.id) held (was in \(r.from))."
        case .release: return "\(r.id) released into \(r.to)."
        case .delete: return "\(r.id) deleted (was in \(r.from))."
        case .requeue: return "\(r.id) requeued from \(r.from) into \(r.to)."
        case .bounce:
            let count = r.events.filter { $0.type == EventType.bounced }.count
            return "\(r.id) bounced \(count) recipient(s) (was in \(r.from)); " + (r.ndr.map { "NDR \($0) queued." } ?? "no NDR (null sender).")
        }
    }

    // MARK: Page parts

    func queuePage(_ query: [String: String], filter: QueueFilter?, context: AdminContext, failure: Failure?) async throws -> String {
        let admin = queueAdmin
        let summary = try await admin.summary()
        var items: [QueueItem] = []
        if let filter { items = try await admin.list(filter) }
        let back = QueueQuery.string(query)
        var summaryRows = Topic.all.map { topic in
            ["<a href=\"/queue?topic=\(Page.segment(topic))\">\(Page.escape(topic))</a>", "\(summary.pending[topic] ?? 0)"]
        }
        summaryRows.append(["<a href=\"/queue?state=held\">held</a>", "\(summary.held)"])
        summaryRows.append(["<a href=\"/queue?state=quarantined\">quarantined</a>", "\(summary.quarantined)"])
        func value(_ name: String) -> String? { query[name].flatMap { $0.isEmpty ? nil : $0 } }
        let form = """
            <form method="get" action="/queue" id="queue-filter">
            \(Page.select("topic", "Stage", options: [""] + Topic.all, selected: value("topic") ?? ""))
            \(Page.select("state", "State", options: [""] + QueueState.allCases.map(\.rawValue), selected: value("state") ?? ""))
            \(Page.input("sender", "Sender (exact; <> for the null sender)", value: query["sender"]))
            \(Page.input("recipient_domain", "Recipient domain", value: query["recipient_domain"]))
            \(Page.input("customer", "Customer", value: query["customer"]))
            \(Page.input("older_than", "Older than (30s, 5m, 2h, 1d)", value: query["older_than"]))
            \(Page.input("limit", "At most", value: query["limit"] ?? "100"))
            <button id="filter-queue">Show</button> <a href="/queue">Reset</a></form>
            """
        let backField = "<input type=\"hidden\" name=\"back\" value=\"\(Page.escape(back))\">"
        let rows = items.map { item -> [String] in
            let actions = Self.queueButtons(item, context: context, hidden: backField)
            let sender = item.envelope.map { $0.sender.isEmpty ? "<>" : $0.sender } ?? "?"
            return ["<a href=\"/messages/\(Page.segment(item.id.rawValue))\" class=\"mono\">\(Page.escape(item.id.rawValue))</a>",
                    Page.escape(item.location.topic ?? item.location.name), Page.escape(item.stateName),
                    Page.escape(QueueText.duration(item.ageMilliseconds)), Page.escape(sender),
                    item.envelope.map { String($0.recipients.count) } ?? "?", Page.escape(item.nextDeadlineText),
                    Page.escape(item.envelope?.customer ?? "-"), actions]
        }
        return Page.error(failure)
            + Page.table(["stage", "messages"], summaryRows, id: "queue-summary")
            + form
            + Page.table(["id", "stage", "state", "age", "sender", "rcpts", "next", "customer", ""], rows, id: "queue",
                         empty: filter == nil ? "Fix the filter." : "No messages match.")
    }
}
