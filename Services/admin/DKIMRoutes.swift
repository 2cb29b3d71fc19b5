import Hummingbird
import HTTPTypes
import SMGAdmin
import SMGCore
import SMGDKIM
import SMGDKIMKeys
import Foundation

/// DKIM keys as the API shows them (never the private half) and the one place that turns input
/// into a new key (`DKIMNewKey`, as `smgctl dkim keygen|rotate`).
enum DKIMFields {
    static let generate = ["domain", "selector", "alg", "bits"]
    static let rotate = ["selector", "alg", "bits"]

    /// The TXT record to publish for a key.
    static func dns(_ r: DKIMKeyRecord) -> JSONValue {
        .object(["name": .string(r.recordName), "value": .string(r.dnsRecord.text)])
    }

    /// A key: `publicSummary`'s facts, typed, with its DNS record.
    static func json(_ r: DKIMKeyRecord) -> JSONValue {
        .object([
            "domain": .string(r.domain), "selector": .string(r.selector), "alg": .string(r.algorithm.rawValue),
            "bits": .int(r.bits), "created": .string(isoTime(ms: r.created)), "state": .string(r.state.rawValue),
            "retiring_since": r.retiringSince.map { .string(isoTime(ms: $0)) } ?? .null,
            "public": .string(r.publicKey), "dns": dns(r),
        ])
    }

    static func check(_ c: DKIMPublicationCheck) -> JSONValue {
        .object(["record": .string(c.record.recordName), "selector": .string(c.record.selector),
                 "state": .string(c.record.state.rawValue), "verdict": .string(c.verdict.rawValue), "detail": .string(c.detail)])
    }

    /// Runs one of `DKIMNewKey`'s checks; its error names the field (the API's names are its names).
    static func checked<T>(_ body: () throws(DKIMKeyInputError) -> T) throws -> T {
        do { return try body() } catch { throw Failure.badRequest(error.field.rawValue, error.message) }
    }

    static func domain(_ text: String) throws -> String {
        try checked { () throws(DKIMKeyInputError) in try DKIMNewKey.domain(text) }
    }

    static func newKey(domain: String, _ input: Input) throws -> DKIMNewKey {
        let selector = try input.required("selector"), alg = try input.string("alg"), bits = try input.int("bits")
        return try checked { () throws(DKIMKeyInputError) in
            try DKIMNewKey(domain: domain, selector: selector, algorithm: alg, bits: bits)
        }
    }
}

extension Admin {
    var dkimKeys: DKIMKeyStore { DKIMKeyStore(redis: redis, keys: keys, masterKey: masterKey) }

    func dkimRoutes(_ router: Router<AdminContext>) {
        // MARK: API

        router.get("/api/v1/dkim/keys") { request, context -> Response in
            let domain = try request.query["domain"].flatMap { $0.isEmpty ? nil : try DKIMFields.domain($0) }
            return JSONOut.response(try await dkimKeys.list(domain: domain).map(DKIMFields.json))
        }

        router.post("/api/v1/dkim/keys") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: DKIMFields.generate)
            let record = try await generateDKIMKey(input, by: try context.who)
            return JSONOut.response(JSONValue.object(["key": DKIMFields.json(record), "dns": DKIMFields.dns(record)]), status: .created)
        }

        router.post("/api/v1/dkim/domains/:domain/rotate") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: DKIMFields.rotate)
            let (created, retired) = try await rotateDKIMKey(domain: try context.param("domain"), input, by: try context.who)
            return JSONOut.response(JSONValue.object(["key": DKIMFields.json(created), "retiring": .array(retired.map(DKIMFields.json)),
                                                      "dns": DKIMFields.dns(created)]))
        }

        router.delete("/api/v1/dkim/keys/:domain/:selector") { request, context -> Response in
            try await retireDKIMKey(domain: try context.param("domain"), selector: try context.param("selector"), by: try context.who)
            return JSONOut.noContent()
        }

        router.get("/api/v1/dkim/domains/:domain/check") { request, context -> Response in
            JSONOut.response(try await checkDKIM(domain: try context.param("domain")).map(DKIMFields.check))
        }

        // MARK: Pages

        router.get("/dkim") { request, context -> Response in
            Page.render("DKIM", context, request: request, body: try await dkimPage(context: context, failure: nil))
        }

        router.post("/dkim/keys") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: DKIMFields.generate)
            do {
                let record = try await generateDKIMKey(input, by: try context.who)
                return redirect("/dkim", notice: "Key \(record.selector) created for \(record.domain): publish \(record.recordName) TXT (below).")
            } catch {
                guard let failure = Failure.from(error), failure.status != .internalServerError else { throw error }
                return Page.render("DKIM", context, request: request, status: failure.status,
                                   body: try await dkimPage(context: context, failure: (nil, failure), entered: input))
            }
        }

        router.post("/dkim/domains/:domain/rotate") { request, context -> Response in
            let domain = try context.param("domain")
            let input = try await Input.read(request, context: context, fields: DKIMFields.rotate)
            do {
                let (created, retired) = try await rotateDKIMKey(domain: domain, input, by: try context.who)
                let old = retired.map(\.selector).joined(separator: ", ")
                return redirect("/dkim", notice: "Key \(created.selector) created for \(created.domain): publish \(created.recordName) TXT."
                                + (old.isEmpty ? "" : " Retiring: \(old) (keep published for 7 days, then retire)."))
            } catch {
                guard let failure = Failure.from(error), failure.status != .internalServerError else { throw error }
                return Page.render("DKIM", context, request: request, status: failure.status,
                                   body: try await dkimPage(context: context, failure: (domain.lowercased(), failure), entered: input))
            }
        }

        router.post("/dkim/keys/:domain/:selector/retire") { request, context -> Response in
            let record = try await retireDKIMKey(domain: try context.param("domain"), selector: try context.param("selector"),
                                                 by: try context.who)
            return redirect("/dkim", notice: "Key \(record.selector) of \(record.domain) retired: \(record.recordName) TXT may be removed.")
        }

        router.get("/dkim/domains/:domain/check") { request, context -> Response in
            let results = try await checkDKIM(domain: try context.param("domain"))
            let domain = results.first?.record.domain ?? ""
            let rows = results.map { c -> [String] in
                [Page.escape(c.record.recordName), Page.escape(c.record.selector), Page.escape(c.record.state.rawValue),
                 "<b class=\"verdict verdict-\(c.verdict.rawValue)\">\(Page.escape(c.verdict.rawValue))</b>", Page.escape(c.detail)]
            }
            let bad = results.filter { $0.verdict != .ok }.count
            let summary = bad == 0 ? "<p class=\"flash\" id=\"dkim-check-summary\">Every key is published as stored.</p>"
                : "<p class=\"error\" id=\"dkim-check-summary\">\(bad) of \(results.count) record(s) are not published as stored.</p>"
            return Page.render("DNS check: \(domain)", context, request: request, body: summary
                + Page.table(["record", "selector", "state", "verdict", "detail"], rows, id: "dkim-check")
                + "<p><a href=\"/dkim/domains/\(Page.segment(domain))/check\">Check again</a> · <a href=\"/dkim\">Back to DKIM</a></p>")
        }
    }

    // MARK: The operations (shared by pages and API)

    func requireMasterKey() throws {
        guard masterKey != nil else {
            throw Failure(.conflict, field: nil,
                          "smg-admin has no DKIM master key: set dkim.master_key_file (the signers' key file) to generate keys here, or use smgctl dkim")
        }
    }

    /// A key store error as an answer; `notFound` names `notFoundField`.
    static func dkimFailure(_ error: any Error, notFoundField: String) -> any Error {
        guard let e = error as? DKIMError else { return error }
        switch e.code {
        case .exists: return Failure(.conflict, field: "selector", e.message)
        case .stillActive: return Failure(.conflict, field: "selector", e.message)
        case .notFound: return Failure.notFound(notFoundField, e.message)
        case .ambiguous: return Failure.badRequest("alg", e.message)
        case .invalidName: return Failure.badRequest(notFoundField, e.message)
        case .weakKey, .unsupportedKeySize: return Failure.badRequest("bits", e.message)
        case .masterKey: return Failure(.conflict, field: nil, "\(e.message): smg-admin cannot generate keys")
        default: return error
        }
    }

    func generateDKIMKey(_ input: Input, by who: Principal) async throws -> DKIMKeyRecord {
        let new = try DKIMFields.newKey(domain: try input.required("domain"), input)
        try requireMasterKey()
        let record: DKIMKeyRecord
        do {
            record = try await dkimKeys.create(domain: new.domain, selector: new.selector, algorithm: new.algorithm ?? .rsaSHA256,
                                               bits: new.bits)
        } catch { throw Self.dkimFailure(error, notFoundField: "domain") }
        await audited(who, "dkim.generate", target: record.recordName, after: DKIMFields.json(record))
        return record
    }

    func rotateDKIMKey(domain: String, _ input: Input, by who: Principal) async throws
        -> (created: DKIMKeyRecord, retired: [DKIMKeyRecord]) {
        let new = try DKIMFields.newKey(domain: domain, input)
        try requireMasterKey()
        let result: (created: DKIMKeyRecord, retired: [DKIMKeyRecord])
        do {
            result = try await dkimKeys.rotate(domain: new.domain, newSelector: new.selector, algorithm: new.algorithm, bits: new.bits)
        } catch let e as DKIMError where e.code == .notFound {
            throw Failure.notFound("domain", "\(new.domain) has no active key to rotate: generate one (or give alg)")
        } catch { throw Self.dkimFailure(error, notFoundField: "domain") }
        await audited(who, "dkim.rotate", target: new.domain,
                      before: .object(["retiring": .array(result.retired.map { .string($0.selector) })]),
                      after: DKIMFields.json(result.created))
        return result
    }

    @discardableResult
    func retireDKIMKey(domain: String, selector: String, by who: Principal) async throws -> DKIMKeyRecord {
        let domain = try DKIMFields.domain(domain)
        let selector = try DKIMFields.checked { () throws(DKIMKeyInputError) in try DKIMNewKey.selector(selector) }
        let record: DKIMKeyRecord
        do { record = try await dkimKeys.retire(domain: domain, selector: selector) } catch {
            throw Self.dkimFailure(error, notFoundField: "selector")
        }
        await audited(who, "dkim.retire", target: record.recordName, before: DKIMFields.json(record))
        return record
    }

    func checkDKIM(domain: String) async throws -> [DKIMPublicationCheck] {
        let domain = try DKIMFields.domain(domain)
        let records = try await dkimKeys.list(domain: domain)
        guard !records.isEmpty else { throw Failure.notFound("domain", "no keys stored for \(domain)") }
        return await DKIMPublicationCheck.check(records: records, resolver: resolver)
    }

    // MARK: Page parts

    /// The keys per domain with their records, and the forms; `failure` belongs to the rotate
    /// form of its domain, or (domain nil) to the generate form.
    func dkimPage(context: AdminContext, failure: (domain: String?, failure: Failure)?, entered: Input? = nil) async throws -> String {
        let records = try await dkimKeys.list()
        let canChange = context.principal?.canChange == true
        let value = { (name: String) -> String? in ((try? entered?.string(name)) ?? nil) }
        let wrap = "style=\"word-break:break-all;white-space:pre-wrap\""
        var body = "<p>Every <b>active</b> key signs; a <b>retiring</b> key signs nothing but stays published until mail signed with it has been verified (7 days), then retire it.</p>"
        if masterKey == nil {
            body += "<p class=\"error\" id=\"dkim-no-master-key\">dkim.master_key_file is not set: keys can be listed and checked here, not generated or rotated.</p>"
        }
        let domains = Dictionary(grouping: records, by: \.domain)
        if let failure, let domain = failure.domain, domains[domain] == nil { body += Page.error(failure.failure) }
        for domain in domains.keys.sorted() {
            let keys = domains[domain] ?? []
            let rows = keys.map { r -> [String] in
                let retire = r.state == .retiring
                    ? Page.form("/dkim/keys/\(Page.segment(r.domain))/\(Page.segment(r.selector))/retire", context, button: "Retire",
                                confirm: "Remove key \(r.selector) of \(r.domain)? Mail signed with it no longer verifies once its TXT record is gone.",
                                inline: true)
                    : ""
                return [Page.escape(r.selector), Page.escape(r.algorithm.rawValue), r.algorithm == .rsaSHA256 ? "\(r.bits)" : "—",
                        "<span class=\"state state-\(r.state.rawValue)\">\(Page.escape(r.state.rawValue))</span>"
                            + (r.retiringSince.map { " since \(Page.escape(isoTime(ms: $0)))" } ?? ""),
                        Page.escape(isoTime(ms: r.created)),
                        "<code class=\"dns-name\">\(Page.escape(r.recordName))</code> TXT<br><code class=\"dns-value\" \(wrap)>\(Page.escape(r.dnsRecord.text))</code>",
                        retire]
            }
            let rotateFailure = failure?.domain == domain ? failure?.failure : nil
            let rotate = canChange && masterKey != nil ? """
                <h3>Rotate \(Page.escape(domain))</h3>
                \(Page.error(rotateFailure))
                <form method="post" action="/dkim/domains/\(Page.segment(domain))/rotate" class="dkim-rotate">\(Page.csrfField(context.principal))
                <label>New selector <input type="text" name="selector" value="\(Page.escape(rotateFailure == nil ? "" : value("selector") ?? ""))"></label>
                <label>Algorithm <select name="alg"><option value="">as the active keys</option><option>rsa</option><option>ed25519</option></select></label>
                <label>RSA bits <select name="bits"><option>2048</option><option>3072</option><option>4096</option></select></label>
                <button>Rotate</button></form>
                """ : ""
            body += """
                <section class="dkim-domain" data-domain="\(Page.escape(domain))">
                <h2>\(Page.escape(domain))</h2>
                \(Page.table(["selector", "algorithm", "bits", "state", "created", "DNS record to publish", ""], rows, id: "dkim-keys-\(Page.escape(domain))"))
                <p><a class="dkim-check" href="/dkim/domains/\(Page.segment(domain))/check">Check DNS</a></p>
                \(rotate)
                </section>
                """
        }
        if records.isEmpty { body += "<p class=\"empty\">No DKIM keys yet.</p>" }
        if canChange && masterKey != nil {
            let generateFailure = failure?.domain == nil ? failure?.failure : nil
            body += """
                <h2>Generate a key</h2>
                \(Page.error(generateFailure))
                <form method="post" action="/dkim/keys" id="dkim-generate">\(Page.csrfField(context.principal))
                \(Page.input("domain", "Signing domain (d=)", value: generateFailure == nil ? nil : value("domain")))
                \(Page.input("selector", "Selector (s=), e.g. 2026a", value: generateFailure == nil ? nil : value("selector")))
                \(Page.select("alg", "Algorithm", options: ["rsa", "ed25519"], selected: value("alg") ?? "rsa"))
                \(Page.select("bits", "RSA bits", options: ["2048", "3072", "4096"], selected: value("bits") ?? "2048"))
                <button id="generate-dkim-key">Generate</button></form>
                """
        }
        return body
    }
}
