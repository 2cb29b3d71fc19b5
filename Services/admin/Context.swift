import Hummingbird
import HTTPTypes
import NIOCore
import SMGAdmin
import SMGAccounts
import SMGCore
import Foundation

/// Per-request state: who is asking (set by `AuthMiddleware`) and from where.
struct AdminContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var principal: Principal?
    let remoteIP: String

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteIP = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// The operator; the auth middleware guarantees one on every route but the login page.
    var who: Principal {
        get throws {
            guard let principal else { throw Failure(.unauthorized, field: nil, "log in first") }
            return principal
        }
    }

    var maxUploadSize: Int { 1 << 20 }
}

/// An answer other than success, with the field at fault when there is one. Rendered as
/// `{"error", "field"}` for the API and as an error page for pages (`ErrorMiddleware`).
struct Failure: Error, CustomStringConvertible {
    var status: HTTPResponse.Status
    var field: String?
    var message: String

    init(_ status: HTTPResponse.Status, field: String?, _ message: String) {
        self.status = status
        self.field = field
        self.message = message
    }

    var description: String { field.map { "\($0): \(message)" } ?? message }

    static func badRequest(_ field: String?, _ message: String) -> Failure { Failure(.badRequest, field: field, message) }
    static func notFound(_ field: String?, _ message: String) -> Failure { Failure(.notFound, field: field, message) }

    /// The errors of the modules, as answers: their codes pick the status, their messages name the field.
    static func from(_ error: any Error) -> Failure? {
        switch error {
        case let f as Failure: return f
        case let e as AdminError:
            let status: HTTPResponse.Status = switch e.code { case .invalid: .badRequest; case .notFound: .notFound; case .exists: .conflict }
            return Failure(status, field: e.field, e.message)
        case let e as AccountError:
            let status: HTTPResponse.Status = e.code == .notFound ? .notFound : e.code == .exists ? .conflict : .badRequest
            var message = e.message
            if let field = e.field, let colon = message.firstIndex(of: ":") {
                message = message[message.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                return Failure(status, field: CustomerFields.apiName(field), message)
            }
            return Failure(status, field: nil, message)
        default: return nil
        }
    }
}

/// Turns `Failure` (and the modules' errors) into answers: JSON under /api, a page elsewhere.
/// Anything else is a 500 with nothing of the error in it (it is logged).
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = AdminContext

    func handle(_ request: Request, context: AdminContext, next: (Request, AdminContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            return Self.render(Failure(error.status, field: nil, error.body ?? error.status.reasonPhrase), request: request, context: context)
        } catch {
            if let failure = Failure.from(error) { return Self.render(failure, request: request, context: context) }
            context.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return Self.render(Failure(.internalServerError, field: nil, "internal error (logged)"), request: request, context: context)
        }
    }

    static func render(_ failure: Failure, request: Request, context: AdminContext) -> Response {
        if request.uri.path.hasPrefix("/api/") {
            var body: [String: JSONValue] = ["error": .string(failure.message)]
            if let field = failure.field { body["field"] = .string(field) }
            return JSONOut.response(JSONValue.object(body), status: failure.status)
        }
        if failure.status == .unauthorized {
            return Response(status: .seeOther, headers: [.location: "/login"])
        }
        let html = Page.layout(title: "\(failure.status.code) \(failure.status.reasonPhrase)", principal: context.principal, body: """
            <div class="error"\(failure.field.map { " data-field=\"\(Page.escape($0))\"" } ?? "")>\(Page.escape(failure.description))</div>
            <p><a href="javascript:history.back()">Back</a></p>
            """)
        return Page.response(html, status: failure.status)
    }
}

/// Who is asking: a bearer token (automation) or the session cookie (browser). Every route needs
/// one but the login page. A change needs the admin role and, with a session
/// cookie, the session's CSRF token (header `X-CSRF-Token` or form field `csrf`).
struct AuthMiddleware: RouterMiddleware {
    typealias Context = AdminContext
    let admin: Admin

    static let cookieName = "smg_session"
    static let open: Set<String> = ["/login", "/favicon.ico"]

    func handle(_ request: Request, context: AdminContext, next: (Request, AdminContext) async throws -> Response) async throws -> Response {
        var context = context
        var request = request
        if Self.open.contains(request.uri.path) { return try await next(request, context) }
        if let header = request.headers[.authorization], header.hasPrefix("Bearer ") {
            guard let principal = try await admin.operators.principal(forToken: String(header.dropFirst(7))) else {
                throw Failure(.unauthorized, field: nil, "unknown or revoked API token")
            }
            context.principal = principal
        } else if let cookie = request.cookies[Self.cookieName]?.value,
                  let principal = try await admin.sessions.principal(forCookie: cookie, operators: admin.operators) {
            context.principal = principal
        } else {
            throw Failure(.unauthorized, field: nil, "log in first (session cookie or bearer token)")
        }
        let principal = context.principal!
        if ![.get, .head].contains(request.method) {
            if let expected = principal.csrf {
                var given = request.headers[HTTPField.Name("X-CSRF-Token")!]
                if given == nil, request.headers[.contentType]?.hasPrefix("application/x-www-form-urlencoded") == true {
                    let body = try await request.collectBody(upTo: context.maxUploadSize)
                    given = Form(String(buffer: body)).values["csrf"]
                }
                guard let given, Self.constantTimeEqual(given, expected) else {
                    throw Failure(.forbidden, field: "csrf", "CSRF token missing or wrong; reload the page")
                }
            }
            guard principal.canChange || request.uri.path == "/logout" else {
                throw Failure(.forbidden, field: nil, "role \(principal.role.rawValue) may not change anything")
            }
        }
        return try await next(request, context)
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// Headers every answer carries: no framing, no sniffing, no caching of pages with data in them.
struct SecurityHeadersMiddleware: RouterMiddleware {
    typealias Context = AdminContext

    func handle(_ request: Request, context: AdminContext, next: (Request, AdminContext) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        response.headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        response.headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        response.headers[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        return response
    }
}
