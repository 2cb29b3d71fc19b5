import ArgumentParser
import SMGCore
import SMGAccounts
import SMGStore
import SMGTLSPolicy
import Foundation

/// `smgctl customer …`: customers and their sending policy (R2–R7).
struct CustomerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "customer", abstract: "Manage customers and their policies.",
        subcommands: [Add.self, Update.self, Show.self, List.self, Brake.self])

    struct Policy: ParsableArguments {
        @Option(name: .long, help: "Allowed source network (CIDR, IPv4 or IPv6); repeatable (R2).")
        var network: [String] = []
        @Option(name: .long, help: "Sender domain owned by the customer; repeatable (R5).")
        var domain: [String] = []
        @Option(name: .long, help: "Messages per minute across all sites (R6); default: no limit.")
        var rateLimit: Int?
        @Flag(name: .long, help: "Refuse mail sent without TLS (R7).")
        var requireTLS = false
        @Flag(name: .long, help: "Require matching forward-confirmed reverse DNS of the client IP (R4).")
        var reverseDNS = false
        @Option(name: .long, help: "Largest message in bytes (below the listener's limit).")
        var maxSize: Int?
        @Option(name: .long, help: "Most recipients per message.")
        var maxRecipients: Int?
        @Option(name: .long, help: "Bare LF line ends in messages: reject or normalize (default: ingress.bare_newline).")
        var bareNewline: String?
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a customer (an existing one is changed with `customer update`).")
        @OptionGroup var connection: Connection
        @Argument(help: "Customer id (letters, digits, - _ .).") var id: String
        @Option(name: .long, help: "Display name.") var name: String?
        @OptionGroup var policy: Policy

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let customer = Customer(id: id, name: name, networks: policy.network, domains: policy.domain,
                                    rateLimitPerMinute: policy.rateLimit, requireTLS: policy.requireTLS,
                                    reverseDNSCheck: policy.reverseDNS, maxMessageSize: policy.maxSize,
                                    maxRecipients: policy.maxRecipients, bareNewline: policy.bareNewline)
            let created: Customer
            do { created = try await AccountStore(redis: redis, keys: keys).createCustomer(customer) } catch let error as AccountError {
                throw ValidationError(error.code == .exists ? "<id>: customer \"\(id)\" exists; change it with smgctl customer update"
                                                             : Self.option(error))
            }
            print(try String(decoding: JSONEncoder.sorted.encode(created), as: UTF8.self))
        }

        /// The module names fields as smgctl's options; the message names the argument.
        static func option(_ error: AccountError) -> String {
            guard let field = error.field else { return error.message }
            let argument = field == "id" ? "<id>" : field == "networks" ? "--network (networks)" : field == "domains" ? "--domain (domains)"
                : "--\(field)"
            return argument + error.message.dropFirst(field.count)
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change the given settings of a customer; every setting not given stays as it is.")
        @OptionGroup var connection: Connection
        @Argument(help: "Customer id.") var id: String
        @Option(name: .long, help: "Display name.") var name: String?
        @Option(name: .long, help: "Allowed source network (CIDR); repeatable; replaces the list.") var network: [String] = []
        @Flag(name: .long, help: "Remove every network (the customer can send from nowhere).") var noNetworks = false
        @Option(name: .long, help: "Sender domain; repeatable; replaces the list.") var domain: [String] = []
        @Option(name: .long, help: "Messages per minute; 0 = no limit.") var rateLimit: Int?
        @Flag(inversion: .prefixedNo, help: "Refuse mail sent without TLS.") var requireTLS: Bool?
        @Flag(inversion: .prefixedNo, help: "Require matching forward-confirmed reverse DNS.") var reverseDNS: Bool?
        @Option(name: .long, help: "Largest message in bytes; 0 = the listener's.") var maxSize: Int?
        @Option(name: .long, help: "Most recipients per message; 0 = the listener's.") var maxRecipients: Int?
        @Option(name: .long, help: "reject, normalize, or default (ingress.bare_newline).") var bareNewline: String?
        @Flag(inversion: .prefixedNo, help: "Disable the customer (refuse all its mail) or enable it.") var disabled: Bool?

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            var update = CustomerUpdate(name: name, requireTLS: requireTLS, reverseDNSCheck: reverseDNS, disabled: disabled)
            if noNetworks { update.networks = [] } else if !network.isEmpty { update.networks = network }
            if !domain.isEmpty { update.domains = domain }
            if let rateLimit { update.rateLimitPerMinute = .some(rateLimit == 0 ? nil : rateLimit) }
            if let maxSize { update.maxMessageSize = .some(maxSize == 0 ? nil : maxSize) }
            if let maxRecipients { update.maxRecipients = .some(maxRecipients == 0 ? nil : maxRecipients) }
            if let bareNewline { update.bareNewline = .some(bareNewline == "default" ? nil : bareNewline) }
            guard !update.isEmpty else { throw ValidationError("nothing to change: give at least one option") }
            let result: (before: Customer, after: Customer)
            do { result = try await AccountStore(redis: redis, keys: keys).updateCustomer(id, update) } catch let error as AccountError {
                throw ValidationError(Add.option(error))
            }
            print(try String(decoding: JSONEncoder.sorted.encode(result.after), as: UTF8.self))
        }
    }

    struct Brake: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a customer's own limits of the compromised-account brake (unset ones keep the classifier's brake.* defaults).")
        @OptionGroup var connection: Connection
        @Argument(help: "Customer id.") var id: String
        @Option(name: .long, help: "Messages in one hour that count as a burst whatever the baseline.") var minBurst: Int?
        @Option(name: .long, help: "A burst must also exceed this many times the busiest hour of the previous 7 days.") var volumeFactor: Double?
        @Option(name: .long, help: "Share of spam/suspect verdicts (0–1) that brakes.") var badShare: Double?
        @Option(name: .long, help: "Messages needed before --bad-share applies.") var minVerdicts: Int?
        @Option(name: .long, help: "Distinct recipient domains in one hour that brake.") var maxRecipientDomains: Int?
        @Option(name: .long, help: "Bounced recipients per message that brake.") var bounceShare: Double?
        @Option(name: .long, help: "Bounces needed before --bounce-share applies.") var minBounces: Int?
        @Option(name: .long, help: "refuse (451 4.7.1 at MAIL) or hold (accept and hold).") var action: String?
        @Flag(name: .long, help: "Forget this customer's own limits (back to the classifier's defaults).") var reset = false

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let store = AccountStore(redis: redis, keys: keys)
            guard var customer = try await store.customer(id) else { throw ValidationError("<id>: no customer \"\(id)\"") }
            if reset {
                customer.brake = nil
            } else {
                var limits = customer.brake ?? BrakeLimits()
                if let minBurst { limits.minBurst = minBurst }
                if let volumeFactor { limits.volumeFactor = volumeFactor }
                if let badShare { limits.badShare = badShare }
                if let minVerdicts { limits.minVerdicts = minVerdicts }
                if let maxRecipientDomains { limits.maxRecipientDomains = maxRecipientDomains }
                if let bounceShare { limits.bounceShare = bounceShare }
                if let minBounces { limits.minBounces = minBounces }
                if let action {
                    guard let a = BrakeAction(rawValue: action) else { throw ValidationError("--action: expected refuse or hold") }
                    limits.action = a
                }
                customer.brake = limits
            }
            do { try customer.validate() } catch let error as AccountError {
                throw ValidationError("--\(error.message.replacingOccurrences(of: "brake.", with: "").replacingOccurrences(of: "_", with: "-"))")
            }
            try await store.saveCustomer(customer)
            print(try String(decoding: JSONEncoder.sorted.encode(customer), as: UTF8.self))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a customer and its logins (no passwords).")
        @OptionGroup var connection: Connection
        @Argument(help: "Customer id.") var id: String

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let store = AccountStore(redis: redis, keys: keys)
            guard let customer = try await store.customer(id) else { throw ValidationError("<id>: no customer \"\(id)\"") }
            print(try String(decoding: JSONEncoder.sorted.encode(customer), as: UTF8.self))
            for login in try await store.logins(of: id) { print("login: \(login)") }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List customer ids.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            for id in try await AccountStore(redis: redis, keys: keys).customerIDs() { print(id) }
        }
    }
}

/// `smgctl account …`: SMTP AUTH logins. Passwords are stored as scrypt hashes only.
struct AccountCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "account", abstract: "Manage SMTP AUTH logins of customers.",
        subcommands: [Add.self, Passwd.self, Disable.self, Enable.self, Remove.self, Brakes.self, Release.self])

    struct Secret: ParsableArguments {
        @Flag(name: .long, help: "Read the password from standard input (one line).")
        var passwordStdin = false
        @Option(name: .long, help: "The password (visible in the process list: prefer --password-stdin).")
        var password: String?

        /// The given password (checked by `PasswordRules`), or nil: the module generates one.
        func given() throws -> String? {
            if passwordStdin {
                guard let line = readLine(strippingNewline: true), !line.isEmpty else {
                    throw ValidationError("--password-stdin: no password on standard input")
                }
                if let problem = PasswordRules.problem(line) { throw ValidationError("--password-stdin: \(problem)") }
                return line
            }
            if let password, let problem = PasswordRules.problem(password) { throw ValidationError("--password: \(problem)") }
            return password
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a login (a random password is generated and shown once unless one is given).")
        @OptionGroup var connection: Connection
        @Argument(help: "Login name (SMTP AUTH username).") var login: String
        @Option(name: .long, help: "Customer id the login belongs to.") var customer: String
        @OptionGroup var secret: Secret

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let created: LoginSecret
            do {
                created = try await AccountStore(redis: redis, keys: keys).createLogin(login, customer: customer, password: try secret.given())
            } catch let error as AccountError {
                let argument = error.field == "customer" ? "--customer" : error.field == "password" ? "--password" : "<login>"
                throw ValidationError("\(argument): \(error.message)" + (error.field == "customer" ? " (create it with smgctl customer add)" : ""))
            }
            print("login \(login) created for customer \(customer)")
            if let password = created.password { print("password: \(password)   (shown once; store it now)") }
        }
    }

    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a new password for a login.")
        @OptionGroup var connection: Connection
        @Argument(help: "Login name.") var login: String
        @OptionGroup var secret: Secret

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let changed: LoginSecret
            do { changed = try await AccountStore(redis: redis, keys: keys).resetPassword(login, password: try secret.given()) } catch let error as AccountError {
                throw ValidationError("<login>: \(error.message)")
            }
            print("password of \(login) changed")
            if let password = changed.password { print("password: \(password)   (shown once; store it now)") }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a login (AUTH refused) without deleting it.")
        @OptionGroup var connection: Connection
        @Argument(help: "Login name.") var login: String

        func run() async throws { try await AccountCommand.setDisabled(login, true, connection) }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a disabled login.")
        @OptionGroup var connection: Connection
        @Argument(help: "Login name.") var login: String

        func run() async throws { try await AccountCommand.setDisabled(login, false, connection) }
    }

    static func setDisabled(_ login: String, _ disabled: Bool, _ connection: Connection) async throws {
        let (redis, keys, _) = try connection.open()
        do { _ = try await AccountStore(redis: redis, keys: keys).setLoginDisabled(login, disabled) } catch let error as AccountError {
            throw ValidationError("<login>: \(error.message)")
        }
        print("login \(login) \(disabled ? "disabled" : "enabled")")
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a login.")
        @OptionGroup var connection: Connection
        @Argument(help: "Login name.") var login: String

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            guard try await AccountStore(redis: redis, keys: keys).deleteAccount(login) else {
                throw ValidationError("<login>: no login \"\(login)\"")
            }
            print("login \(login) removed")
        }
    }
}

extension AccountCommand {
    struct Brakes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "brakes", abstract: "List the logins and customers the compromised-account brake stopped, as JSON lines.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            for b in try await BrakeStore(redis: redis, keys: keys).all() {
                print(jsonLine(["subject": .string(b.subject), "reason": .string(b.reason), "since": .string(b.since),
                                "action": .string(b.action.rawValue)]))
            }
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Lift the compromised-account brake of a login (or with --customer, of a customer).")
        @OptionGroup var connection: Connection
        @Argument(help: "Login name (or customer id with --customer).") var name: String
        @Flag(name: .long, help: "NAME is a customer id.") var customer = false

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let subject = customer ? BrakeStore.customerSubject(name) : BrakeStore.loginSubject(name)
            guard let record = try await BrakeStore(redis: redis, keys: keys).release(subject) else {
                throw ValidationError("<name>: \(subject) is not braked")
            }
            let event = Event(type: EventType.accountReleased, id: nil, site: "smgctl", process: "smgctl",
                              facts: ["subject": .string(subject), "reason": .string(record.reason), "since": .string(record.since)])
            try? await MessageStore(redis: redis, keys: keys).append([event])
            print("\(subject): brake lifted (was: \(record.reason)); release its held mail with smgctl queue release <id>")
        }
    }
}

/// `smgctl tlsa`: the DANE TLSA record (3 1 1) for the gateway's own certificate (R7).
struct TLSACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tlsa", abstract: "Print the TLSA record (DANE-EE, SPKI, SHA-256) to publish for a certificate.")

    @Option(name: .long, help: "PEM certificate (the first one in the file is the server's).") var certificate: String
    @Option(name: .long, help: "Host name clients connect to.") var host: String = "smg.localdomain"
    @Option(name: .long, help: "Port.") var port: Int = 25

    func run() throws {
        do { print(try TLSAPublication.record(certificateFile: certificate, host: host, port: port)) } catch {
            throw ValidationError("--certificate: \(error)")
        }
    }
}

extension JSONEncoder {
    static let sorted: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()
}
