import Hummingbird
import HTTPTypes
import SMGAdmin
import SMGCore
import SMGStore
import Foundation

/// The message search's query parameters, checked once for page and API.
enum MessageQueryInput {
    static let names = ["id", "sender", "recipient", "customer", "since", "until", "limit"]

    static func query(_ q: [String: String]) throws -> MessageQuery {
        func given(_ name: String) -> String? {
            guard let v = q[name]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
            return v
        }
        var query = MessageQuery(limit: try Admin.count(given("limit"), field: "limit", default: 50))
        if let id = given("id") { query.id = try Admin.messageID(id) }
        query.sender = given("sender")
        query.recipient = given("recipient")
        query.customer = given("customer")
        query.sinceMilliseconds = try time(given("since"), field: "since")
        query.untilMilliseconds = try time(given("until"), field: "until")
        if let since = query.sinceMilliseconds, let until = query.untilMilliseconds, since > until {
            throw Failure.badRequest("since", "is after until")
        }
        return query
    }

    /// ISO 8601 (`2026-11-23T05:00:00Z`, `…+01:00`, `2026-11-23T05:00` and `2026-11-23` as UTC)
    /// or milliseconds since the epoch.
    static func time(_ text: String?, field: String) throws -> Int64? {
        guard let text else { return nil }
        if text.allSatisfy({ $0.isASCII && $0.isNumber }), text.count <= 15, let ms = Int64(text) { return ms }
        var candidates = [text]
        if text.count == 10 { candidates.append(text + "T00:00:00Z") }
        if text.count == 16 { candidates.append(text + ":00Z") }
        if text.count == 19 { candidates.append(text + "Z") }
        for candidate in candidates {
            if let date = Timestamp.parse(candidate) { return Int64((date.timeIntervalSince1970 * 1000).rounded()) }
        }
        throw Failure.badRequest(field, "\"\(text)\" is not a time (ISO 8601, e.g. 2026-11-23T05:00:00Z, or ms since the epoch)")
    }
}

extension Admin {
    var messageSearch: MessageSearch { MessageSearch(store: process.store) }

    func messageRoutes(_ router: Router<AdminContext>) {
        // MARK: API

        router.get("/api/v1/messages") { request, context -> Response in
            let result = try await messageSearch.search(try MessageQueryInput.query(request.query))
            var response = JSONOut.response(JSONValue.array(result.messages.map { .object($0.json) }))
            // Whether the scan reached the start of the range (else: narrow it with since/until).
            response.headers[HTTPField.Name("X-SMG-Search-Complete")!] = result.complete ? "true" : "false"
            response.headers[HTTPField.Name("X-SMG-Search-Scanned")!] = String(result.scanned)
            return response
        }

        router.get("/api/v1/messages/:id/trace") { request, context -> Response in
            let id = try Self.messageID(try context.param("id"))
            let events = try await process.store.events(of: id)
            guard !events.isEmpty else { throw Failure.notFound("id", "no events for message \(id) (unknown, or expired)") }
            return JSONOut.response(JSONValue.array(events.map(Self.eventJSON)))
        }

        // MARK: Pages

        router.get("/messages") { request, context -> Response in
            let q = request.query
            do {
                let query = try MessageQueryInput.query(q)
                let result = try await messageSearch.search(query)
                return Page.render("Messages", context, request: request, body: Self.searchPage(q, result: result, failure: nil))
            } catch {
                guard let failure = Failure.from(error), failure.status == .badRequest else { throw error }
                return Page.render("Messages", context, request: request, status: failure.status,
                                   body: Self.searchPage(q, result: nil, failure: failure))
            }
        }

        router.get("/messages/:id") { request, context -> Response in
            let id = try Self.messageID(try context.param("id"))
            async let events = process.store.events(of: id)
            async let located = queueAdmin.locate(id)
            let (trace, item) = try await (events, located)
            guard !trace.isEmpty || item.exists else {
                throw Failure.notFound("id", "no message \(id) (unknown, or expired)")
            }
            return Page.render("Message \(id)", context, request: request, body: Self.messagePage(item, trace: trace, context: context))
        }
    }

    /// An event in its wire form (as taps and `smgctl trace` show it), as a JSON value.
    static func eventJSON(_ event: Event) -> JSONValue {
        (try? JSONDecoder().decode(JSONValue.self, from: Data(event.jsonBytes()))) ?? .null
    }

    // MARK: Page parts

    static func searchPage(_ q: [String: String], result: MessageSearchResult?, failure: Failure?) -> String {
        let form = """
            <form method="get" action="/messages" id="message-search">
            \(Page.input("id", "Message id", value: q["id"]))
            \(Page.input("sender", "Sender (address, @domain, <> for the null sender)", value: q["sender"]))
            \(Page.input("recipient", "Recipient (address or @domain)", value: q["recipient"]))
            \(Page.input("customer", "Customer", value: q["customer"]))
            \(Page.input("since", "Since (ISO 8601 UTC, or ms since the epoch)", value: q["since"]))
            \(Page.input("until", "Until", value: q["until"]))
            \(Page.input("limit", "At most", value: q["limit"] ?? "50"))
            <button id="search-messages">Search</button> <a href="/messages">Reset</a></form>
            """
        guard let result else { return Page.error(failure) + form }
        let rows = result.messages.map { m -> [String] in
            ["<a href=\"/messages/\(Page.segment(m.id.rawValue))\" class=\"mono\">\(Page.escape(m.id.rawValue))</a>",
             Page.escape(Timestamp.format(m.time)), Page.escape(m.sender.isEmpty ? "<>" : m.sender),
             Page.escape(m.recipients?.joined(separator: ", ") ?? m.recipientCount.map { "\($0) (record expired)" } ?? "?"),
             Page.escape(m.customer ?? "-"), Page.escape(m.state ?? "-")]
        }
        let note = result.complete ? ""
            : "<p class=\"note\" id=\"search-incomplete\">Stopped after reading \(result.scanned) events; older messages may match: narrow the time range.</p>"
        return Page.error(failure) + form + note
            + Page.table(["id", "accepted", "sender", "recipients", "customer", "state"], rows, id: "messages", empty: "No messages found.")
    }

    static func messagePage(_ item: QueueItem, trace: [Event], context: AdminContext) -> String {
        var out = ""
        if let e = item.envelope {
            let s = e.submission
            let facts: [(String, String)] = [
                ("sender", e.sender.isEmpty ? "<>" : e.sender), ("customer", e.customer ?? "-"), ("login", s.authenticatedAs ?? "-"),
                ("client", s.clientAddress.isEmpty ? "(the gateway)" : s.clientAddress), ("helo", s.heloName ?? "-"),
                ("tls", s.tls ? [s.tlsVersion, s.cipher].compactMap { $0 }.joined(separator: " ").ifEmpty("yes") : "no"),
                ("received", Timestamp.format(s.receivedAt)), ("received by", s.ingress), ("size", "\(s.size) bytes"),
            ]
            out += "<h2>Envelope</h2><table id=\"envelope\"><tbody>"
                + facts.map { "<tr><th>\(Page.escape($0.0))</th><td>\(Page.escape($0.1))</td></tr>" }.joined() + "</tbody></table>"
            let rows = item.recipients.map { r -> [String] in
                [Page.escape(r.address), Page.escape(r.state.rawValue), "\(r.attempts)", Page.escape(r.lastReply ?? "-"),
                 Page.escape(r.nextAttempt.map(Timestamp.format) ?? "-")]
            }
            out += "<h2>Recipients</h2>" + Page.table(["recipient", "state", "attempts", "last reply", "next attempt"], rows, id: "recipients")
        } else if item.exists {
            out += "<p class=\"error\">The message record has no readable envelope.</p>"
        } else {
            out += "<p class=\"note\">The message record is gone (expired or never stored); its events follow.</p>"
        }
        if item.exists {
            out += "<h2>Queue</h2><table id=\"queue-state\"><tbody>"
                + [("where", item.whereText), ("state", item.stateName), ("record state", item.fields["state"] ?? "-"),
                   ("age", QueueText.duration(item.ageMilliseconds)), ("body", "\(item.bodySize) bytes")]
                    .map { "<tr><th>\(Page.escape($0.0))</th><td>\(Page.escape($0.1))</td></tr>" }.joined()
                + "</tbody></table>"
            let buttons = queueButtons(item, context: context, hidden: "<input type=\"hidden\" name=\"from\" value=\"message\">")
            if !buttons.isEmpty { out += "<p id=\"message-actions\">\(buttons)</p>" }
        }
        let events = trace.map { e -> String in
            let facts = e.facts.isEmpty ? "" : " <code class=\"facts\">\(Page.escape(compact(.object(e.facts))))</code>"
            return "<div class=\"event\" data-type=\"\(Page.escape(e.type))\"><b class=\"type\">\(Page.escape(e.type))</b>"
                + " <time datetime=\"\(Page.escape(Timestamp.format(e.time)))\">\(Page.escape(Timestamp.format(e.time)))</time>"
                + " <span class=\"process\">\(Page.escape(e.process))</span> <span class=\"site\">\(Page.escape(e.site))</span>"
                + facts + "</div>"
        }
        out += "<h2>Trace</h2>"
            + (events.isEmpty ? "<p class=\"empty\">No events (expired).</p>" : "<div id=\"trace\">" + events.joined() + "</div>")
            + "<p><a href=\"/api/v1/messages/\(Page.segment(item.id.rawValue))/trace\">Trace as JSON</a></p>"
        return out
    }

    /// The queue actions that apply to a message where it sits (buttons for admins, nothing for
    /// viewers); `hidden` says where to go back to (`back` = the queue filter, or `from=message`).
    static func queueButtons(_ item: QueueItem, context: AdminContext, hidden: String) -> String {
        let path = "/queue/\(Page.segment(item.id.rawValue))"
        let reason = "<input type=\"text\" name=\"reason\" placeholder=\"reason\" required size=\"14\">"
        var out = ""
        switch item.location {
        case .pending:
            out += Page.form("\(path)/hold", context, button: "Hold", inline: true, fields: hidden)
            out += Page.form("\(path)/requeue", context, button: "Requeue", inline: true, fields: hidden)
        case .held:
            out += Page.form("\(path)/release", context, button: "Release", inline: true, fields: hidden)
            out += Page.form("\(path)/requeue", context, button: "Requeue", inline: true, fields: hidden)
        case .quarantined:
            out += Page.form("\(path)/release", context, button: "Release", inline: true, fields: hidden)
        case .nowhere:
            return ""
        }
        if case .quarantined = item.location {} else {
            out += Page.form("\(path)/bounce", context, button: "Bounce", confirm: "Bounce \(item.id) to its sender?", inline: true,
                             fields: hidden + reason)
        }
        out += Page.form("\(path)/delete", context, button: "Delete", confirm: "Delete \(item.id) without delivering it?", inline: true,
                         fields: hidden + reason)
        return out
    }
}

extension String {
    fileprivate func ifEmpty(_ replacement: String) -> String { isEmpty ? replacement : self }
}
