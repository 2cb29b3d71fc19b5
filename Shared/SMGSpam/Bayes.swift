import Foundation

/// Token statistics: in how many spam and ham training messages each token appeared.
/// Immutable once built; the classifier swaps in a new one when the shared model changes.
public struct TokenCounts: Sendable, Hashable {
    public var spam: UInt32
    public var ham: UInt32

    public init(spam: UInt32, ham: UInt32) {
        self.spam = spam
        self.ham = ham
    }
}

public struct BayesModel: Sendable {
    public var tokens: [String: TokenCounts]
    public var spamMessages: Int
    public var hamMessages: Int

    public init(tokens: [String: TokenCounts] = [:], spamMessages: Int = 0, hamMessages: Int = 0) {
        self.tokens = tokens
        self.spamMessages = spamMessages
        self.hamMessages = hamMessages
    }

    /// A model can score only when it has seen both kinds of mail.
    public var isUsable: Bool { spamMessages > 0 && hamMessages > 0 }

    public mutating func learn(_ tokens: Set<String>, spam: Bool, count: Int = 1) {
        for token in tokens {
            var c = self.tokens[token] ?? TokenCounts(spam: 0, ham: 0)
            if spam { c.spam = UInt32(max(0, Int(c.spam) + count)) } else { c.ham = UInt32(max(0, Int(c.ham) + count)) }
            self.tokens[token] = c
        }
        if spam { spamMessages = max(0, spamMessages + count) } else { hamMessages = max(0, hamMessages + count) }
    }
}

/// One token's weight in a verdict: its smoothed spam probability.
public struct Evidence: Sendable, Hashable {
    public var token: String
    public var probability: Double
}

/// Robinson's smoothed token probabilities combined with Fisher's chi-square method (as in
/// SpamBayes): the result is near 1 when the strongest tokens agree on spam, near 0 when they
/// agree on ham, and near 0.5 when they disagree or there is little evidence — which is what
/// makes the `suspect` band meaningful.
public struct BayesScorer: Sendable {
    /// Robinson's s: how strongly the prior `x` holds against few observations.
    public var strength: Double = 0.45
    /// Robinson's x: the probability assumed for a token seen rarely.
    public var prior: Double = 0.5
    /// Tokens nearer 0.5 than this are ignored.
    public var minimumDeviation: Double = 0.3
    /// At most this many of the most extreme tokens count.
    public var maxTokens: Int = 150

    public init() {}

    public func score(_ tokens: Set<String>, model: BayesModel) -> (probability: Double, evidence: [Evidence]) {
        guard model.isUsable else { return (0.5, []) }
        let ns = Double(model.spamMessages), nh = Double(model.hamMessages)
        var clues: [Evidence] = []
        clues.reserveCapacity(min(tokens.count, 512))
        for token in tokens {
            guard let c = model.tokens[token] else { continue }
            let n = Double(c.spam) + Double(c.ham)
            if n == 0 { continue }
            let spamRatio = Double(c.spam) / ns, hamRatio = Double(c.ham) / nh
            let p = spamRatio / (spamRatio + hamRatio)
            let f = (strength * prior + n * p) / (strength + n)
            if abs(f - 0.5) >= minimumDeviation { clues.append(Evidence(token: token, probability: f)) }
        }
        // Always in one order: the tokens come from a Set, whose order changes with every process's
        // hash seed, and summing the logarithms in another order moves a near-certain score by a
        // rounding error — enough to cross a threshold, so two classifiers could disagree.
        clues.sort { abs($0.probability - 0.5) > abs($1.probability - 0.5) || (abs($0.probability - 0.5) == abs($1.probability - 0.5) && $0.token < $1.token) }
        if clues.count > maxTokens { clues.removeLast(clues.count - maxTokens) }
        guard !clues.isEmpty else { return (0.5, []) }
        var sumLogHam = 0.0, sumLogSpam = 0.0
        for clue in clues {
            let f = min(max(clue.probability, 1e-6), 1 - 1e-6)
            sumLogHam += log(1 - f)
            sumLogSpam += log(f)
        }
        let n = clues.count
        let spamness = 1 - Self.chi2Q(-2 * sumLogHam, 2 * n)
        let hamness = 1 - Self.chi2Q(-2 * sumLogSpam, 2 * n)
        return ((spamness - hamness + 1) / 2, clues)
    }

    /// P(chi² ≥ x²) for `v` (even) degrees of freedom.
    static func chi2Q(_ x2: Double, _ v: Int) -> Double {
        let m = x2 / 2
        var term = exp(-m)
        var sum = term
        if v / 2 > 1 {
            for i in 1..<(v / 2) {
                term *= m / Double(i)
                sum += term
            }
        }
        return min(sum, 1)
    }
}
