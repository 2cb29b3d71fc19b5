import ArgumentParser
import SMGCore
import SMGStore
import SMGRedis
import SMGRuntime
import SMGBus
import Logging
import Foundation

/// smgctl — the operator's command line: watch the pipeline live, trace one message, look at queues.
struct SMGCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smgctl",
        abstract: "Operate the Secure Mail Gateway.",
        subcommands: [Tap.self, Trace.self, Queue.self, CustomerCommand.self, AccountCommand.self, OperatorCommand.self, TLSACommand.self, TLSCommand.self, BlacklistCommand.self,
                      DKIM.self, PoolCommand.self, Train.self, Classify.self, BusCommand.self])
}

struct Connection: ParsableArguments {
    @Option(name: .long, help: "Redis URL (default: $SMG_REDIS_URL or redis://127.0.0.1:6379/0); for rediss:// the TLS settings come from $SMG_REDIS_TLS_CA_FILE, $SMG_REDIS_TLS_CERTIFICATE, $SMG_REDIS_TLS_KEY, $SMG_REDIS_TLS_SERVER_NAME.")
    var redis: String?

    @Option(name: .long, help: "Redis key prefix (default: $SMG_REDIS_KEY_PREFIX or smg:).")
    var prefix: String?

    func open() throws -> (RedisClient, Keyspace, Logger) {
        var logger = Logger(label: "smgctl")
        logger.logLevel = .warning
        let env = ProcessInfo.processInfo.environment
        let url = redis ?? env["SMG_REDIS_URL"] ?? "redis://127.0.0.1:6379/0"
        let endpoint: RedisEndpoint
        do {
            endpoint = try RedisSettings.endpoint(
                url: url, caFile: env[CommonKeys.redisTLSCAFile.environmentName] ?? "",
                certificate: env[CommonKeys.redisTLSCertificate.environmentName] ?? "",
                key: env[CommonKeys.redisTLSKey.environmentName] ?? "",
                serverName: env[CommonKeys.redisTLSServerName.environmentName] ?? "", source: "environment")
        } catch {
            throw ValidationError("--redis: \(error)")
        }
        let keys = Keyspace(prefix: prefix ?? env["SMG_REDIS_KEY_PREFIX"] ?? Keyspace.defaultPrefix)
        // A Redis that is still loading its AOF (after a restart: seconds to minutes) answers
        // LOADING; that and a refused connect mean "not executed", so wait for it, saying so once.
        let told = NSLockedFlag()
        let wait = Self.transientWait
        let client = RedisClient(
            endpoint: endpoint, poolSize: 1, timeout: .seconds(3), transientRetry: wait,
            onTransientError: { error in
                guard told.setFirstTime() else { return }
                let why = error.serverErrorPrefix == "LOADING" ? "Redis is loading its dataset"
                    : "Redis is not ready (\(error.message))"
                FileHandle.standardError.write(Data("smgctl: \(why); waiting up to \(wait)…\n".utf8))
            },
            logger: logger)
        return (client, keys, logger)
    }

    /// How long smgctl waits for a Redis that is loading, busy or not (yet) accepting connections.
    static let transientWait = Duration.seconds(60)
}

/// A flag that is set once, from any thread.
final class NSLockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var set = false

    /// True for the first caller only.
    func setFirstTime() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        defer { set = true }
        return !set
    }
}

struct Tap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print live events of every process as JSON lines.")

    @OptionGroup var connection: Connection

    @Option(name: .long, help: "Only these event types (repeatable; a trailing * matches a prefix, e.g. delivery.*).")
    var type: [String] = []

    @Option(name: .long, help: "Only events of this message id.")
    var id: String?

    @Option(name: .long, help: "Exit after this many events.")
    var count: Int?

    @Option(name: .long, help: "Exit after this many seconds.")
    var seconds: Double?

    @OptionGroup var curve: CurveKeyOption

    func validate() throws {
        if let id, MessageID(id) == nil { throw ValidationError("--id: \"\(id)\" is not a message id (ULID)") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func run() async throws {
        let (redis, keys, logger) = try connection.open()
        let registry = Registry(redis: redis, keys: keys)
        let context = try ZMQContext(security: try curve.security())
        // Subscribe by topic prefix where possible; filter the rest here.
        let subscriptions = type.isEmpty || type.contains(where: { $0 == "*" })
            ? [Topic.eventsPrefix]
            : type.map { Topic.eventsPrefix + ($0.hasSuffix("*") ? String($0.dropLast()) : $0) }
        let subscriber = try TapSubscriber(context: context, subscriptions: subscriptions, logger: logger)
        let wanted = id.flatMap(MessageID.init)
        let deadline = seconds.map { ContinuousClock.now + .milliseconds(Int64($0 * 1000)) }
        let discovery = Task {
            while !Task.isCancelled {
                if let live = try? await registry.endpoints(kind: "events") {
                    // Endpoints it cannot use (CURVE without --curve-key-file, or refused) are named once.
                    for problem in await subscriber.follow(live).problems {
                        FileHandle.standardError.write(Data("smgctl: tap: \(problem)\n".utf8))
                    }
                }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        let timer = Task {
            if let deadline {
                try? await Task.sleep(until: deadline)
                if !Task.isCancelled { await subscriber.close() }
            }
        }
        defer {
            discovery.cancel()
            timer.cancel()
        }
        var printed = 0
        while let message = try await subscriber.receive() {
            guard let event = try? Event.decode(message.payload) else { continue }
            if let wanted, event.id != wanted { continue }
            if !type.isEmpty, !type.contains(where: { Self.matches($0, event.type) }) { continue }
            FileHandle.standardOutput.write(Data((event.jsonString() + "\n").utf8))
            printed += 1
            if let count, printed >= count { break }
        }
        await subscriber.close()
    }

    static func matches(_ pattern: String, _ type: String) -> Bool {
        if pattern == "*" { return true }
        if pattern.hasSuffix("*") { return type.hasPrefix(String(pattern.dropLast())) }
        return pattern == type
    }
}

struct Trace: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print one message's whole history from the event log, oldest first, as JSON lines.")

    @OptionGroup var connection: Connection

    @Argument(help: "The message id (from the 250 reply, a log line or an event).")
    var id: String

    func validate() throws {
        if MessageID(id) == nil { throw ValidationError("<id>: \"\(id)\" is not a message id (ULID)") }
    }

    func run() async throws {
        let (redis, keys, _) = try connection.open()
        let store = MessageStore(redis: redis, keys: keys)
        let events = try await store.events(of: MessageID(id)!)
        guard !events.isEmpty else {
            FileHandle.standardError.write(Data("smgctl: no events for message \(id) (unknown, or expired)\n".utf8))
            throw ExitCode(1)
        }
        for event in events { print(event.jsonString()) }
    }
}

// `smgctl queue …` lives in QueueCommands.swift.
