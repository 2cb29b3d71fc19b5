import Hummingbird
import SMGAdmin
import SMGBlacklist
import SMGCore
import Foundation

/// DNS blocklist listings of the egress addresses and their removal requests (R19).
enum ListingFields {
    static let requested = ["address", "zone", "note"]

    static func time(_ seconds: Int?) -> JSONValue {
        seconds.map { .string(isoTime(ms: Int64($0) * 1000)) } ?? .null
    }

    static func json(_ l: Listing) -> JSONValue {
        .object([
            "address": .string(l.address), "lane": .string(l.lane), "zone": .string(l.zone), "code": .string(l.code),
            "meaning": .string(l.meaning), "text": l.text.map { .string($0) } ?? .null, "delist_url": .string(l.delistURL),
            "state": .string(l.state.rawValue), "since": time(l.since), "checked": time(l.checked),
            "requested_at": time(l.requestedAt), "requested_by": l.requestedBy.map { .string($0) } ?? .null,
            "note": l.note.map { .string($0) } ?? .null, "cleared_at": time(l.clearedAt),
            "instructions": l.isActive ? .string(l.instructions) : .null,
        ])
    }

    /// Newest first (then by address and zone).
    static func sorted(_ listings: [Listing]) -> [Listing] {
        listings.sorted { ($1.since, $0.address, $0.zone) < ($0.since, $1.address, $1.zone) }
    }

    /// A link only for http(s) URLs; anything else is shown as text.
    static func link(_ url: String) -> String {
        let lower = url.lowercased()
        guard lower.hasPrefix("https://") || lower.hasPrefix("http://") else { return url.isEmpty ? "—" : Page.escape(url) }
        return "<a class=\"delist-url\" href=\"\(Page.escape(url))\" rel=\"noopener noreferrer\" target=\"_blank\">\(Page.escape(url))</a>"
    }
}

extension Admin {
    var listings: ListingStore { ListingStore(redis: redis, keys: keys) }

    func blacklistRoutes(_ router: Router<AdminContext>) {
        // MARK: API

        router.get("/api/v1/blacklist") { request, context -> Response in
            JSONOut.response(ListingFields.sorted(try await listings.all()).map(ListingFields.json))
        }

        router.post("/api/v1/blacklist/requested") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: ListingFields.requested)
            return JSONOut.response(ListingFields.json(try await markRemovalRequested(input, by: try context.who)))
        }

        // MARK: Pages

        router.get("/blacklist") { request, context -> Response in
            Page.render("Blacklists", context, request: request, body: try await blacklistPage(context: context, failure: nil))
        }

        router.post("/blacklist/requested") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: ListingFields.requested)
            do {
                let l = try await markRemovalRequested(input, by: try context.who)
                return redirect("/blacklist", notice: "\(l.address) on \(l.zone): removal requested.")
            } catch {
                guard let failure = Failure.from(error), failure.status != .internalServerError else { throw error }
                return Page.render("Blacklists", context, request: request, status: failure.status,
                                   body: try await blacklistPage(context: context, failure: failure))
            }
        }
    }

    // MARK: The operations (shared by pages and API)

    func markRemovalRequested(_ input: Input, by who: Principal) async throws -> Listing {
        let address = try PoolFields.address(try input.required("address"))
        let zone = try input.required("zone").lowercased()
        let note = try input.string("note").flatMap { $0.isEmpty ? nil : $0 }
        if let note, note.count > 1000 { throw Failure.badRequest("note", "at most 1000 characters") }
        let before = try await listings.all().first { $0.address == address && $0.zone == zone && $0.isActive }
        guard before != nil, let after = try await listings.markRequested(address: address, zone: zone, by: who.name, note: note) else {
            throw Failure.notFound("address", "no open listing of \(address) on \(zone)")
        }
        await audited(who, "blacklist.requested", target: after.key, before: before.map(ListingFields.json), after: ListingFields.json(after))
        return after
    }

    // MARK: Page parts

    func blacklistPage(context: AdminContext, failure: Failure?) async throws -> String {
        let all = ListingFields.sorted(try await listings.all())
        let since = { (s: Int) -> String in Page.escape(isoTime(ms: Int64(s) * 1000)) }
        let active = all.filter(\.isActive).map { l -> [String] in
            var state = "<span class=\"state state-\(l.state.rawValue)\">\(Page.escape(l.state.rawValue))</span>"
            if let by = l.requestedBy {
                state += "<br><small>by \(Page.escape(by))\(l.requestedAt.map { " at \(since($0))" } ?? "")"
                    + "\(l.note.map { ": \(Page.escape($0))" } ?? "")</small>"
            }
            let request = Page.form("/blacklist/requested", context, button: l.state == .open ? "Removal requested" : "Update note",
                                    fields: "<input type=\"hidden\" name=\"address\" value=\"\(Page.escape(l.address))\">"
                                        + "<input type=\"hidden\" name=\"zone\" value=\"\(Page.escape(l.zone))\">"
                                        + "<input type=\"text\" name=\"note\" placeholder=\"note (ticket, what was done)\" value=\"\(Page.escape(l.note ?? ""))\"> ")
            return [Page.escape(l.address), Page.escape(l.lane), Page.escape(l.zone),
                    "\(Page.escape(l.code)) \(Page.escape(l.meaning))" + (l.text.map { "<br><small>\(Page.escape($0))</small>" } ?? ""),
                    since(l.since), state, ListingFields.link(l.delistURL),
                    "<small class=\"instructions\">\(Page.escape(l.instructions))</small>", request]
        }
        let cleared = all.filter { !$0.isActive }.map { l -> [String] in
            [Page.escape(l.address), Page.escape(l.lane), Page.escape(l.zone), "\(Page.escape(l.code)) \(Page.escape(l.meaning))",
             since(l.since), l.clearedAt.map(since) ?? "—", Page.escape(l.requestedBy ?? "") + (l.note.map { ": \(Page.escape($0))" } ?? "")]
        }
        return Page.error(failure)
            + "<p>Listings of the egress addresses found by the blacklist monitor (daily, or <code>smgctl blacklist check</code>). "
            + "Request removal at the list's page, then record it here.</p>"
            + "<h2>Active</h2>"
            + Page.table(["address", "lane", "zone", "code", "since", "state", "delisting", "what to do", ""], active,
                         id: "blacklist-active", empty: "No address is listed.")
            + "<h2>Cleared</h2>"
            + Page.table(["address", "lane", "zone", "code", "since", "cleared", "request"], cleared, id: "blacklist-cleared",
                         empty: "No cleared listings.")
    }
}
