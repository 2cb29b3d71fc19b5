import ArgumentParser
import SMGCore
import SMGStore
import Foundation

/// `smgctl pool …`: take egress source addresses out of service and put them back (R17). Every
/// egress of every site reads the drained set from Redis within two seconds; a drained address
/// sends nothing, and a lane whose addresses are all drained holds its mail (never the other lane).
struct PoolCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool", abstract: "Drain and undrain egress source addresses.",
        subcommands: [Drain.self, Undrain.self, ListDrained.self], defaultSubcommand: ListDrained.self)

    static func validAddress(_ text: String) throws {
        guard !text.contains("/"), (try? CIDR(text)) != nil else {
            throw ValidationError("ADDRESS: \"\(text)\" is not an IPv4 or IPv6 address")
        }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop sending from ADDRESS.")
        @OptionGroup var connection: Connection
        @Argument(help: "The source address (as in egress.pool).") var address: String
        @Option(name: .long, help: "Why (shown by `smgctl pool list`).") var reason = "drained by an operator"
        func validate() throws { try PoolCommand.validAddress(address) }
        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let new = try await SourcePoolStore(redis: redis, keys: keys)
                .drain(address, reason: reason, by: "smgctl@\(ProcessInfo.processInfo.hostName)")
            print(new ? "drained \(address)" : "\(address) was drained already (reason updated)")
        }
    }

    struct Undrain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send from ADDRESS again.")
        @OptionGroup var connection: Connection
        @Argument(help: "The source address.") var address: String
        func validate() throws { try PoolCommand.validAddress(address) }
        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let was = try await SourcePoolStore(redis: redis, keys: keys).undrain(address)
            print(was ? "undrained \(address)" : "\(address) was not drained")
        }
    }

    struct ListDrained: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "The drained addresses, one JSON object per line.")
        @OptionGroup var connection: Connection
        func run() async throws {
            let (redis, keys, _) = try connection.open()
            for (address, drain) in try await SourcePoolStore(redis: redis, keys: keys).drained().sorted(by: { $0.key < $1.key }) {
                let o: [String: Any] = ["address": address, "reason": drain.reason, "by": drain.by,
                                        "at": Timestamp.format(Date(timeIntervalSince1970: Double(drain.at) / 1000))]
                let data = try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            }
        }
    }
}
