import Hummingbird
import SMGAdmin
import SMGCore
import SMGTLSPolicy
import Foundation

/// Forced TLS rules as the API and the forms name their fields, and the one place that turns
/// input into a rule (`ForcedTLSRule.make`, as `smgctl tls rule add`).
enum TLSRuleFields {
    static let all = ["sender", "recipient", "mx_host", "level", "fingerprints", "action", "comment"]

    static func json(_ r: ForcedTLSRule) -> JSONValue {
        .object([
            "id": .string(r.id), "sender": r.sender.map { .string($0) } ?? .null,
            "recipient": r.recipient.map { .string($0) } ?? .null, "mx_host": r.mxHost.map { .string($0) } ?? .null,
            "level": .string(r.level.rawValue), "fingerprints": .array(r.fingerprints.map { .string($0) }),
            "action": .string(r.action.rawValue), "comment": .string(r.comment),
        ])
    }

    /// `ForcedTLSRule.Invalid` names smgctl's options; the API names its JSON fields.
    static func field(_ argument: String) -> String {
        switch argument {
        case "--sender", "--sender/--recipient": "sender"
        case "--recipient": "recipient"
        case "--mx-host": "mx_host"
        case "--level": "level"
        case "--fingerprint": "fingerprints"
        case "--action": "action"
        case "--comment": "comment"
        default: argument.hasPrefix("--") ? String(argument.dropFirst(2)) : argument
        }
    }

    static func problem(_ e: ForcedTLSRule.Invalid) -> String {
        e.problem.replacingOccurrences(of: "--fingerprint", with: "fingerprint").replacingOccurrences(of: "--level", with: "level")
    }

    static func rule(from input: Input) throws -> ForcedTLSRule {
        let comment = try input.string("comment") ?? ""
        guard comment.count <= 500 else { throw Failure.badRequest("comment", "at most 500 characters") }
        do {
            return try ForcedTLSRule.make(sender: try input.string("sender"), recipient: try input.string("recipient"),
                                          mxHost: try input.string("mx_host"), level: try input.required("level"),
                                          fingerprints: try input.list("fingerprints") ?? [], action: try input.string("action"),
                                          comment: comment)
        } catch let e as ForcedTLSRule.Invalid {
            let problem = e.argument == "--sender/--recipient" ? "give sender, recipient or mx_host" : problem(e)
            throw Failure.badRequest(field(e.argument), problem)
        }
    }
}

extension Admin {
    var tlsRules: ForcedTLSRuleStore { ForcedTLSRuleStore(redis: redis, keys: keys) }

    func tlsRoutes(_ router: Router<AdminContext>) {
        // MARK: API

        router.get("/api/v1/tls/rules") { request, context -> Response in
            JSONOut.response(try await tlsRules.list().map(TLSRuleFields.json))
        }

        router.post("/api/v1/tls/rules") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: TLSRuleFields.all)
            let added = try await addTLSRule(input, by: try context.who)
            return JSONOut.response(TLSRuleFields.json(added), status: .created)
        }

        router.delete("/api/v1/tls/rules/:id") { request, context -> Response in
            try await removeTLSRule(try context.param("id"), by: try context.who)
            return JSONOut.noContent()
        }

        // MARK: Pages

        router.get("/tls") { request, context -> Response in
            Page.render("TLS rules", context, request: request, body: try await tlsPage(context: context, failure: nil, entered: nil))
        }

        router.post("/tls/rules") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: TLSRuleFields.all)
            do {
                let added = try await addTLSRule(input, by: try context.who)
                return redirect("/tls", notice: "Rule \(added.id) added: \(added.summary)")
            } catch {
                guard let failure = Failure.from(error), failure.status != .internalServerError else { throw error }
                return Page.render("TLS rules", context, request: request, status: failure.status,
                                   body: try await tlsPage(context: context, failure: failure, entered: input))
            }
        }

        router.post("/tls/rules/:id/delete") { request, context -> Response in
            let id = try context.param("id")
            try await removeTLSRule(id, by: try context.who)
            return redirect("/tls", notice: "Rule \(id) removed.")
        }
    }

    // MARK: The operations (shared by pages and API)

    func addTLSRule(_ input: Input, by who: Principal) async throws -> ForcedTLSRule {
        let rule = try TLSRuleFields.rule(from: input)
        let added: ForcedTLSRule
        do { added = try await tlsRules.add(rule) } catch let e as ForcedTLSRule.Invalid {
            throw Failure.badRequest(TLSRuleFields.field(e.argument), TLSRuleFields.problem(e))
        }
        await audited(who, "tls_rule.add", target: added.id, after: TLSRuleFields.json(added))
        return added
    }

    func removeTLSRule(_ id: String, by who: Principal) async throws {
        guard let rule = try await tlsRules.list().first(where: { $0.id == id }) else {
            throw Failure.notFound("id", "no rule \"\(id)\"")
        }
        guard try await tlsRules.remove(id) else { throw Failure.notFound("id", "no rule \"\(id)\"") }
        await audited(who, "tls_rule.remove", target: id, before: TLSRuleFields.json(rule))
    }

    // MARK: Page parts

    func tlsPage(context: AdminContext, failure: Failure?, entered: Input?) async throws -> String {
        let rules = try await tlsRules.list()
        let rows = rules.map { r -> [String] in
            [Page.escape(r.id), Page.escape(r.sender ?? "any"), Page.escape(r.recipient ?? "any"), Page.escape(r.mxHost ?? ""),
             Page.escape(r.level.rawValue), r.fingerprints.map { "<code>\(Page.escape($0))</code>" }.joined(separator: "<br>"),
             Page.escape(r.action.rawValue), Page.escape(r.comment),
             Page.form("/tls/rules/\(Page.segment(r.id))/delete", context, button: "Remove",
                       confirm: "Remove rule \(r.id)?", inline: true)]
        }
        let providers = ForcedTLSRule.providers.map { r -> [String] in
            [Page.escape(r.mxHost ?? ""), Page.escape(r.level.rawValue), Page.escape(r.action.rawValue), Page.escape(r.comment)]
        }
        let value = { (name: String) -> String? in ((try? entered?.string(name)) ?? nil) }
        let add = context.principal?.canChange == true ? """
            <h2>Add a rule</h2>
            \(Page.error(failure))
            <form method="post" action="/tls/rules" id="tls-rule-form">\(Page.csrfField(context.principal))
            \(Page.input("sender", "Sender domain (example.com or *.example.com; empty: any)", value: value("sender")))
            \(Page.input("recipient", "Recipient domain (example.com or *.example.com; empty: any)", value: value("recipient")))
            \(Page.input("mx_host", "Or: MX host (*.mx.example.net; instead of sender and recipient)", value: value("mx_host")))
            \(Page.select("level", "Level", options: ForcedTLSRule.Level.allCases.map(\.rawValue), selected: value("level") ?? "verify"))
            \(Page.textarea("fingerprints", "Certificate SHA-256 fingerprints (hex, one per line; level fingerprint only)",
                            lines: ((try? entered?.list("fingerprints")) ?? nil) ?? []))
            \(Page.select("action", "When TLS cannot be made", options: ForcedTLSRule.Action.allCases.map(\.rawValue),
                          selected: value("action") ?? "hold"))
            <small>hold: keep the mail, retry, an operator releases it; reject: bounce with an NDR.</small>
            \(Page.input("comment", "Comment", value: value("comment")))
            <button id="add-tls-rule">Add rule</button></form>
            """ : ""
        return "<p>Mail matching a rule goes out only over TLS of at least its level; every egress reads the rules within 5 s.</p>"
            + Page.table(["id", "sender", "recipient", "MX host", "level", "fingerprints", "action", "comment", ""], rows,
                         id: "tls-rules", empty: "No forced TLS rules.")
            + add
            + "<h2>Built-in provider rules</h2><p>Always applied (egress.tls_provider_rules), not editable here.</p>"
            + Page.table(["MX host", "level", "action", "provider"], providers, id: "tls-provider-rules")
    }
}
