import Foundation
import SMGSpam

// smg-spam-bench — evaluates the built-in spam engine on a labelled corpus (see bench/README.md).
//
//   smg-spam-bench --corpus ../shared/corpus/spamassassin [--split cross-era|fixed|both]
//                  [--spam-threshold N] [--suspect-threshold N] [--sweep] [--rules]
//                  [--min-deviation X] [--bayes-weight W]
//
// cross-era: train on spam-1 + easy-ham-1, evaluate on spam-2 + easy-ham-2 + hard-ham-1.
// fixed: every folder split by the first hex digit of the MD5 in the file name: 0–b train, c–f
// evaluate; no evaluated message is ever trained on. Also measures classification speed.

struct Options {
    var corpus = "../shared/corpus/spamassassin"
    var split = "both"
    var spamThreshold = SpamPolicy().spamThreshold
    var suspectThreshold = SpamPolicy().suspectThreshold
    var sweep = false
    var minDeviation = BayesScorer().minimumDeviation
    var bayesWeight = SpamEngine().bayesWeight
    var rules = false
}

func parseOptions() -> Options {
    var o = Options()
    var args = CommandLine.arguments.dropFirst().makeIterator()
    func value(_ name: String) -> String {
        guard let v = args.next() else { fail("\(name) needs a value") }
        return v
    }
    while let a = args.next() {
        switch a {
        case "--corpus": o.corpus = value(a)
        case "--split":
            o.split = value(a)
            guard ["cross-era", "fixed", "both"].contains(o.split) else { fail("--split: expected cross-era, fixed or both") }
        case "--spam-threshold": guard let v = Double(value(a)) else { fail("--spam-threshold: not a number") }; o.spamThreshold = v
        case "--suspect-threshold": guard let v = Double(value(a)) else { fail("--suspect-threshold: not a number") }; o.suspectThreshold = v
        case "--sweep": o.sweep = true
        case "--rules": o.rules = true
        case "--bayes-weight": guard let v = Double(value(a)) else { fail("--bayes-weight: not a number") }; o.bayesWeight = v
        case "--min-deviation": guard let v = Double(value(a)) else { fail("--min-deviation: not a number") }; o.minDeviation = v
        case "-h", "--help":
            print("usage: smg-spam-bench --corpus DIR [--split cross-era|fixed|both] [--spam-threshold N] [--suspect-threshold N] [--sweep] [--rules] [--min-deviation X] [--bayes-weight W]")
            exit(0)
        default: fail("unknown argument \(a)")
        }
    }
    return o
}

func fail(_ text: String) -> Never {
    FileHandle.standardError.write(Data("smg-spam-bench: \(text)\n".utf8))
    exit(2)
}

struct Item {
    var folder: String
    var name: String
    var spam: Bool
    var features: MessageFeatures
    var size: Int
}

let options = parseOptions()
let folders = ["spam-1": true, "spam-2": true, "easy-ham-1": false, "easy-ham-2": false, "hard-ham-1": false]
var items: [Item] = []
var raws: [[UInt8]] = []
var extractSeconds = 0.0
for (folder, spam) in folders.sorted(by: { $0.key < $1.key }) {
    let dir = (options.corpus as NSString).appendingPathComponent(folder)
    let messages: [(name: String, raw: [UInt8])]
    do { messages = try CorpusReader.messages(in: dir) } catch { fail("--corpus: \(error)") }
    for m in messages {
        let t0 = Date()
        let f = FeatureExtractor.extract(m.raw)
        extractSeconds += Date().timeIntervalSince(t0)
        items.append(Item(folder: folder, name: m.name, spam: spam, features: f, size: m.raw.count))
        raws.append(m.raw)
    }
}

func train(_ set: [Item]) -> BayesModel {
    var model = BayesModel()
    for item in set { model.learn(item.features.tokens, spam: item.spam) }
    return model
}

struct Counts {
    var tp = 0, fp = 0, fn = 0, tn = 0
    var precision: Double { tp + fp == 0 ? 1 : Double(tp) / Double(tp + fp) }
    var recall: Double { tp + fn == 0 ? 0 : Double(tp) / Double(tp + fn) }
    var f1: Double { precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall) }
    var fpRate: Double { fp + tn == 0 ? 0 : Double(fp) / Double(fp + tn) }
}

func pct(_ v: Double) -> String { String(format: "%.2f %%", v * 100) }

func evaluate(title: String, trainSet: [Item], testSet: [Item]) {
    let model = train(trainSet)
    var policy = SpamPolicy()
    policy.spamThreshold = options.spamThreshold
    policy.suspectThreshold = options.suspectThreshold
    var scorer = BayesScorer()
    scorer.minimumDeviation = options.minDeviation
    let engine = SpamEngine(policy: policy, scorer: scorer, bayesWeight: options.bayesWeight)
    let verdicts = testSet.map { engine.classify(features: $0.features, model: model) }
    print("## \(title)")
    print("trained on \(trainSet.filter(\.spam).count) spam + \(trainSet.filter { !$0.spam }.count) ham (\(model.tokens.count) tokens); evaluated \(testSet.filter(\.spam).count) spam + \(testSet.filter { !$0.spam }.count) ham")
    print("thresholds: spam ≥ \(options.spamThreshold), suspect ≥ \(options.suspectThreshold)\n")
    print("| positive means | precision | recall | F1 | ham false positives |")
    print("|---|---|---|---|---|")
    for (label, isPositive) in [("category spam", { (v: SpamVerdict) in v.category == .spam }),
                                ("bad lane (spam + suspect)", { (v: SpamVerdict) in v.lane == .bad })] {
        var c = Counts()
        for (item, v) in zip(testSet, verdicts) {
            switch (item.spam, isPositive(v)) {
            case (true, true): c.tp += 1
            case (true, false): c.fn += 1
            case (false, true): c.fp += 1
            case (false, false): c.tn += 1
            }
        }
        print("| \(label) | \(String(format: "%.3f", c.precision)) | \(String(format: "%.3f", c.recall)) | \(String(format: "%.3f", c.f1)) | \(pct(c.fpRate)) (\(c.fp) of \(c.fp + c.tn)) |")
    }
    print("\nper folder (share of each category):\n")
    print("| folder | n | clean | bulk | suspect | spam |")
    print("|---|---|---|---|---|---|")
    for folder in Set(testSet.map(\.folder)).sorted() {
        let vs = zip(testSet, verdicts).filter { $0.0.folder == folder }.map(\.1)
        let share = { (c: SpamCategory) in pct(Double(vs.filter { $0.category == c }.count) / Double(max(1, vs.count))) }
        print("| \(folder) | \(vs.count) | \(share(.clean)) | \(share(.bulk)) | \(share(.suspect)) | \(share(.spam)) |")
    }
    if options.sweep {
        print("\nthreshold sweep (positive = score ≥ threshold):\n")
        print("| threshold | spam recall | ham FP | easy-ham FP | hard-ham FP |")
        print("|---|---|---|---|---|")
        for t in stride(from: -2.0, through: 8.0, by: 0.5) {
            let pos = zip(testSet, verdicts).map { ($0.0, $0.1.score >= t) }
            let spam = pos.filter { $0.0.spam }, ham = pos.filter { !$0.0.spam }
            let rate = { (xs: [(Item, Bool)]) in Double(xs.filter(\.1).count) / Double(max(1, xs.count)) }
            print("| \(t) | \(pct(rate(spam))) | \(pct(rate(ham))) | \(pct(rate(ham.filter { $0.0.folder.hasPrefix("easy") }))) | \(pct(rate(ham.filter { $0.0.folder.hasPrefix("hard") }))) |")
        }
    }
    print("")
}

if options.split == "cross-era" || options.split == "both" {
    evaluate(title: "Cross-era split",
             trainSet: items.filter { $0.folder == "spam-1" || $0.folder == "easy-ham-1" },
             testSet: items.filter { ["spam-2", "easy-ham-2", "hard-ham-1"].contains($0.folder) })
}
if options.split == "fixed" || options.split == "both" {
    let isTest = { (item: Item) -> Bool in
        let parts = item.name.split(separator: ".")
        guard parts.count >= 2, let first = parts[1].first, let digit = first.hexDigitValue else { return false }
        return digit >= 12
    }
    evaluate(title: "Fixed split (all folders; the MD5 in the file name starting c–f evaluated, 0–b trained)",
             trainSet: items.filter { !isTest($0) }, testSet: items.filter(isTest))
}

// Rule hit rates per folder: the evidence the rule weights rest on (training folders: spam-1,
// easy-ham-1) and, for information, the other folders.
if options.rules {
    let order = ["spam-1", "easy-ham-1", "spam-2", "easy-ham-2", "hard-ham-1"]
    var hits: [String: [String: Int]] = [:]
    var points: [String: Double] = [:]
    for item in items {
        for hit in SpamRules.evaluate(item.features) {
            hits[hit.name, default: [:]][item.folder, default: 0] += 1
            points[hit.name] = hit.points
        }
    }
    let sizes = Dictionary(grouping: items, by: \.folder).mapValues(\.count)
    print("## Rule hit rates (share of each folder's messages)")
    print("| rule | points | " + order.joined(separator: " | ") + " |")
    print("|---|---|" + String(repeating: "---|", count: order.count))
    for name in hits.keys.sorted() {
        let cells = order.map { folder in String(format: "%.1f %%", 100 * Double(hits[name]?[folder] ?? 0) / Double(max(1, sizes[folder] ?? 0))) }
        print("| \(name) | \(points[name] ?? 0) | " + cells.joined(separator: " | ") + " |")
    }
    print("")
}

// Speed: the whole engine (parse, tokens, rules, model) on one core, on the corpus as it is and
// on 10 KiB messages (each corpus message padded or cut to 10 KiB of body).
let model = train(items)
let engine = SpamEngine()
func measure(_ messages: [[UInt8]]) -> (perSecond: Double, meanBytes: Int) {
    let start = Date()
    var n = 0
    var sink = 0.0
    while Date().timeIntervalSince(start) < 3 {
        for m in messages {
            sink += engine.classify(m, model: model).score
            n += 1
        }
    }
    if sink.isNaN { print("") }
    return (Double(n) / Date().timeIntervalSince(start), messages.reduce(0) { $0 + $1.count } / max(1, messages.count))
}
let sample = Array(raws.enumerated().filter { $0.offset % 10 == 0 }.map(\.element))
let asIs = measure(sample)
let tenK = sample.map { raw -> [UInt8] in
    if raw.count >= 10240 { return Array(raw.prefix(10240)) }
    var out = raw
    let filler = Array("\r\nLorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.".utf8)
    while out.count < 10240 { out += filler }
    return out
}
let ten = measure(tenK)
print("## Speed (one core, release build)")
print("| messages | mean size | messages/s |")
print("|---|---|---|")
print("| corpus sample (\(sample.count)) | \(asIs.meanBytes / 1024) KiB | \(Int(asIs.perSecond)) |")
print("| the same cut or padded to 10 KiB | 10 KiB | \(Int(ten.perSecond)) |")
print("model: \(model.tokens.count) tokens; feature extraction of the whole corpus took \(String(format: "%.1f", extractSeconds)) s")
