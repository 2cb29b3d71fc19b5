import ArgumentParser
import SMGCore
import SMGStore
import SMGDNS
import SMGBlacklist
import Logging
import Foundation

/// `smgctl blacklist …`: the blacklist monitor's check on demand, the listings (removal
/// requests) and marking one as requested (R19).
struct BlacklistCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blacklist", abstract: "DNS blocklist checks of the egress addresses and their removal requests.",
        subcommands: [Check.self, Status.self, Requested.self], defaultSubcommand: Status.self)

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the egress addresses now, as the daily run does (records listings, drains listed good addresses, notifies).")
        @OptionGroup var connection: Connection
        @Option(name: .long, help: "Only this address.") var address: String?
        @Option(name: [.customLong("dns-server"), .customLong("dns")],
                help: "DNS server host:port (default: $SMG_DNS_SERVERS, else /etc/resolv.conf).")
        var dnsServer: String?
        @Option(name: .long, help: "Zones, as blacklist.zones (default: $SMG_BLACKLIST_ZONES, else the shipped list).") var zones: String?
        @Option(name: .long, help: "Operators' mailbox for notices (default: $SMG_BLACKLIST_NOTIFY; empty: none).") var notify: String?
        @Option(name: .long, help: "The gateway's own domain for notices (default: $SMG_NDR_DOMAIN).") var ownDomain: String?
        @Flag(name: .long, help: "JSON lines instead of text.") var json = false

        func validate() throws {
            if let address, DNSIPAddress(parsing: address) == nil { throw ValidationError("--address: \"\(address)\" is not an IP address") }
            if let zones { do { _ = try DNSBLZone.parse(zones) } catch { throw ValidationError("--zones: \(error)") } }
        }

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let env = ProcessInfo.processInfo.environment
            var logger = Logger(label: "smgctl.blacklist")
            logger.logLevel = .error
            let resolver = try TLSCommand.resolver(servers: dnsServer, trusted: false)
            let zoneText = zones ?? env["SMG_BLACKLIST_ZONES"]
            let parsed = try zoneText.map { try DNSBLZone.parse($0) } ?? DNSBLZone.defaults
            let mailbox = notify ?? env["SMG_BLACKLIST_NOTIFY"] ?? ""
            let store = MessageStore(redis: redis, keys: keys)
            let monitor = BlacklistMonitor(
                checker: DNSBLChecker(resolver: resolver), zones: parsed, store: store,
                extra: address.map { a in [(lane: "good", address: a)] } ?? [], notify: mailbox.isEmpty ? nil : mailbox,
                ownDomain: ownDomain ?? env["SMG_NDR_DOMAIN"] ?? "localhost", site: "smgctl",
                instance: "smgctl@\(ProcessInfo.processInfo.hostName)", logger: logger)
            let lock = BlacklistRunLock(redis: redis, keys: keys)
            guard let report = try await lock.once("manual:\(UUID().uuidString)", owner: monitor.instance, {
                try await monitor.run(kind: "manual", only: address.map { [$0] })
            }) else {
                throw ValidationError("another blacklist check is running now; try again in a minute")
            }
            try await store.append(report.events)
            for r in report.results {
                let (status, detail): (String, String) = switch r.result {
                case .clean: ("clean", "")
                case .listed(let code, let meaning, let text): ("LISTED", "\(code) \(meaning)" + (text.map { " — \($0)" } ?? ""))
                case .failed(let why): ("FAILED", why)
                }
                if json {
                    let o: [String: String] = ["address": r.address, "lane": r.lane, "zone": r.zone, "status": status.lowercased(),
                                               "detail": detail]
                    print(String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self))
                } else {
                    print("\(r.address) (\(r.lane)) \(r.zone): \(status)\(detail.isEmpty ? "" : " \(detail)")")
                }
            }
            if !json {
                print("\(report.listed.count) new listing(s), \(report.cleared.count) cleared, \(report.failures) failed check(s)"
                      + (report.allGoodListed ? "; EVERY GOOD ADDRESS IS LISTED: good mail waits" : ""))
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The listings (removal requests): open, requested, cleared — with what to do.")
        @OptionGroup var connection: Connection
        @Flag(name: .long, help: "Also cleared listings.") var all = false
        @Flag(name: .long, help: "JSON lines.") var json = false
        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let listings = try await ListingStore(redis: redis, keys: keys).all().filter { all || $0.isActive }
            for l in listings {
                if json {
                    print(String(decoding: try BlacklistCommand.encoder.encode(l), as: UTF8.self))
                    continue
                }
                print("\(l.address) (\(l.lane)) on \(l.zone): \(l.state.rawValue), \(l.code) \(l.meaning), since "
                      + Timestamp.format(Date(timeIntervalSince1970: Double(l.since))))
                if let t = l.text { print("    the list says: \(t)") }
                if l.state != .cleared { print("    \(l.instructions)") }
                if let by = l.requestedBy { print("    removal requested by \(by)" + (l.note.map { ": \($0)" } ?? "")) }
            }
            if listings.isEmpty && !json { print("no listings") }
        }
    }

    struct Requested: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "requested", abstract: "Record that removal was requested from the list's operator.")
        @OptionGroup var connection: Connection
        @Argument(help: "The listed address.") var address: String
        @Argument(help: "The zone that lists it.") var zone: String
        @Option(name: .long, help: "A note (ticket number, what was done).") var note: String?
        @Option(name: .customLong("operator"), help: "Who (default: $SUDO_USER or $USER).") var actor: String?
        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let env = ProcessInfo.processInfo.environment
            let who = actor ?? env["SUDO_USER"] ?? env["USER"] ?? "operator"
            guard let l = try await ListingStore(redis: redis, keys: keys).markRequested(address: address, zone: zone, by: who, note: note)
            else { throw ValidationError("<address> <zone>: no open listing of \(address) on \(zone)") }
            print("\(l.address) on \(l.zone): removal requested")
        }
    }

    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
