import Hummingbird
import HTTPTypes
import NIOCore
import SMGCore
import Foundation

/// JSON answers. Field names are snake_case; `JSONValue` keeps their order stable (sorted keys).
enum JSONOut {
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        // Times as the event log writes them (ISO 8601, UTC, milliseconds).
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(Timestamp.format(date))
        }
        return e
    }()

    static func response(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func noContent() -> Response { Response(status: .noContent) }

    /// A Codable value as a `JSONValue` (for audit before/after and composed answers).
    static func value(_ value: some Encodable) -> JSONValue {
        guard let data = try? encoder.encode(value), let v = try? JSONDecoder().decode(JSONValue.self, from: data) else { return .null }
        return v
    }
}

/// An application/x-www-form-urlencoded body or query string.
struct Form {
    var values: [String: String] = [:]
    var lists: [String: [String]] = [:]

    init(_ text: String) {
        for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = Self.decode(parts[0])
            let value = parts.count > 1 ? Self.decode(parts[1]) : ""
            values[name] = value
            lists[name, default: []].append(value)
        }
    }

    static func decode(_ s: Substring) -> String {
        let plus = s.replacingOccurrences(of: "+", with: " ")
        return plus.removingPercentEncoding ?? plus
    }
}

/// What a page form or an API body says, in one shape, so both are checked by the same code:
/// JSON values from the API, strings from forms (numbers, booleans and lists parsed from text).
/// Every error names the field.
struct Input {
    var values: [String: JSONValue]
    /// Values came from an HTML form: "" means "not set", checkboxes are "on", lists are lines.
    let fromForm: Bool

    init(json: [String: JSONValue]) {
        values = json
        fromForm = false
    }

    init(form: Form, fields: [String]) {
        var v: [String: JSONValue] = [:]
        for name in fields { if let s = form.values[name] { v[name] = .string(s) } }
        values = v
        fromForm = true
    }

    /// Reads the request body: JSON under /api (whatever the content type says), a form for pages.
    /// Unknown JSON fields are refused.
    static func read(_ request: Request, context: AdminContext, fields: [String]) async throws -> Input {
        var request = request
        let buffer = try await request.collectBody(upTo: context.maxUploadSize)
        let text = String(buffer: buffer)
        if !request.isAPI {
            return Input(form: Form(text), fields: fields)
        }
        if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return Input(json: [:]) }
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)), case .object(let object) = value else {
            throw Failure.badRequest(nil, "the body is not a JSON object")
        }
        if let unknown = object.keys.sorted().first(where: { !fields.contains($0) }) {
            throw Failure.badRequest(unknown, "unknown field (known: \(fields.joined(separator: ", ")))")
        }
        return Input(json: object)
    }

    func has(_ name: String) -> Bool {
        guard let v = values[name] else { return false }
        if fromForm, case .string(let s) = v, s.isEmpty { return false }
        return true
    }

    func string(_ name: String) throws -> String? {
        switch values[name] {
        case nil, .null?: return nil
        case .string(let s)?:
            let t = s.trimmingCharacters(in: .whitespacesAndNewlines)
            return fromForm && t.isEmpty ? nil : t
        default: throw Failure.badRequest(name, "expected a string")
        }
    }

    func required(_ name: String) throws -> String {
        guard let s = try string(name), !s.isEmpty else { throw Failure.badRequest(name, "required") }
        return s
    }

    /// nil: not given; .some(nil): given as null (or empty in a form) — clear it.
    func optionalInt(_ name: String) throws -> Int?? {
        switch values[name] {
        case nil: return nil
        case .null?: return .some(nil)
        case .int(let i)?: return .some(i)
        case .string(let s)? where fromForm:
            let t = s.trimmingCharacters(in: .whitespaces)
            if t.isEmpty { return .some(nil) }
            guard let i = Int(t) else { throw Failure.badRequest(name, "\"\(t)\" is not a whole number") }
            return .some(i)
        default: throw Failure.badRequest(name, "expected a whole number or null")
        }
    }

    func int(_ name: String) throws -> Int? {
        guard let v = try optionalInt(name) else { return nil }
        return v
    }

    func bool(_ name: String) throws -> Bool? {
        switch values[name] {
        case nil, .null?: return nil
        case .bool(let b)?: return b
        case .string(let s)? where fromForm: return ["on", "true", "1", "yes"].contains(s.lowercased())
        default: throw Failure.badRequest(name, "expected true or false")
        }
    }

    /// A list: a JSON array of strings, or in a form one item per line (commas also separate).
    func list(_ name: String) throws -> [String]? {
        switch values[name] {
        case nil, .null?: return nil
        case .array(let items)?:
            return try items.map {
                guard case .string(let s) = $0 else { throw Failure.badRequest(name, "expected a list of strings") }
                return s.trimmingCharacters(in: .whitespaces)
            }.filter { !$0.isEmpty }
        case .string(let s)? where fromForm:
            return s.split(whereSeparator: { $0.isNewline || $0 == "," })
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        default: throw Failure.badRequest(name, "expected a list of strings")
        }
    }
}

extension Request {
    /// The query string's parameters (last one wins).
    var query: [String: String] {
        var out: [String: String] = [:]
        for (k, v) in uri.queryParameters { out[String(k)] = String(v).removingPercentEncoding ?? String(v) }
        return out
    }

    /// Whether this request came from a page form (answer with a page) rather than the API.
    var isAPI: Bool { uri.path.hasPrefix("/api/") }
}

extension AdminContext {
    /// A path parameter, percent-decoded.
    func param(_ name: String) throws -> String {
        guard let raw = parameters.get(name) else { throw Failure.badRequest(name, "missing") }
        return raw.removingPercentEncoding ?? raw
    }
}

/// A 303 to a page, with a one-line notice shown at its top.
func redirect(_ path: String, notice: String? = nil) -> Response {
    var target = path
    if let notice {
        let encoded = notice.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        target += (path.contains("?") ? "&" : "?") + "notice=" + encoded
    }
    return Response(status: .seeOther, headers: [.location: target])
}

/// Milliseconds since the epoch as an ISO 8601 time (UTC).
func isoTime(ms: Int64) -> String {
    let f = ISO8601DateFormatter()
    return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
}
