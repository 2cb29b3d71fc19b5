import ArgumentParser
import SMGCore
import SMGSpam
import SMGStore
import Foundation

/// `smgctl train`: teach the shared spam model (R10).
///
///     smgctl train --spam DIR… --ham DIR…                 the shared model in Redis learns every file
///     smgctl train --spam DIR… --ham DIR… --write-model F  build a model file offline (no Redis)
///     smgctl train --spam --id ID   (or --ham --id ID)     correct the model with one message of the queue
///     smgctl train --load-model F                          replace the shared model with a model file
struct Train: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Teach the spam model: directories of raw messages, one queued message by id, or a model file.",
        discussion: """
        smgctl train --spam DIR... --ham DIR... [--write-model FILE [--min-count N]]
        smgctl train --spam --id ID     (or --ham --id ID)
        smgctl train --load-model FILE
        (--redis URL and --prefix P as for every command.)
        Each file of a directory is one raw RFC 5322 message (an mbox "From " first line is skipped).
        Training the same message twice changes nothing; training it with the other label moves it.
        """)

    @OptionGroup var connection: Connection

    @Argument(parsing: .captureForPassthrough, help: "See above.")
    var words: [String] = []

    struct Plan {
        var spamDirs: [String] = []
        var hamDirs: [String] = []
        var label: SpamModelStore.Label?
        var id: String?
        var writeModel: String?
        var loadModel: String?
        var minCount = 3
        var redis: String?
        var prefix: String?
    }

    static func parse(_ words: [String]) throws -> Plan {
        var plan = Plan()
        var current: SpamModelStore.Label?
        var i = 0
        func value(_ name: String) throws -> String {
            i += 1
            guard i < words.count, !words[i].hasPrefix("--") else { throw ValidationError("\(name): needs a value") }
            return words[i]
        }
        while i < words.count {
            let w = words[i]
            switch w {
            case "--spam": current = .spam; plan.label = .spam
            case "--ham": current = .ham; plan.label = .ham
            case "--id": plan.id = try value(w)
            case "--write-model": plan.writeModel = try value(w)
            case "--load-model": plan.loadModel = try value(w)
            case "--redis": plan.redis = try value(w)
            case "--prefix": plan.prefix = try value(w)
            case "--min-count":
                guard let n = Int(try value(w)), n >= 1 else { throw ValidationError("--min-count: expected a number ≥ 1") }
                plan.minCount = n
            default:
                if w.hasPrefix("--") { throw ValidationError("\(w): unknown option of smgctl train") }
                switch current {
                case .spam: plan.spamDirs.append(w)
                case .ham: plan.hamDirs.append(w)
                case nil: throw ValidationError("\(w): say --spam or --ham before a directory")
                }
            }
            i += 1
        }
        if let id = plan.id {
            guard MessageID(id) != nil else { throw ValidationError("--id: \"\(id)\" is not a message id (ULID)") }
            guard plan.spamDirs.isEmpty, plan.hamDirs.isEmpty else { throw ValidationError("--id: give no directories with --id") }
            guard plan.label != nil else { throw ValidationError("--id: say --spam or --ham") }
        } else if plan.loadModel == nil {
            guard !plan.spamDirs.isEmpty || !plan.hamDirs.isEmpty else {
                throw ValidationError("--spam/--ham: give directories of messages, --id ID, or --load-model FILE")
            }
        }
        if plan.writeModel != nil, plan.spamDirs.isEmpty || plan.hamDirs.isEmpty {
            throw ValidationError("--write-model: needs both --spam and --ham directories")
        }
        return plan
    }

    func run() async throws {
        let plan = try Self.parse(words)
        if let path = plan.writeModel {
            var model = BayesModel()
            for (dirs, spam) in [(plan.spamDirs, true), (plan.hamDirs, false)] {
                for dir in dirs {
                    let messages: [(name: String, raw: [UInt8])]
                    do { messages = try CorpusReader.messages(in: dir) } catch { throw ValidationError("\(spam ? "--spam" : "--ham"): \(error)") }
                    for m in messages { model.learn(FeatureExtractor.extract(m.raw).tokens, spam: spam) }
                }
            }
            let pruned = SpamModelFile.pruned(model, minimum: plan.minCount)
            do { try SpamModelFile.encode(pruned).write(toFile: path, atomically: true, encoding: .utf8) } catch {
                throw ValidationError("--write-model: cannot write \(path): \(error.localizedDescription)")
            }
            print("wrote \(path): \(pruned.spamMessages) spam + \(pruned.hamMessages) ham messages, \(pruned.tokens.count) tokens (of \(model.tokens.count); seen in fewer than \(plan.minCount) messages dropped)")
            return
        }
        var connection = self.connection
        if let r = plan.redis { connection.redis = r }
        if let p = plan.prefix { connection.prefix = p }
        let (redis, keys, _) = try connection.open()
        let store = SpamModelStore(redis: redis, keys: keys)
        if let path = plan.loadModel {
            let model: BayesModel
            do { model = try SpamModelFile.read(path: path) } catch { throw ValidationError("--load-model: \(error)") }
            try await store.replace(with: model)
            print("the shared model is now \(path): \(model.spamMessages) spam + \(model.hamMessages) ham, \(model.tokens.count) tokens")
            return
        }
        if let idText = plan.id, let id = MessageID(idText), let label = plan.label {
            let messages = MessageStore(redis: redis, keys: keys)
            guard let message = try await messages.load(id) else {
                throw ValidationError("--id: no message \(idText) (unknown, or its body expired)")
            }
            let result = try await store.train(message.body, as: label)
            let event = Event(type: EventType.spamTrained, id: id, site: "smgctl", process: "smgctl",
                              facts: ["label": .string(label.rawValue), "result": .string(result.rawValue)])
            try? await messages.append([event])
            print("\(idText): \(result.rawValue) as \(label.rawValue)")
            return
        }
        var counts: [String: Int] = [:]
        for (dirs, label) in [(plan.spamDirs, SpamModelStore.Label.spam), (plan.hamDirs, .ham)] {
            for dir in dirs {
                let messages: [(name: String, raw: [UInt8])]
                do { messages = try CorpusReader.messages(in: dir) } catch { throw ValidationError("--\(label.rawValue): \(error)") }
                for result in try await store.trainMany(messages.map { ($0.raw, label) }) {
                    counts["\(label.rawValue) \(result.rawValue)", default: 0] += 1
                }
            }
        }
        print(counts.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))
    }
}

/// `smgctl classify FILE…`: the verdict of exactly the engine `smg-classifier` runs, one JSON line
/// per file, with the shared model from Redis (or a model file).
struct Classify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify raw message files with the classifier's engine; one JSON line each (category, score, lane, reasons).")

    @OptionGroup var connection: Connection
    @Argument(help: "Raw RFC 5322 message files.") var files: [String]
    @Option(name: .long, help: "Use this model file instead of the shared model in Redis.") var model: String?
    @Option(name: .long, help: "As classifier.spam_threshold.") var spamThreshold: Double = SpamPolicy().spamThreshold
    @Option(name: .long, help: "As classifier.suspect_threshold.") var suspectThreshold: Double = SpamPolicy().suspectThreshold
    @Option(name: .long, help: "As classifier.suspect_lane (good or bad).") var suspectLane: String = "bad"
    @Option(name: .long, help: "As classifier.bulk_lane (good or bad).") var bulkLane: String = "good"

    func validate() throws {
        if files.isEmpty { throw ValidationError("<files>: give at least one message file") }
        if suspectThreshold > spamThreshold { throw ValidationError("--suspect-threshold: above --spam-threshold") }
        if Lane(rawValue: suspectLane) == nil { throw ValidationError("--suspect-lane: expected good or bad") }
        if Lane(rawValue: bulkLane) == nil { throw ValidationError("--bulk-lane: expected good or bad") }
    }

    func run() async throws {
        let bayes: BayesModel
        if let model {
            do { bayes = try SpamModelFile.read(path: model) } catch { throw ValidationError("--model: \(error)") }
        } else {
            let (redis, keys, _) = try connection.open()
            guard let (loaded, _) = try await SpamModelStore(redis: redis, keys: keys).load(), loaded.isUsable else {
                throw ValidationError("--redis: no spam model in Redis yet (smgctl train, or --model FILE)")
            }
            bayes = loaded
        }
        var policy = SpamPolicy()
        policy.spamThreshold = spamThreshold
        policy.suspectThreshold = suspectThreshold
        policy.suspectLane = Lane(rawValue: suspectLane) ?? .bad
        policy.bulkLane = Lane(rawValue: bulkLane) ?? .good
        let engine = SpamEngine(policy: policy)
        var failed = false
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                FileHandle.standardError.write(Data("smgctl: <files>: cannot read \(file)\n".utf8))
                failed = true
                continue
            }
            let v = engine.classify(CorpusReader.normalise(Array(data)), model: bayes)
            print(jsonLine(["file": .string(file), "category": .string(v.category.rawValue),
                            "score": .double((v.score * 100).rounded() / 100), "lane": .string(v.lane.rawValue),
                            "reasons": .array(v.reasons.map { .string($0) })]))
        }
        if failed { throw ExitCode(1) }
    }
}
