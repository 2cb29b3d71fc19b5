import Hummingbird
import SMGAdmin
import SMGCore
import SMGStore
import Foundation

/// Egress source addresses: what every egress announces, and the drained ones (R17).
enum PoolFields {
    static let drain = ["address", "reason"]

    /// An IPv4 or IPv6 address (no prefix), checked as `smgctl pool drain` checks it.
    static func address(_ text: String) throws -> String {
        let t = text.trimmingCharacters(in: .whitespaces)
        guard !t.isEmpty else { throw Failure.badRequest("address", "required") }
        guard !t.contains("/"), (try? CIDR(t)) != nil else {
            throw Failure.badRequest("address", "\"\(t)\" is not an IPv4 or IPv6 address")
        }
        return t
    }

    static func drain(_ address: String, _ d: SourcePoolStore.Drain) -> JSONValue {
        .object(["address": .string(address), "reason": .string(d.reason), "by": .string(d.by),
                 "at": d.at > 0 ? .string(isoTime(ms: d.at)) : .null])
    }

    static func member(_ address: String, _ m: SourcePoolStore.Member, drained: Bool) -> JSONValue {
        .object(["address": .string(address), "lane": .string(m.lane), "helo": .string(m.helo),
                 "seen": .string(isoTime(ms: m.seen)), "drained": .bool(drained)])
    }
}

extension Admin {
    var pools: SourcePoolStore { SourcePoolStore(redis: redis, keys: keys) }

    func poolRoutes(_ router: Router<AdminContext>) {
        // MARK: API

        router.get("/api/v1/pools") { request, context -> Response in
            let members = try await pools.members(), drained = try await pools.drained()
            return JSONOut.response(JSONValue.object([
                "members": .array(members.sorted { ($0.value.lane, $0.key) < ($1.value.lane, $1.key) }
                    .map { PoolFields.member($0.key, $0.value, drained: drained[$0.key] != nil) }),
                "drained": .array(drained.sorted { $0.key < $1.key }.map { PoolFields.drain($0.key, $0.value) }),
            ]))
        }

        router.post("/api/v1/pools/drained") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: PoolFields.drain)
            let (address, drain, new) = try await drainAddress(input, by: try context.who)
            return JSONOut.response(PoolFields.drain(address, drain), status: new ? .created : .ok)
        }

        router.delete("/api/v1/pools/drained/:address") { request, context -> Response in
            try await undrainAddress(try context.param("address"), by: try context.who)
            return JSONOut.noContent()
        }

        // MARK: Pages

        router.get("/pools") { request, context -> Response in
            Page.render("Pools", context, request: request, body: try await poolPage(context: context, failure: nil, entered: nil))
        }

        router.post("/pools/drained") { request, context -> Response in
            let input = try await Input.read(request, context: context, fields: PoolFields.drain)
            do {
                let (address, _, new) = try await drainAddress(input, by: try context.who)
                return redirect("/pools", notice: new ? "Drained \(address)." : "\(address) was drained already (reason updated).")
            } catch {
                guard let failure = Failure.from(error), failure.status != .internalServerError else { throw error }
                return Page.render("Pools", context, request: request, status: failure.status,
                                   body: try await poolPage(context: context, failure: failure, entered: input))
            }
        }

        router.post("/pools/drained/:address/delete") { request, context -> Response in
            let address = try await undrainAddress(try context.param("address"), by: try context.who)
            return redirect("/pools", notice: "Undrained \(address): it sends again within two seconds.")
        }
    }

    // MARK: The operations (shared by pages and API)

    func drainAddress(_ input: Input, by who: Principal) async throws -> (address: String, drain: SourcePoolStore.Drain, new: Bool) {
        let address = try PoolFields.address(try input.required("address"))
        let reason = try input.required("reason")
        guard reason.count <= 500 else { throw Failure.badRequest("reason", "at most 500 characters") }
        let before = try await pools.drained()[address]
        let now = Date()
        let by = "\(who.name) (smg-admin)"
        let new = try await pools.drain(address, reason: reason, by: by, now: now)
        let drain = SourcePoolStore.Drain(reason: reason, by: by, at: Int64(now.timeIntervalSince1970 * 1000))
        await audited(who, "pool.drain", target: address, before: before.map { PoolFields.drain(address, $0) },
                      after: PoolFields.drain(address, drain))
        return (address, drain, new)
    }

    @discardableResult
    func undrainAddress(_ text: String, by who: Principal) async throws -> String {
        let address = try PoolFields.address(text)
        guard let before = try await pools.drained()[address] else {
            throw Failure.notFound("address", "\(address) is not drained")
        }
        guard try await pools.undrain(address) else { throw Failure.notFound("address", "\(address) is not drained") }
        await audited(who, "pool.undrain", target: address, before: PoolFields.drain(address, before))
        return address
    }

    // MARK: Page parts

    func poolPage(context: AdminContext, failure: Failure?, entered: Input?) async throws -> String {
        let members = try await pools.members(), drained = try await pools.drained()
        let canChange = context.principal?.canChange == true
        let undrain = { (address: String) -> String in
            Page.form("/pools/drained/\(Page.segment(address))/delete", context, button: "Undrain",
                      confirm: "Send from \(address) again?", inline: true)
        }
        let drainRow = { (address: String) -> String in
            Page.form("/pools/drained", context, button: "Drain", inline: true,
                      fields: "<input type=\"hidden\" name=\"address\" value=\"\(Page.escape(address))\">"
                        + "<input type=\"text\" name=\"reason\" placeholder=\"reason\" required> ")
        }
        let memberRows = members.sorted { ($0.value.lane, $0.key) < ($1.value.lane, $1.key) }.map { address, m -> [String] in
            let d = drained[address]
            return [Page.escape(address), Page.escape(m.lane), Page.escape(m.helo), Page.escape(isoTime(ms: m.seen)),
                    d.map { "<b class=\"drained\">drained</b>: \(Page.escape($0.reason))" } ?? "in service",
                    d == nil ? drainRow(address) : undrain(address)]
        }
        let drainedRows = drained.sorted { $0.key < $1.key }.map { address, d -> [String] in
            [Page.escape(address), Page.escape(d.reason), Page.escape(d.by), d.at > 0 ? Page.escape(isoTime(ms: d.at)) : "—",
             undrain(address)]
        }
        let value = { (name: String) -> String? in ((try? entered?.string(name)) ?? nil) }
        let form = canChange ? """
            <h2>Drain an address</h2>
            \(Page.error(failure))
            <form method="post" action="/pools/drained" id="pool-drain">\(Page.csrfField(context.principal))
            \(Page.input("address", "Source address (IPv4 or IPv6, as in egress.pool)", value: value("address")))
            \(Page.input("reason", "Reason", value: value("reason")))
            <button id="drain-address">Drain</button></form>
            """ : ""
        return "<p>A drained address sends nothing (every egress of every site within two seconds); a lane whose addresses are all drained holds its mail.</p>"
            + "<h2>Source addresses</h2>"
            + Page.table(["address", "lane", "HELO", "last announced", "state", ""], memberRows, id: "pool-members",
                         empty: "No egress has announced its addresses yet.")
            + "<h2>Drained</h2>"
            + Page.table(["address", "reason", "by", "since", ""], drainedRows, id: "pool-drained", empty: "Nothing is drained.")
            + form
    }
}
