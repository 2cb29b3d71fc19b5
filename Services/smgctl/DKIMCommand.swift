import ArgumentParser
import Foundation
import Logging
import SMGDKIM
import SMGDKIMKeys
import SMGDNS
import SMGRedis
import SMGStore

/// `smgctl dkim …` — DKIM key management. Private keys are generated here, sealed with the
/// master key and written to Redis; no command ever prints them.
struct DKIM: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dkim",
        abstract: "Manage DKIM signing keys (per domain and selector, private keys encrypted at rest).",
        subcommands: [InitMasterKey.self, Keygen.self, List.self, Rotate.self, Retire.self, Check.self])

    struct MasterKeyOption: ParsableArguments {
        @Option(name: .long, help: "Master key file (default: $SMG_DKIM_MASTER_KEY_FILE or /etc/smg/dkim-master.key).")
        var masterKeyFile: String?

        var path: String {
            masterKeyFile ?? ProcessInfo.processInfo.environment["SMG_DKIM_MASTER_KEY_FILE"] ?? "/etc/smg/dkim-master.key"
        }

        func load() throws -> DKIMMasterKey {
            do { return try DKIMMasterKey.load(path: path) } catch {
                throw ValidationError("--master-key-file: \(error)")
            }
        }
    }

    static func store(_ connection: Connection, masterKey: DKIMMasterKey?) throws -> DKIMKeyStore {
        let (redis, keys, _) = try connection.open()
        return DKIMKeyStore(redis: redis, keys: keys, masterKey: masterKey)
    }

    /// The option a field of a new key is given with.
    static func argument(_ field: DKIMKeyInputError.Field) -> String {
        switch field {
        case .domain: "<domain>"
        case .selector: "--selector"
        case .alg: "--alg"
        case .bits: "--bits"
        }
    }

    /// Runs one of `DKIMNewKey`'s checks; its error as the option's.
    static func checked<T>(_ body: () throws(DKIMKeyInputError) -> T) throws -> T {
        do { return try body() } catch { throw ValidationError("\(argument(error.field)): \(error.message)") }
    }

    static func algorithm(_ text: String?) throws -> DKIMAlgorithm? {
        try checked { () throws(DKIMKeyInputError) in try DKIMNewKey.algorithm(text) }
    }

    static func checkNames(domain: String, selector: String?) throws {
        _ = try checked { () throws(DKIMKeyInputError) in try DKIMNewKey.domain(domain) }
        if let selector { _ = try checked { () throws(DKIMKeyInputError) in try DKIMNewKey.selector(selector) } }
    }

    /// The new key's options, shared by keygen and rotate.
    struct NewKeyOptions: ParsableArguments {
        @Option(name: .long, help: "Selector (s=) of the new key, e.g. 2026a.") var selector: String
        @Option(name: .long, help: "rsa or ed25519 (keygen: rsa; rotate: the algorithm of the active keys).") var alg: String?
        @Option(name: .long, help: "RSA key size: 2048 (default), 3072 or 4096.") var bits: Int = 2048

        func check(domain: String) throws {
            _ = try DKIM.checked { () throws(DKIMKeyInputError) in
                try DKIMNewKey(domain: domain, selector: selector, algorithm: alg, bits: bits)
            }
        }
    }

    static func printRecord(_ record: DKIMKeyRecord) {
        print("record: \(record.recordName) TXT")
        print("value:  \(record.dnsRecord.text)")
        print("zone file:")
        print(record.dnsRecord.zoneFileLine(selector: record.selector, domain: record.domain))
    }

    struct InitMasterKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "init-master-key",
            abstract: "Create the master key file (32 random octets, mode 0600); refuses to overwrite.")
        @OptionGroup var master: MasterKeyOption

        func run() async throws {
            do { try DKIMMasterKey.create(path: master.path) } catch {
                throw ValidationError("--master-key-file: \(error)")
            }
            print("created \(master.path) (mode 0600). Install the same file on every signer; keep a backup offline.")
        }
    }

    struct Keygen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a signing key for a domain and print the DNS TXT record to publish.")
        @OptionGroup var connection: Connection
        @OptionGroup var master: MasterKeyOption
        @Argument(help: "The signing domain (d=), e.g. customer.example.") var domain: String
        @OptionGroup var key: NewKeyOptions

        func validate() throws { try key.check(domain: domain) }

        func run() async throws {
            let store = try DKIM.store(connection, masterKey: try master.load())
            let record: DKIMKeyRecord
            do {
                record = try await store.create(domain: domain, selector: key.selector,
                                                algorithm: try DKIM.algorithm(key.alg) ?? .rsaSHA256, bits: key.bits)
            } catch let error as DKIMError where error.code == .exists {
                throw ValidationError("--selector: \(error.message)")
            }
            print("created \(record.algorithm.rawValue) key \(record.selector) for \(record.domain) (active)")
            DKIM.printRecord(record)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List keys (one JSON object per line; never private material).")
        @OptionGroup var connection: Connection
        @Argument(help: "Only this domain.") var domain: String?

        func validate() throws { if let domain { try DKIM.checkNames(domain: domain, selector: nil) } }

        func run() async throws {
            let store = try DKIM.store(connection, masterKey: nil)
            for record in try await store.list(domain: domain) {
                let data = try JSONSerialization.data(withJSONObject: record.publicSummary, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a new active key; the domain's active keys of that algorithm become retiring (keep them published for the verification window, e.g. 7 days).")
        @OptionGroup var connection: Connection
        @OptionGroup var master: MasterKeyOption
        @Argument(help: "The signing domain.") var domain: String
        @OptionGroup var key: NewKeyOptions

        func validate() throws { try key.check(domain: domain) }

        func run() async throws {
            let store = try DKIM.store(connection, masterKey: try master.load())
            let result: (created: DKIMKeyRecord, retired: [DKIMKeyRecord])
            do {
                result = try await store.rotate(domain: domain, newSelector: key.selector,
                                                algorithm: try DKIM.algorithm(key.alg), bits: key.bits)
            } catch let error as DKIMError where error.code == .exists {
                throw ValidationError("--selector: \(error.message)")
            } catch let error as DKIMError where error.code == .notFound {
                throw ValidationError("<domain>: \(error.message)")
            } catch let error as DKIMError where error.code == .ambiguous {
                throw ValidationError("--alg: \(error.message)")
            }
            print("created \(result.created.algorithm.rawValue) key \(result.created.selector) for \(result.created.domain) (active)")
            for old in result.retired {
                print("retiring \(old.selector): keep \(old.recordName) published until mail signed with it has been verified (7 days)")
            }
            DKIM.printRecord(result.created)
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a retiring key (after its verification window); an active key is refused (rotate first). Unpublish its TXT record afterwards.")
        @OptionGroup var connection: Connection
        @Argument(help: "The signing domain.") var domain: String
        @Option(name: .long, help: "The selector of the retiring key.") var selector: String

        func validate() throws { try DKIM.checkNames(domain: domain, selector: selector) }

        func run() async throws {
            let store = try DKIM.store(connection, masterKey: nil)
            let record: DKIMKeyRecord
            do {
                record = try await store.retire(domain: domain, selector: selector)
            } catch let error as DKIMError where error.code == .notFound || error.code == .stillActive {
                throw ValidationError("--selector: \(error.message)")
            }
            print("retired \(record.algorithm.rawValue) key \(record.selector) of \(record.domain); \(record.recordName) TXT may be removed from the DNS now")
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Look up each key's published TXT record and compare it with the stored public key. Exit 1 on any mismatch.")
        @OptionGroup var connection: Connection
        @Argument(help: "The signing domain.") var domain: String
        @Option(name: .long, help: "DNS server host:port (default: /etc/resolv.conf).") var dnsServer: String?

        func validate() throws {
            try DKIM.checkNames(domain: domain, selector: nil)
            if let dnsServer {
                do { _ = try DNSResolverConfiguration.Server(parsing: dnsServer) } catch {
                    throw ValidationError("--dns-server: \(error)")
                }
            }
        }

        func run() async throws {
            let store = try DKIM.store(connection, masterKey: nil)
            let records = try await store.list(domain: domain)
            guard !records.isEmpty else { throw ValidationError("<domain>: no keys stored for \(domain)") }
            var logger = Logger(label: "smgctl.dns")
            logger.logLevel = .warning
            let configuration: DNSResolverConfiguration
            if let dnsServer {
                configuration = DNSResolverConfiguration(servers: [try DNSResolverConfiguration.Server(parsing: dnsServer)])
            } else {
                configuration = try DNSResolverConfiguration.fromResolvConf()
            }
            let resolver = try DNSResolver(configuration: configuration, cache: nil, logger: logger)
            var failures = 0
            for result in await DKIMPublicationCheck.check(records: records, resolver: resolver) {
                if result.verdict != .ok { failures += 1 }
                print("\(result.record.recordName) \(result.record.state.rawValue) \(result.record.algorithm.rawValue): \(result.status)")
            }
            if failures > 0 { throw ExitCode(1) }
        }
    }
}
