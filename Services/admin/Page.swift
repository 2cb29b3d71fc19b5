import Hummingbird
import HTTPTypes
import NIOCore
import SMGAdmin
import Foundation

/// Server-rendered pages: one layout, escaped text, forms that carry the CSRF token. No script
/// is needed to use them; the live tail and the charts' refresh use a few lines of inline script.
enum Page {
    static let sections: [(path: String, title: String)] = [
        ("/", "Overview"), ("/customers", "Customers"), ("/queue", "Queue"), ("/messages", "Messages"),
        ("/tail", "Live"), ("/tls", "TLS rules"), ("/dkim", "DKIM"), ("/pools", "Pools"),
        ("/blacklist", "Blacklists"), ("/audit", "Audit"),
    ]

    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// A URL path segment (for links to customers, logins, messages…).
    static func segment(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~@"))) ?? text
    }

    static func layout(title: String, principal: Principal?, notice: String? = nil, body: String) -> String {
        let nav = principal.map { p in
            Page.sections.map { "<a href=\"\($0.path)\">\(escape($0.title))</a>" }.joined(separator: " ")
                + "<span class=\"who\">\(escape(p.name)) (\(p.role.rawValue))"
                + " <form method=\"post\" action=\"/logout\" class=\"inline\">\(csrfField(p))<button>Log out</button></form></span>"
        } ?? ""
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(escape(title)) · Secure Mail Gateway</title>
            <style>\(style)</style></head>
            <body><nav>\(nav)</nav><main>
            <h1>\(escape(title))</h1>
            \(notice.map { "<div class=\"flash\">\(escape($0))</div>" } ?? "")
            \(body)
            </main></body></html>
            """
    }

    static func response(_ html: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "text/html; charset=utf-8"],
                 body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// A whole page for an operator.
    static func render(_ title: String, _ context: AdminContext, request: Request, status: HTTPResponse.Status = .ok,
                       body: String) -> Response {
        response(layout(title: title, principal: context.principal, notice: request.query["notice"], body: body), status: status)
    }

    static func csrfField(_ principal: Principal?) -> String {
        guard let token = principal?.csrf else { return "" }
        return "<input type=\"hidden\" name=\"csrf\" value=\"\(escape(token))\">"
    }

    /// A form that changes something: posts with the CSRF token; hidden for viewers.
    static func form(_ action: String, _ context: AdminContext, button: String, confirm: String? = nil, inline: Bool = false,
                     fields: String = "") -> String {
        guard context.principal?.canChange == true else { return "" }
        // The question travels in a data attribute: HTML-escaped text never becomes script.
        let onsubmit = confirm.map { " data-confirm=\"\(escape($0))\" onsubmit=\"return confirm(this.dataset.confirm)\"" } ?? ""
        return "<form method=\"post\" action=\"\(escape(action))\"\(inline ? " class=\"inline\"" : "")\(onsubmit)>"
            + csrfField(context.principal) + fields + "<button>\(escape(button))</button></form>"
    }

    /// The error of a form submission, at the top of the form; `data-field` names the field.
    static func error(_ failure: Failure?) -> String {
        guard let failure else { return "" }
        return "<div class=\"error\"\(failure.field.map { " data-field=\"\(escape($0))\"" } ?? "")>\(escape(failure.description))</div>"
    }

    /// A labelled text input (`value` escaped).
    static func input(_ name: String, _ label: String, value: String? = nil, type: String = "text", hint: String = "") -> String {
        "<label>\(escape(label)) <input type=\"\(type)\" name=\"\(name)\" id=\"\(name)\" value=\"\(escape(value ?? ""))\"></label>"
            + (hint.isEmpty ? "" : "<small>\(escape(hint))</small>")
    }

    static func textarea(_ name: String, _ label: String, lines: [String], hint: String = "") -> String {
        "<label>\(escape(label)) <textarea name=\"\(name)\" id=\"\(name)\" rows=\"3\">\(escape(lines.joined(separator: "\n")))</textarea></label>"
            + (hint.isEmpty ? "" : "<small>\(escape(hint))</small>")
    }

    static func checkbox(_ name: String, _ label: String, checked: Bool) -> String {
        "<label class=\"check\"><input type=\"hidden\" name=\"\(name)\" value=\"off\"><input type=\"checkbox\" name=\"\(name)\" id=\"\(name)\"\(checked ? " checked" : "")> \(escape(label))</label>"
    }

    static func select(_ name: String, _ label: String, options: [String], selected: String?) -> String {
        "<label>\(escape(label)) <select name=\"\(name)\" id=\"\(name)\">"
            + options.map { "<option\($0 == selected ? " selected" : "")>\(escape($0))</option>" }.joined()
            + "</select></label>"
    }

    /// A table; cells are HTML (escape text before).
    static func table(_ headers: [String], _ rows: [[String]], id: String? = nil, empty: String = "Nothing here.") -> String {
        guard !rows.isEmpty else { return "<p class=\"empty\">\(escape(empty))</p>" }
        return "<table\(id.map { " id=\"\($0)\"" } ?? "")><thead><tr>" + headers.map { "<th>\(escape($0))</th>" }.joined() + "</tr></thead><tbody>"
            + rows.map { "<tr>" + $0.map { "<td>\($0)</td>" }.joined() + "</tr>" }.joined() + "</tbody></table>"
    }

    static let style = """
        body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
        nav{background:#1d3557;padding:.5em 1em}nav a{color:#fff;margin-right:1em;text-decoration:none}
        nav .who{color:#cfd8e3;float:right}main{padding:1em 2em}h1{font-size:1.4em}
        table{border-collapse:collapse;background:#fff;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
        th{background:#eef}.flash{background:#e6f4ea;border:1px solid #9c9;padding:.5em;margin:.5em 0}
        .error{background:#fdecea;border:1px solid #e99;padding:.5em;margin:.5em 0}
        form{margin:.5em 0}form.inline{display:inline}label{display:block;margin:.3em 0}label.check{display:inline-block}
        input,textarea,select{font:inherit}textarea{width:30em}small{color:#666;display:block}
        .secret{font-family:monospace;font-size:1.2em;background:#fff3cd;padding:.3em}
        code,.mono{font-family:monospace}.event{border-bottom:1px solid #eee;padding:.2em 0}
        .chart{display:inline-block;margin:0 1em 1em 0;background:#fff;border:1px solid #ddd;padding:.5em}
        #customer-form>button{display:block;margin-top:.6em}
        """
}
