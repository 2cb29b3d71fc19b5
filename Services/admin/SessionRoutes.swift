import Hummingbird
import HTTPTypes
import NIOCore
import SMGAdmin
import SMGCore
import Foundation

extension Admin {
    /// Login, logout, the session's facts, the audit trail and the OpenAPI file.
    func sessionRoutes(_ router: Router<AdminContext>) {
        router.get("/login") { request, context -> Response in
            Self.loginPage(request: request, failure: nil)
        }

        router.post("/login") { request, context -> Response in
            var request = request
            let form = Form(String(buffer: try await request.collectBody(upTo: 64 * 1024)))
            let name = form.values["name"]?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
            let password = form.values["password"] ?? ""
            if try await throttle.isBlocked(ip: context.remoteIP, name: name) {
                process.logger.warning("operator login throttled", metadata: ["ip": "\(context.remoteIP)", "name": "\(name)"])
                return Self.loginPage(request: request, failure: Failure(.tooManyRequests, field: nil,
                                                                          "too many failed logins; try again later"))
            }
            // A missing operator costs the same time as a wrong password.
            let account = name.isEmpty ? nil : try await operators.get(name)
            let ok = await hasher.verify(password, against: account?.passwordHash ?? hasher.decoy)
            guard ok, let account, !account.disabled else {
                try await throttle.recordFailure(ip: context.remoteIP, name: name)
                process.logger.notice("operator login failed", metadata: ["ip": "\(context.remoteIP)", "name": "\(name)"])
                return Self.loginPage(request: request, failure: Failure(.unauthorized, field: "password", "wrong name or password"))
            }
            try await throttle.clear(ip: context.remoteIP, name: name)
            let token = try await sessions.open(for: account)
            var response = redirect("/")
            response.setCookie(Cookie(name: AuthMiddleware.cookieName, value: token, path: "/",
                                      secure: secureCookies, httpOnly: true, sameSite: .strict))
            let principal = Principal(name: account.name, role: account.role, csrf: nil, expires: nil)
            await audited(principal, "session.login", target: account.name, after: .object(["ip": .string(context.remoteIP)]))
            return response
        }

        router.post("/logout") { request, context -> Response in
            if let cookie = request.cookies[AuthMiddleware.cookieName]?.value { try await sessions.close(cookie) }
            var response = redirect("/login", notice: "Logged out.")
            response.setCookie(Cookie(name: AuthMiddleware.cookieName, value: "", maxAge: 0, path: "/",
                                      secure: secureCookies, httpOnly: true, sameSite: .strict))
            return response
        }

        router.get("/api/v1/session") { request, context -> Response in
            let who = try context.who
            var out: [String: JSONValue] = ["operator": .string(who.name), "role": .string(who.role.rawValue)]
            out["csrf"] = who.csrf.map { .string($0) } ?? .null
            out["expires"] = who.expires.map { .string(isoTime(ms: $0)) } ?? .null
            return JSONOut.response(JSONValue.object(out))
        }

        router.get("/api/v1/audit") { request, context -> Response in
            let count = try Self.count(request.query["count"], field: "count", default: 100)
            return JSONOut.response(try await audit.recent(count: count))
        }

        router.get("/audit") { request, context -> Response in
            let events = try await audit.recent(count: 200)
            let rows = events.map { e -> [String] in
                let f = e.facts
                return [Page.escape(ISO8601DateFormatter().string(from: e.time)), Page.escape(f["operator"]?.stringValue ?? ""),
                        Page.escape(f["action"]?.stringValue ?? ""), Page.escape(f["target"]?.stringValue ?? ""),
                        "<code>\(Page.escape(Self.compact(f["before"])))</code>", "<code>\(Page.escape(Self.compact(f["after"])))</code>"]
            }
            return Page.render("Audit", context, request: request, body: Page.table(["time", "operator", "action", "target", "before", "after"], rows,
                                                                                    id: "audit", empty: "No changes yet."))
        }
    }

    static func loginPage(request: Request, failure: Failure?) -> Response {
        let body = """
            \(Page.error(failure))
            <form method="post" action="/login" id="login">
            \(Page.input("name", "Operator"))
            \(Page.input("password", "Password", type: "password"))
            <button id="login-button">Log in</button>
            </form>
            """
        return Page.response(Page.layout(title: "Log in", principal: nil, notice: request.query["notice"], body: body),
                             status: failure?.status ?? .ok)
    }

    /// A `count`/`limit` query parameter: 1…10000.
    static func count(_ text: String?, field: String, default d: Int) throws -> Int {
        guard let text, !text.isEmpty else { return d }
        guard let n = Int(text), (1...10_000).contains(n) else { throw Failure.badRequest(field, "expected 1…10000") }
        return n
    }

    /// A JSON value on one line (for tables).
    static func compact(_ value: JSONValue?) -> String {
        guard let value, value != .null else { return "" }
        guard let data = try? JSONOut.encoder.encode(value) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }
}
