import ArgumentParser
import SMGCore
import SMGStore
import SMGRuntime
import SMGNDR
import Foundation

/// `smgctl queue …`: what postqueue/postsuper do for Postfix — look at the queue and take
/// messages out of it, put them back, bounce or delete them. The store side is `QueueAdmin`:
/// every change is one Lua script with its `queue.*` event, and a refused change writes nothing.
///
/// Exit codes: 0 all done; 1 some ids failed (each is reported on stderr, the others are still
/// handled); 64 bad arguments (nothing is done at all).
struct Queue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Look at and control the queue: pending sets, held and quarantined messages.",
        subcommands: [Summary.self, List.self, Show.self, Hold.self, Release.self, Bounce.self, Delete.self,
                      Requeue.self],
        defaultSubcommand: Summary.self)

    struct Summary: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "How many messages wait in each stage, and how many are held or quarantined.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let summary = try await QueueContext(connection).admin.summary()
            for topic in Topic.all { print("\(pad(topic, 22)) \(summary.pending[topic] ?? 0)") }
            print("\(pad("held", 22)) \(summary.held)")
            print("\(pad("quarantined", 22)) \(summary.quarantined)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List queued, held and quarantined messages, oldest first.")
        @OptionGroup var connection: Connection
        @Option(name: .long, help: "Only this topic (\(Topic.all.joined(separator: ", "))); held ones by the topic they came from.")
        var topic: String?
        @Option(name: .long, help: "Only messages older than this (e.g. 10m, 2h, 1d).")
        var olderThan: String?
        @Option(name: .long, help: "Only this envelope sender (exact, case-insensitive; <> for the null sender).")
        var sender: String?
        @Option(name: .long, help: "Only messages with a recipient in this domain.")
        var recipientDomain: String?
        @Option(name: .long, help: "Only this customer.")
        var customer: String?
        @Option(name: .long, help: "Only this state: \(QueueState.allCases.map(\.rawValue).joined(separator: ", ")).")
        var state: String?
        @Option(name: .long, help: "At most this many messages.")
        var limit: Int = 100
        @Flag(name: .long, help: "One JSON object per line instead of a table.")
        var json = false

        func validate() throws {
            if let topic, !Topic.all.contains(topic) {
                throw ValidationError("--topic: unknown topic \"\(topic)\" (one of \(Topic.all.joined(separator: ", ")))")
            }
            if let olderThan, parseDuration(olderThan) == nil {
                throw ValidationError("--older-than: \"\(olderThan)\" is not a duration (e.g. 10m, 2h, 1d)")
            }
            if let state, QueueState(rawValue: state) == nil {
                throw ValidationError("--state: unknown state \"\(state)\" (one of \(QueueState.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            if limit < 1 { throw ValidationError("--limit: must be at least 1") }
        }

        func run() async throws {
            let filter = QueueFilter(
                topic: topic, olderThanMilliseconds: olderThan.flatMap(parseDuration).map { Int64($0.milliseconds) },
                sender: sender, recipientDomain: recipientDomain, customer: customer,
                state: state.flatMap(QueueState.init(rawValue:)), limit: limit)
            let items = try await QueueContext(connection).admin.list(filter)
            if json {
                for item in items { print(jsonLine(item.listing)) }
                return
            }
            let widths = [26, 18, 11, 8, 32, 5, 10, 0]
            print(row(["ID", "STAGE", "STATE", "AGE", "SENDER", "RCPTS", "NEXT", "CUSTOMER"], widths))
            for item in items {
                print(row([item.id.rawValue, item.location.topic ?? item.location.name, item.stateName,
                           QueueText.duration(item.ageMilliseconds), item.envelope.map { $0.sender.isEmpty ? "<>" : $0.sender } ?? "?",
                           item.envelope.map { String($0.recipients.count) } ?? "?", item.nextDeadlineText,
                           item.envelope?.customer ?? "-"], widths))
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Everything about one message: envelope, record, recipients, where it sits, its last 20 events.")
        @OptionGroup var connection: Connection
        @Argument(help: "The message id.") var id: String

        func validate() throws { try validateIDs([id]) }

        func run() async throws {
            let admin = try QueueContext(connection).admin
            let id = MessageID(self.id)!
            let item = try await admin.locate(id)
            guard item.exists else {
                FileHandle.standardError.write(Data("smgctl: \(id): no such message (unknown, or expired)\n".utf8))
                throw ExitCode(1)
            }
            print("id:         \(id)")
            print("where:      \(item.whereText)")
            print("state:      \(item.stateName) (record: \(item.fields["state"] ?? "-"))")
            print("age:        \(QueueText.duration(item.ageMilliseconds)) (created \(QueueText.time(item.createdMilliseconds)))")
            if let envelope = item.envelope {
                print("sender:     \(envelope.sender.isEmpty ? "<>" : envelope.sender)")
                print("customer:   \(envelope.customer ?? "-")")
                print("envelope:   \(String(decoding: envelope.jsonBytes(), as: UTF8.self))")
            } else {
                print("envelope:   UNREADABLE")
            }
            print("body size:  \(item.bodySize) bytes")
            print("record:")
            for (key, value) in item.fields.sorted(by: { $0.key < $1.key }) where key != "envelope" {
                print("  \(key) = \(value)")
            }
            print("recipients:")
            for r in item.recipients {
                var line = "  \(pad(r.address, 32)) \(pad(r.state.rawValue, 9)) attempts \(r.attempts)"
                if let next = r.nextAttempt { line += "  next \(Timestamp.format(next))" }
                if let reply = r.lastReply { line += "  last \"\(reply)\"" }
                print(line)
            }
            print("events (last 20):")
            for event in try await admin.lastEvents(of: id, count: 20) { print("  \(event.jsonString())") }
        }
    }

    struct Hold: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take messages out of their stage; nothing works on them until released.")
        @OptionGroup var connection: Connection
        @OptionGroup var actor: QueueOperator
        @Option(name: .long, help: "Why (recorded in the event).") var reason: String?
        @Argument(help: "Message ids.") var ids: [String]

        func validate() throws { try validateIDs(ids) }

        func run() async throws {
            let admin = try QueueContext(connection).admin
            try await eachID(ids, "hold") { id in
                let r = try await admin.hold(id, reason: reason, operator: actor.resolved)
                return "\(id) held (was in \(r.from))"
            }
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put held (or repaired quarantined) messages back into their stage, due now.")
        @OptionGroup var connection: Connection
        @OptionGroup var actor: QueueOperator
        @Argument(help: "Message ids.") var ids: [String]

        func validate() throws { try validateIDs(ids) }

        func run() async throws {
            let admin = try QueueContext(connection).admin
            try await eachID(ids, "release") { id in
                let r = try await admin.release(id, operator: actor.resolved)
                return "\(id) released into \(r.to)"
            }
        }
    }

    struct Bounce: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bounce every recipient not yet final, finish the message, send one NDR to the sender.")
        @OptionGroup var connection: Connection
        @OptionGroup var actor: QueueOperator
        @Option(name: .long, help: "Why (in the recipients' reply and the NDR).") var reason = "no reason given"
        @Option(name: .long, help: "NDRs come from MAILER-DAEMON@<this> (default: $SMG_NDR_DOMAIN or localhost).")
        var ndrDomain: String?
        @Argument(help: "Message ids.") var ids: [String]

        func validate() throws {
            try validateIDs(ids)
            if reason.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--reason: must not be empty") }
        }

        func run() async throws {
            let context = try QueueContext(connection)
            let env = ProcessInfo.processInfo.environment
            let domain = ndrDomain ?? env["SMG_NDR_DOMAIN"] ?? "localhost"
            let mta = env["SMG_NDR_REPORTING_MTA"] ?? ""
            let oneLine = reason.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
            let (site, process) = (context.site, context.process)
            try await eachID(ids, "bounce") { id in
                let r = try await context.admin.bounce(id, reason: oneLine, operator: actor.resolved) { message, bounced in
                    NDRSender.prepare(for: message, bounced: bounced, reason: "an operator bounced it: \(oneLine)",
                                      kind: NDRSender.operatorBounceKind, domain: domain, reportingMTA: mta,
                                      site: site, process: process)
                }
                let count = r.events.filter { $0.type == EventType.bounced }.count
                return "\(id) bounced \(count) recipient(s) (was in \(r.from)); "
                    + (r.ndr.map { "NDR \($0) queued" } ?? "no NDR (null sender)")
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove messages from the queue without delivering or bouncing them.")
        @OptionGroup var connection: Connection
        @OptionGroup var actor: QueueOperator
        @Option(name: .long, help: "Why (required; recorded in the event).") var reason: String
        @Argument(help: "Message ids.") var ids: [String]

        func validate() throws {
            try validateIDs(ids)
            if reason.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--reason: must not be empty") }
        }

        func run() async throws {
            let admin = try QueueContext(connection).admin
            try await eachID(ids, "delete") { id in
                let r = try await admin.delete(id, reason: reason, operator: actor.resolved)
                return "\(id) deleted (was in \(r.from))"
            }
        }
    }

    struct Requeue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make messages due now in their stage (deferred recipients tried at once), or in another stage.")
        @OptionGroup var connection: Connection
        @OptionGroup var actor: QueueOperator
        @Option(name: .long, help: "Stage to put it in: \(QueueStage.allCases.map(\.rawValue).joined(separator: ", ")) (accepted restarts at the scanner; default: where it is).")
        var stage: String?
        @Argument(help: "Message ids.") var ids: [String]

        func validate() throws {
            try validateIDs(ids)
            if let stage, QueueStage(rawValue: stage) == nil {
                throw ValidationError("--stage: unknown stage \"\(stage)\" (one of \(QueueStage.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
        }

        func run() async throws {
            let admin = try QueueContext(connection).admin
            let target = stage.flatMap(QueueStage.init(rawValue:))
            try await eachID(ids, "requeue") { id in
                let r = try await admin.requeue(id, stage: target, operator: actor.resolved)
                return "\(id) requeued from \(r.from) into \(r.to)"
            }
        }
    }
}

/// Who is acting: `--operator`, else `$SUDO_USER` (the person behind sudo), else `$USER`.
struct QueueOperator: ParsableArguments {
    @Option(name: .customLong("operator"), help: "Name recorded as the operator (default: $SUDO_USER or $USER).")
    var name: String?

    var resolved: String {
        let env = ProcessInfo.processInfo.environment
        return [name, env["SUDO_USER"], env["USER"]].compactMap { $0 }.first { !$0.isEmpty } ?? "unknown"
    }
}

/// The store handle of one queue command, and the identity its events carry.
struct QueueContext {
    let admin: QueueAdmin
    let site: String
    let process: String

    init(_ connection: Connection) throws {
        let (redis, keys, _) = try connection.open()
        let env = ProcessInfo.processInfo.environment
        let retention = env["SMG_STORE_RETENTION"].flatMap(parseDuration).map { $0.milliseconds / 1000 } ?? 7 * 86400
        let bodyRetention = env["SMG_STORE_BODY_RETENTION"].flatMap(parseDuration).map { $0.milliseconds / 1000 } ?? 3600
        let store = MessageStore(redis: redis, keys: keys, retentionSeconds: max(1, retention),
                                 bodyRetentionSeconds: bodyRetention)
        site = env["SMG_SITE"] ?? "eu-de-01"
        process = "smgctl@\(ProcessInfo.processInfo.hostName)"
        admin = QueueAdmin(store: store, site: site, process: process)
    }
}

/// Bad ids are bad arguments (exit 64, nothing done for any id).
func validateIDs(_ ids: [String]) throws {
    if ids.isEmpty { throw ValidationError("<ids>: give at least one message id") }
    for id in ids where MessageID(id) == nil {
        throw ValidationError("<id>: \"\(id)\" is not a message id (ULID)")
    }
}

/// Runs `action` for each id on its own: successes on stdout, refusals on stderr; exit 1 if any failed.
func eachID(_ ids: [String], _ verb: String, _ action: (MessageID) async throws -> String) async throws {
    var failed = 0
    for text in ids {
        let id = MessageID(text)!
        do {
            print(try await action(id))
        } catch let error as QueueError {
            failed += 1
            FileHandle.standardError.write(Data("smgctl queue \(verb): \(error)\n".utf8))
        }
    }
    if failed > 0 { throw ExitCode(1) }
}

// The words and JSON of a queue item (state, where, next deadline, listing) are
// `QueueItem.stateName/whereText/nextDeadlineText/listing` in SMGStore, shared with smg-admin.

func jsonLine(_ object: [String: JSONValue]) -> String {
    String(decoding: (try? JSONEncoder.sorted.encode(object)) ?? Data("{}".utf8), as: UTF8.self)
}

func row(_ cells: [String], _ widths: [Int]) -> String {
    zip(cells, widths).map { $1 == 0 ? $0 : pad($0, $1) }.joined(separator: " ")
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

extension Date {
    init(milliseconds: Int64) { self.init(timeIntervalSince1970: Double(milliseconds) / 1000) }
}
