import ArgumentParser
import SMGBus
import Foundation

/// `--curve-key-file`: the keypair smgctl uses as a CurveZMQ client of the processes' taps.
struct CurveKeyOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "CurveZMQ keypair to connect to the processes' taps with, when the gateway's bus uses CURVE (default: $SMG_BUS_CURVE_KEY_FILE; its public key must be authorized by the processes, e.g. the site's own key file).",
        valueName: "file"))
    var curveKeyFile: String?

    /// The client's CURVE settings; nil = plaintext (CURVE endpoints are then refused, and named).
    func security() throws -> BusSecurity? {
        let path = curveKeyFile ?? ProcessInfo.processInfo.environment["SMG_BUS_CURVE_KEY_FILE"] ?? ""
        if path.isEmpty { return nil }
        do { return BusSecurity(keyPair: try CurveKeyFile.read(path: path)) } catch {
            throw ValidationError("--curve-key-file: \(error.message)")
        }
    }
}

/// `smgctl bus …`: the CurveZMQ keys of the bus between the gateway's processes.
struct BusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bus",
        abstract: "Manage the CurveZMQ keys of the bus between the gateway's processes (bus.curve_key_file).",
        subcommands: [Keygen.self, Pubkey.self])

    struct Keygen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a CurveZMQ keypair file (mode 0600) and print its public key.",
            discussion: """
                The file is what bus.curve_key_file names. The printed public key (Z85) goes into \
                the bus.curve_authorized_keys file of every process that must accept this one \
                (not needed where every process uses the same key file).
                """)

        @Option(name: .long, help: ArgumentHelp("The key file to write.", valueName: "file"))
        var out: String

        @Flag(name: .long, help: "Replace an existing file (the old keypair is gone: update the authorized lists).")
        var force = false

        func run() async throws {
            let pair: CurveKeyPair
            do {
                pair = try CurveKeyPair.generate()
                try CurveKeyFile.write(pair, to: out, replace: force,
                                       comment: "created \(ISO8601DateFormatter().string(from: Date()))")
            } catch {
                throw ValidationError("--out: \(error.message)")
            }
            print(pair.publicZ85)
            FileHandle.standardError.write(Data("smgctl: wrote \(out) (mode 0600); the line above is its public key\n".utf8))
        }
    }

    struct Pubkey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the public key (Z85) of a CurveZMQ key file, e.g. for a bus.curve_authorized_keys file.")

        @Argument(help: ArgumentHelp("A key file made by smgctl bus keygen.", valueName: "file"))
        var file: String

        func run() async throws {
            do { print(try CurveKeyFile.read(path: file).publicZ85) } catch {
                throw ValidationError("<file>: \(error.message)")
            }
        }
    }
}
