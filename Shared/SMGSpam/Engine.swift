public import SMGCore

/// The four categories of R10, from best to worst.
public enum SpamCategory: String, Sendable, Codable, Hashable, CaseIterable {
    case clean, bulk, suspect, spam
}

/// Thresholds and routing: what a score means and which lane each category takes (R11).
public struct SpamPolicy: Sendable, Hashable {
    /// Score at or above which a message is `spam`. The defaults are the operating points measured in
    /// bench/README.md: `spam` keeps ham false positives under 0.5 % on mail of another era,
    /// `suspect` (bad lane by default) catches most of the rest.
    public var spamThreshold: Double = 3.9
    /// Score at or above which a message is `suspect`.
    public var suspectThreshold: Double = 2.0
    /// Lanes for `suspect` and `bulk`; `spam` always takes the bad lane, `clean` the good one.
    public var suspectLane: Lane = .bad
    public var bulkLane: Lane = .good

    public init() {}

    public func lane(for category: SpamCategory) -> Lane {
        switch category {
        case .clean: .good
        case .bulk: bulkLane
        case .suspect: suspectLane
        case .spam: .bad
        }
    }
}

/// What the engine decided about one message.
public struct SpamVerdict: Sendable, Hashable {
    public var category: SpamCategory
    /// Points: the statistical part (−4 … +4) plus the rules' points (about one each).
    public var score: Double
    public var lane: Lane
    /// The Bayes probability of spam (0.5 when the model had nothing to say).
    public var probability: Double
    public var rules: [RuleHit]
    /// The strongest statistical evidence, strongest first (at most a few tokens each way).
    public var evidence: [Evidence]
    /// Which engine decided (`builtin`, `rspamd`).
    public var engine: String
    /// The statistical part of `score`.
    public var bayesPoints: Double

    public init(category: SpamCategory, score: Double, lane: Lane, probability: Double, rules: [RuleHit],
                evidence: [Evidence], engine: String, bayesPoints: Double = 0) {
        self.bayesPoints = bayesPoints
        self.category = category
        self.score = score
        self.lane = lane
        self.probability = probability
        self.rules = rules
        self.evidence = evidence
        self.engine = engine
    }

    /// Reasons a customer can read: the rules that scored, then the statistical verdict with the
    /// words that weighed most.
    public var reasons: [String] {
        var out = rules.filter { $0.points != 0 || SpamRules.bulkRuleNames.contains($0.name) || $0.name.hasPrefix("RSPAMD_") }
            .sorted { $0.points > $1.points }
            .map { "\($0.name) (\(Self.points($0.points))): \($0.description)" }
        if engine == "builtin" {
            let band = Self.bayesBand(probability)
            let leaning = probability >= 0.5 ? evidence.filter { $0.probability > 0.5 } : evidence.filter { $0.probability < 0.5 }
            let words = leaning.sorted { abs($0.probability - 0.5) > abs($1.probability - 0.5) }.prefix(5)
                .map { "\"\(Self.readable($0.token))\"" }
            var text = "\(band) (\(Self.points(bayesPoints))): statistical spam probability \(Self.format(probability, digits: 3))"
            if !words.isEmpty { text += "; strongest \(probability >= 0.5 ? "spam" : "ham") signs: \(words.joined(separator: ", "))" }
            out.append(text)
        }
        return out
    }

    static func bayesBand(_ p: Double) -> String {
        switch p {
        case ..<0.01: "BAYES_00"
        case ..<0.2: "BAYES_05"
        case ..<0.4: "BAYES_20"
        case ..<0.6: "BAYES_50"
        case ..<0.8: "BAYES_60"
        case ..<0.95: "BAYES_80"
        case ..<0.99: "BAYES_95"
        default: "BAYES_99"
        }
    }

    /// A token as a customer reads it: `url:example.com` → `link to example.com`, `s:free` → `free (subject)`.
    static func readable(_ token: String) -> String {
        let prefixes: [(String, String)] = [("url:", "link to "), ("s:", ""), ("fromn:", ""), ("from:", "from "),
                                            ("reply-ton:", ""), ("reply-to:", "reply to "), ("to:", "to "),
                                            ("ext:", "attachment ."), ("ct:", "part "), ("x-mailer:", "mailer "),
                                            ("content-type:", "type "), ("nohdr:", "no header ")]
        for (prefix, label) in prefixes where token.hasPrefix(prefix) {
            let rest = token.dropFirst(prefix.count)
            return prefix == "s:" ? "\(rest) (subject)" : "\(label)\(rest)"
        }
        return token
    }

    /// A score as the message record and NDRs show it: two decimals.
    public static func formatScore(_ value: Double) -> String { format(value, digits: 2) }

    static func points(_ value: Double) -> String {
        (value >= 0 ? "+" : "") + format(value, digits: 1)
    }

    static func format(_ value: Double, digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        var s = "\(rounded)"
        if let dot = s.firstIndex(of: ".") {
            let decimals = s.distance(from: dot, to: s.endIndex) - 1
            if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
        }
        return s
    }
}

/// The built-in engine: rules plus the statistical model, one pure function of the message and
/// the model. `smgctl classify` and `smg-classifier` call exactly this.
public struct SpamEngine: Sendable {
    public var policy: SpamPolicy
    public var scorer: BayesScorer
    /// Points the statistical verdict is worth from certain ham to certain spam: the Bayes part
    /// of the score is `bayesWeight × (p − 0.5)`.
    public var bayesWeight: Double

    public init(policy: SpamPolicy = SpamPolicy(), scorer: BayesScorer = BayesScorer(), bayesWeight: Double = 8) {
        self.policy = policy
        self.scorer = scorer
        self.bayesWeight = bayesWeight
    }

    public func classify(_ raw: [UInt8], model: BayesModel) -> SpamVerdict {
        classify(features: FeatureExtractor.extract(raw), model: model)
    }

    public func classify(features: MessageFeatures, model: BayesModel) -> SpamVerdict {
        let hits = SpamRules.evaluate(features)
        let (probability, clues) = scorer.score(features.tokens, model: model)
        let score = bayesWeight * (probability - 0.5) + hits.reduce(0) { $0 + $1.points }
        let category: SpamCategory
        if score >= policy.spamThreshold {
            category = .spam
        } else if score >= policy.suspectThreshold {
            category = .suspect
        } else if hits.contains(where: { SpamRules.bulkRuleNames.contains($0.name) }) {
            category = .bulk
        } else {
            category = .clean
        }
        let strongest = clues.sorted { abs($0.probability - 0.5) > abs($1.probability - 0.5) || (abs($0.probability - 0.5) == abs($1.probability - 0.5) && $0.token < $1.token) }
        return SpamVerdict(category: category, score: score, lane: policy.lane(for: category), probability: probability,
                           rules: hits, evidence: Array(strongest.prefix(20)), engine: "builtin",
                           bayesPoints: bayesWeight * (probability - 0.5))
    }
}
