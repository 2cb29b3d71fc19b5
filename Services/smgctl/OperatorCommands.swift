import ArgumentParser
import SMGAdmin
import SMGAccounts
import Foundation

/// `smgctl operator …`: the accounts of smg-admin's operators (not customer logins).
struct OperatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operator", abstract: "Manage the operators of the web interface (smg-admin) and their API tokens.",
        subcommands: [Add.self, Passwd.self, Role.self, Disable.self, Enable.self, Remove.self, List.self, Token.self])

    static func fail(_ error: AdminError) -> ValidationError {
        ValidationError("\(error.field == "password" ? "--password" : "<name>"): \(error.message)")
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an operator (a password is generated and shown once unless given).")
        @OptionGroup var connection: Connection
        @Argument(help: "Operator name (letters, digits, - _ . @).") var name: String
        @Option(name: .long, help: "admin (changes anything) or viewer (reads only).") var role: String = "viewer"
        @OptionGroup var secret: AccountCommand.Secret

        func run() async throws {
            guard let role = OperatorRole(rawValue: role) else { throw ValidationError("--role: \"\(role)\" is not admin or viewer") }
            let password = try secret.given()
            let (redis, keys, _) = try connection.open()
            let result: (OperatorAccount, generatedPassword: String?)
            do { result = try await OperatorStore(redis: redis, keys: keys).add(name, role: role, password: password) } catch let e as AdminError {
                throw OperatorCommand.fail(e)
            }
            print("operator \(result.0.name) created (\(role.rawValue))")
            if let generated = result.generatedPassword { print("password: \(generated)   (shown once; store it now)") }
        }
    }

    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a new password for an operator (generated unless given).")
        @OptionGroup var connection: Connection
        @Argument(help: "Operator name.") var name: String
        @OptionGroup var secret: AccountCommand.Secret

        func run() async throws {
            let password = try secret.given()
            let (redis, keys, _) = try connection.open()
            let generated: String?
            do { generated = try await OperatorStore(redis: redis, keys: keys).setPassword(name, password: password) } catch let e as AdminError {
                throw OperatorCommand.fail(e)
            }
            print("password of operator \(name) changed")
            if let generated { print("password: \(generated)   (shown once; store it now)") }
        }
    }

    struct Role: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change an operator's role.")
        @OptionGroup var connection: Connection
        @Argument(help: "Operator name.") var name: String
        @Argument(help: "admin or viewer.") var role: String

        func run() async throws {
            guard let role = OperatorRole(rawValue: role) else { throw ValidationError("<role>: \"\(role)\" is not admin or viewer") }
            try await OperatorCommand.change(connection, name) { $0.role = role }
            print("operator \(name) is now \(role.rawValue)")
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable an operator: its sessions and tokens stop working at once.")
        @OptionGroup var connection: Connection
        @Argument(help: "Operator name.") var name: String

        func run() async throws {
            try await OperatorCommand.change(connection, name) { $0.disabled = true }
            print("operator \(name) disabled")
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a disabled operator.")
        @OptionGroup var connection: Connection
        @Argument(help: "Operator name.") var name: String

        func run() async throws {
            try await OperatorCommand.change(connection, name) { $0.disabled = false }
            print("operator \(name) enabled")
        }
    }

    static func change(_ connection: Connection, _ name: String, _ edit: (inout OperatorAccount) -> Void) async throws {
        let (redis, keys, _) = try connection.open()
        let store = OperatorStore(redis: redis, keys: keys)
        guard var account = try await store.get(name) else { throw ValidationError("<name>: no operator \"\(name)\"") }
        edit(&account)
        try await store.save(account)
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an operator and its API tokens.")
        @OptionGroup var connection: Connection
        @Argument(help: "Operator name.") var name: String

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            guard try await OperatorStore(redis: redis, keys: keys).remove(name) else { throw ValidationError("<name>: no operator \"\(name)\"") }
            print("operator \(name) removed")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List operators as JSON lines (never a password hash).")
        @OptionGroup var connection: Connection

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            for account in try await OperatorStore(redis: redis, keys: keys).all() {
                print(jsonLine(["name": .string(account.name), "role": .string(account.role.rawValue), "disabled": .bool(account.disabled),
                                "created": .int(Int(account.created))]))
            }
        }
    }

    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an API token for an operator (for `Authorization: Bearer`); printed once, only its hash is kept.")
        @OptionGroup var connection: Connection
        @Argument(help: "Operator name.") var name: String
        @Option(name: .long, help: "What the token is for (shown in listings).") var label: String = ""

        func run() async throws {
            let (redis, keys, _) = try connection.open()
            let token: String
            do { token = try await OperatorStore(redis: redis, keys: keys).makeToken(for: name, label: label) } catch let e as AdminError {
                throw OperatorCommand.fail(e)
            }
            print("token: \(token)   (shown once; store it now)")
        }
    }
}
