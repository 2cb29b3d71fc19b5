import Hummingbird
import HTTPTypes
import SMGAccounts
import SMGAdmin
import SMGCore
import Foundation

/// A customer as the API and the forms name its fields (snake_case), and the one place that turns
/// input into `Customer` / `CustomerUpdate`, so pages and API check the same way.
enum CustomerFields {
    static let editable = ["name", "networks", "domains", "rate_limit_per_minute", "require_tls", "reverse_dns_check",
                           "max_message_size", "max_recipients", "disabled", "bare_newline"]
    static let all = ["id"] + editable

    /// `Customer.validate()` names fields as smgctl's options; the API names them as its JSON.
    static func apiName(_ field: String) -> String {
        switch field {
        case "rate-limit": "rate_limit_per_minute"
        case "max-size": "max_message_size"
        case "max-recipients": "max_recipients"
        case "bare-newline": "bare_newline"
        default: field
        }
    }

    static func json(_ c: Customer) -> JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(c.id), "name": .string(c.name), "networks": .array(c.networks.map { .string($0) }),
            "domains": .array(c.domains.map { .string($0) }), "require_tls": .bool(c.requireTLS),
            "reverse_dns_check": .bool(c.reverseDNSCheck), "disabled": .bool(c.disabled),
        ]
        o["rate_limit_per_minute"] = c.rateLimitPerMinute.map { .int($0) } ?? .null
        o["max_message_size"] = c.maxMessageSize.map { .int($0) } ?? .null
        o["max_recipients"] = c.maxRecipients.map { .int($0) } ?? .null
        o["bare_newline"] = c.bareNewline.map { .string($0) } ?? .null
        o["brake"] = c.brake.map { JSONOut.value($0) } ?? .null
        return .object(o)
    }

    static func update(from input: Input) throws -> CustomerUpdate {
        var u = CustomerUpdate()
        u.name = try input.string("name")
        u.networks = try input.list("networks")
        u.domains = try input.list("domains")
        u.rateLimitPerMinute = try input.optionalInt("rate_limit_per_minute")
        u.requireTLS = try input.bool("require_tls")
        u.reverseDNSCheck = try input.bool("reverse_dns_check")
        u.maxMessageSize = try input.optionalInt("max_message_size")
        u.maxRecipients = try input.optionalInt("max_recipients")
        u.disabled = try input.bool("disabled")
        switch input.values["bare_newline"] {
        case nil: break
        case .null?: u.bareNewline = .some(nil)
        default: u.bareNewline = .some(try input.string("bare_newline"))
        }
        return u
    }

    static func customer(from input: Input) throws -> Customer {
        let id = try input.required("id")
        let customer = try update(from: input).applied(to: Customer(id: id))
        return customer
    }
}

extension Admin {
    func customerRoutes(_ router: Router<AdminContext>) {
        // MARK: API

        router.get("/api/v1/customers") { request, context -> Response in
            var out: [JSONValue] = []
            for id in try await accounts.customerIDs() { if let c = try await accounts.customer(id) { out.append(CustomerFields.json(c)) } }
            return JSONOut.response(out)
        }

        router.post("/api/v1/customers") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: CustomerFields.all)
            let created = try await createCustomer(input, by: try context.who)
            return JSONOut.response(CustomerFields.json(created), status: .created)
        }

        router.get("/api/v1/customers/:id") { request, context -> Response in
            let id = try context.param("id")
            guard let customer = try await accounts.customer(id) else { throw Failure.notFound("id", "no customer \"\(id)\"") }
            return JSONOut.response(JSONValue.object(["customer": CustomerFields.json(customer),
                                                      "logins": .array(try await loginSummaries(id))]))
        }

        router.patch("/api/v1/customers/:id") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: CustomerFields.editable)
            let after = try await updateCustomer(try context.param("id"), input, by: try context.who)
            return JSONOut.response(CustomerFields.json(after))
        }

        router.post("/api/v1/customers/:id/logins") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: ["login", "password"])
            let secret = try await createLogin(customer: try context.param("id"), input, by: try context.who)
            return JSONOut.response(Self.loginJSON(secret.account, password: secret.password), status: .created)
        }

        router.post("/api/v1/logins/:login/password") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: ["password"])
            let secret = try await resetLogin(try context.param("login"), password: try input.string("password"), by: try context.who)
            return JSONOut.response(Self.loginJSON(secret.account, password: secret.password))
        }

        router.patch("/api/v1/logins/:login") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: ["disabled"])
            guard let disabled = try input.bool("disabled") else { throw Failure.badRequest("disabled", "required") }
            let account = try await setLogin(try context.param("login"), disabled: disabled, by: try context.who)
            return JSONOut.response(Self.loginJSON(account, password: nil))
        }

        router.delete("/api/v1/logins/:login") { request, context -> Response in
            try await deleteLogin(try context.param("login"), by: try context.who)
            return JSONOut.noContent()
        }

        // MARK: Pages

        router.get("/customers") { request, context -> Response in
            var rows: [[String]] = []
            for id in try await accounts.customerIDs() {
                guard let c = try await accounts.customer(id) else { continue }
                rows.append(["<a href=\"/customers/\(Page.segment(c.id))\">\(Page.escape(c.id))</a>", Page.escape(c.name),
                             Page.escape(c.domains.joined(separator: ", ")), Page.escape(c.networks.joined(separator: ", ")),
                             c.rateLimitPerMinute.map { "\($0)/min" } ?? "—", c.requireTLS ? "yes" : "no", c.disabled ? "<b>disabled</b>" : "enabled"])
            }
            let new = context.principal?.canChange == true ? "<p><a href=\"/customers/new\" id=\"new-customer\">New customer</a></p>" : ""
            return Page.render("Customers", context, request: request, body: new + Page.table(
                ["id", "name", "domains", "networks", "rate limit", "require TLS", "state"], rows, id: "customers", empty: "No customers yet."))
        }

        router.get("/customers/new") { request, context -> Response in
            Page.render("New customer", context, request: request, body: Self.customerForm(nil, action: "/customers", context: context, failure: nil))
        }

        router.post("/customers") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: CustomerFields.all)
            do {
                let created = try await createCustomer(input, by: try context.who)
                return redirect("/customers/\(Page.segment(created.id))", notice: "Customer \(created.id) created.")
            } catch {
                guard let failure = Failure.from(error), failure.status != .internalServerError else { throw error }
                let entered = (try? CustomerFields.update(from: input).applied(to: Customer(id: ((try? input.string("id")) ?? nil) ?? "")))
                return Page.render("New customer", context, request: request, status: failure.status,
                                   body: Self.customerForm(entered, action: "/customers", context: context, failure: failure, isNew: true))
            }
        }

        router.get("/customers/:id") { request, context -> Response in
            let id = try context.param("id")
            guard let customer = try await accounts.customer(id) else { throw Failure.notFound("id", "no customer \"\(id)\"") }
            return Page.render("Customer \(customer.id)", context, request: request,
                               body: try await customerPage(customer, context: context, failure: nil))
        }

        router.post("/customers/:id") { request, context -> Response in
            let id = try context.param("id")
            let input = try await Input.read(request, context: context, fields: CustomerFields.editable)
            do {
                _ = try await updateCustomer(id, input, by: try context.who)
                return redirect("/customers/\(Page.segment(id))", notice: "Saved.")
            } catch {
                guard let failure = Failure.from(error), failure.status != .notFound,
                      let customer = try await accounts.customer(id) else { throw error }
                return Page.render("Customer \(id)", context, request: request, status: failure.status,
                                   body: try await customerPage(customer, context: context, failure: failure))
            }
        }

        router.post("/customers/:id/logins") { request, context -> Response in
            let id = try context.param("id")
            let input = try await Input.read(request, context: context, fields: ["login", "password"])
            do {
                let secret = try await createLogin(customer: id, input, by: try context.who)
                return Self.passwordPage(secret, title: "Login \(secret.account.login) created", context: context, request: request)
            } catch {
                guard let failure = Failure.from(error), failure.field != "customer",
                      let customer = try await accounts.customer(id) else { throw error }
                return Page.render("Customer \(id)", context, request: request, status: failure.status,
                                   body: try await customerPage(customer, context: context, failure: failure))
            }
        }

        router.post("/logins/:login/:action") { request, context -> Response in
            let login = try context.param("login"), action = try context.param("action")
            let who = try context.who
            guard let account = try await accounts.account(login) else { throw Failure.notFound("login", "no login \"\(login)\"") }
            let back = "/customers/\(Page.segment(account.customer))"
            switch action {
            case "reset":
                let secret = try await resetLogin(login, password: nil, by: who)
                return Self.passwordPage(secret, title: "New password for \(login)", context: context, request: request)
            case "disable", "enable":
                _ = try await setLogin(login, disabled: action == "disable", by: who)
                return redirect(back, notice: "Login \(login) \(action)d.")
            case "delete":
                try await deleteLogin(login, by: who)
                return redirect(back, notice: "Login \(login) deleted.")
            default:
                throw Failure.notFound("action", "no action \"\(action)\" (reset, disable, enable, delete)")
            }
        }
    }

    // MARK: The operations (shared by pages and API)

    func createCustomer(_ input: Input, by who: Principal) async throws -> Customer {
        let created = try await accounts.createCustomer(try CustomerFields.customer(from: input))
        await audited(who, "customer.create", target: created.id, after: CustomerFields.json(created))
        return created
    }

    func updateCustomer(_ id: String, _ input: Input, by who: Principal) async throws -> Customer {
        let update = try CustomerFields.update(from: input)
        guard !update.isEmpty else { throw Failure.badRequest(nil, "nothing to change") }
        let (before, after) = try await accounts.updateCustomer(id, update)
        if before != after {
            await audited(who, "customer.update", target: id, before: CustomerFields.json(before), after: CustomerFields.json(after))
        }
        return after
    }

    func createLogin(customer: String, _ input: Input, by who: Principal) async throws -> LoginSecret {
        let secret = try await accounts.createLogin(try input.required("login"), customer: customer, password: try input.string("password"),
                                                    hasher: hasher)
        await audited(who, "login.create", target: secret.account.login, after: Self.loginJSON(secret.account, password: nil))
        return secret
    }

    func resetLogin(_ login: String, password: String?, by who: Principal) async throws -> LoginSecret {
        let secret = try await accounts.resetPassword(login, password: password, hasher: hasher)
        await audited(who, "login.password", target: secret.account.login,
                      after: .object(["password": .string(secret.password == nil ? "set by operator" : "generated")]))
        return secret
    }

    func setLogin(_ login: String, disabled: Bool, by who: Principal) async throws -> Account {
        let (before, after) = try await accounts.setLoginDisabled(login, disabled)
        await audited(who, disabled ? "login.disable" : "login.enable", target: login,
                      before: Self.loginJSON(before, password: nil), after: Self.loginJSON(after, password: nil))
        return after
    }

    func deleteLogin(_ login: String, by who: Principal) async throws {
        guard let account = try await accounts.account(login) else { throw Failure.notFound("login", "no login \"\(login)\"") }
        _ = try await accounts.deleteAccount(login)
        await audited(who, "login.delete", target: login, before: Self.loginJSON(account, password: nil))
    }

    func loginSummaries(_ customer: String) async throws -> [JSONValue] {
        var out: [JSONValue] = []
        for login in try await accounts.logins(of: customer) {
            if let a = try await accounts.account(login) { out.append(Self.loginJSON(a, password: nil)) }
        }
        return out
    }

    /// A login without its hash; `password` only right after it was generated.
    static func loginJSON(_ a: Account, password: String?) -> JSONValue {
        var o: [String: JSONValue] = ["login": .string(a.login), "customer": .string(a.customer), "disabled": .bool(a.disabled)]
        if let password { o["password"] = .string(password) }
        return .object(o)
    }

    // MARK: Page parts

    func customerPage(_ c: Customer, context: AdminContext, failure: Failure?) async throws -> String {
        let loginFailure = failure?.field == "login" || failure?.field == "password" ? failure : nil
        var rows: [[String]] = []
        for login in try await accounts.logins(of: c.id) {
            guard let a = try await accounts.account(login) else { continue }
            let path = "/logins/\(Page.segment(a.login))"
            rows.append([Page.escape(a.login), a.disabled ? "<b>disabled</b>" : "enabled",
                         Page.form("\(path)/reset", context, button: "New password", confirm: "Replace the password of \(a.login)?", inline: true)
                         + Page.form("\(path)/\(a.disabled ? "enable" : "disable")", context, button: a.disabled ? "Enable" : "Disable", inline: true)
                         + Page.form("\(path)/delete", context, button: "Delete", confirm: "Delete login \(a.login)?", inline: true)])
        }
        let newLogin = context.principal?.canChange == true ? """
            <h2>New login</h2>
            \(Page.error(loginFailure))
            <form method="post" action="/customers/\(Page.segment(c.id))/logins" id="new-login">\(Page.csrfField(context.principal))
            \(Page.input("login", "Login (SMTP AUTH user name)"))
            \(Page.input("password", "Password (empty: generate one, shown once)", type: "password"))
            <button id="create-login">Create login</button></form>
            """ : ""
        return Self.customerForm(c, action: "/customers/\(Page.segment(c.id))", context: context, failure: loginFailure == nil ? failure : nil)
            + "<h2>Logins</h2>" + Page.table(["login", "state", ""], rows, id: "logins", empty: "No logins.") + newLogin
            + "<p><a href=\"/messages?customer=\(Page.segment(c.id))\">Messages of this customer</a> · "
            + "<a href=\"/queue?customer=\(Page.segment(c.id))\">Queued</a></p>"
    }

    static func customerForm(_ c: Customer?, action: String, context: AdminContext, failure: Failure?, isNew: Bool? = nil) -> String {
        let creating = isNew ?? (c == nil)
        let readOnly = context.principal?.canChange != true
        let fields = """
            \(creating ? Page.input("id", "Id (letters, digits, - _ .)", value: c?.id) : "")
            \(Page.input("name", "Name", value: c?.name))
            \(Page.textarea("networks", "Networks allowed to send (CIDR, one per line)", lines: c?.networks ?? []))
            \(Page.textarea("domains", "Sender domains (one per line)", lines: c?.domains ?? []))
            \(Page.input("rate_limit_per_minute", "Rate limit (messages per minute, empty: none)", value: c?.rateLimitPerMinute.map(String.init)))
            \(Page.input("max_message_size", "Largest message (bytes, empty: the listener's)", value: c?.maxMessageSize.map(String.init)))
            \(Page.input("max_recipients", "Most recipients per message (empty: the listener's)", value: c?.maxRecipients.map(String.init)))
            \(Page.select("bare_newline", "Bare LF line ends", options: ["", "reject", "normalize"], selected: c?.bareNewline ?? ""))
            \(Page.checkbox("require_tls", "Require TLS", checked: c?.requireTLS ?? false))
            \(Page.checkbox("reverse_dns_check", "Require matching reverse DNS", checked: c?.reverseDNSCheck ?? false))
            \(creating ? "" : Page.checkbox("disabled", "Disabled (refuse all its mail)", checked: c?.disabled ?? false))
            """
        if readOnly { return Page.error(failure) + "<fieldset disabled>\(fields)</fieldset>" }
        return Page.error(failure) + "<form method=\"post\" action=\"\(Page.escape(action))\" id=\"customer-form\">"
            + Page.csrfField(context.principal) + fields + "<button id=\"save-customer\">\(creating ? "Create" : "Save")</button></form>"
    }

    static func passwordPage(_ secret: LoginSecret, title: String, context: AdminContext, request: Request) -> Response {
        let back = "/customers/\(Page.segment(secret.account.customer))"
        let body = secret.password.map {
            """
            <p>The password of <b>\(Page.escape(secret.account.login))</b>, shown this once — it is not stored anywhere readable:</p>
            <p><span class="secret" id="generated-password">\(Page.escape($0))</span></p>
            """
        } ?? "<p>The password you gave is set.</p>"
        var response = Page.render(title, context, request: request, body: body + "<p><a href=\"\(back)\">Back to the customer</a></p>")
        response.headers[.cacheControl] = "no-store"
        return response
    }
}
