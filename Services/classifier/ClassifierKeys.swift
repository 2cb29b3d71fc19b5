import SMGRuntime
import SMGAccounts
import SMGCore
import SMGSpam

enum ClassifierKeys {
    static let engine = ConfigKey<String>.choice(
        "classifier.engine", default: "builtin", choices: ["builtin", "rspamd"],
        help: "builtin: the gateway's own rules + statistical model (no external service); rspamd: ask rspamd's /checkv2 (classifier.rspamd_url).")
    static let modelFile = ConfigKey<String>.string(
        "classifier.model_file", default: "",
        help: "Model file (`smgctl train --write-model`) that seeds the shared model in Redis when Redis holds none, e.g. the shipped deploy/spam/model.txt; empty = wait for `smgctl train`.")
    static let modelRefresh = ConfigKey.duration(
        "classifier.model_refresh", default: "10s", min: .milliseconds(100), max: .seconds(3600),
        help: "How often a classifier checks whether the shared model changed (training by any operator reaches every classifier within it).")
    static let spamThreshold = ConfigKey<Double>.number(
        "classifier.spam_threshold", default: "3.9", range: -1000...1000,
        help: "Score at or above which a message is spam (always the bad lane). The score is the statistical part (-4 certain ham … +4 certain spam) plus the rules' points (about 1 each; GTUBE 1000): the default lets a near-certain statistical verdict alone, or a likely one with a rule, make spam.")
    static let suspectThreshold = ConfigKey<Double>.number(
        "classifier.suspect_threshold", default: "2", range: -1000...1000,
        help: "Score at or above which a message is suspect (below classifier.spam_threshold).")
    static let suspectLane = ConfigKey<String>.choice(
        "classifier.suspect_lane", default: "bad", choices: ["good", "bad"], help: "Lane of suspect messages.")
    static let bulkLane = ConfigKey<String>.choice(
        "classifier.bulk_lane", default: "good", choices: ["good", "bad"],
        help: "Lane of bulk messages (list or newsletter mail that is not suspect).")
    static let addHeader = ConfigKey<Bool>.bool(
        "classifier.add_header", default: false,
        help: "Add an X-SMG-Spam header (category, score, lane, rules) to outgoing mail.")
    static let rspamdURL = ConfigKey<String>.string(
        "classifier.rspamd_url", default: "http://127.0.0.1:11333",
        help: "Base URL of rspamd's normal worker, for classifier.engine rspamd.",
        validate: { $0.hasPrefix("http://") || $0.hasPrefix("https://") ? nil : "expected an http:// or https:// URL" })
    static let rspamdTimeout = ConfigKey.duration(
        "classifier.rspamd_timeout", default: "10s", min: .milliseconds(100), max: .seconds(300),
        help: "Time allowed for one rspamd check.")
    static let rspamdRequired = ConfigKey<Bool>.bool(
        "classifier.rspamd_required", default: true,
        help: "With rspamd down: true = the message waits and is retried (fail closed); false = the builtin engine decides.")

    static let brakeEnabled = ConfigKey<Bool>.bool(
        "brake.enabled", default: true, help: "The compromised-account brake: watch each login's and customer's sending behaviour.")
    static let brakeMinBurst = ConfigKey<Int>.int(
        "brake.min_burst", default: 300, range: 1...100_000_000,
        help: "Default: messages in one hour that count as a burst whatever the baseline (per customer: smgctl customer brake).")
    static let brakeVolumeFactor = ConfigKey<Double>.number(
        "brake.volume_factor", default: "5", range: 1...10_000,
        help: "Default: a burst must also exceed this many times the busiest hour of the previous 7 days.")
    static let brakeBadShare = ConfigKey<Double>.number(
        "brake.bad_share", default: "0.5", range: 0.01...1,
        help: "Default: share of spam/suspect verdicts (last two hours) that brakes.")
    static let brakeMinVerdicts = ConfigKey<Int>.int(
        "brake.min_verdicts", default: 20, range: 1...1_000_000, help: "Default: messages needed before brake.bad_share applies.")
    static let brakeMaxDomains = ConfigKey<Int>.int(
        "brake.max_recipient_domains", default: 300, range: 1...100_000_000,
        help: "Default: distinct recipient domains in one hour that brake.")
    static let brakeBounceShare = ConfigKey<Double>.number(
        "brake.bounce_share", default: "0.3", range: 0.01...1000,
        help: "Default: bounced recipients per message (last two hours) that brake.")
    static let brakeMinBounces = ConfigKey<Int>.int(
        "brake.min_bounces", default: 30, range: 1...1_000_000, help: "Default: bounces needed before brake.bounce_share applies.")
    static let brakeAction = ConfigKey<String>.choice(
        "brake.action", default: "refuse", choices: BrakeAction.allCases.map(\.rawValue),
        help: "Default: refuse = new mail of a braked account gets 451 4.7.1 at MAIL; hold = accepted and held for an operator. Either way its mail still in the pipeline is held.")
    static let brakeNotify = ConfigKey<String>.string(
        "brake.notify", default: "",
        help: "Operators' mailbox told of every new brake (a notice through the pipeline); empty = only the event and the log.",
        validate: { $0.isEmpty || ($0.contains("@") && !$0.contains(" ")) ? nil : "expected an address like ops@example.net" })

    static let all: [AnyConfigKey] = [
        engine.erased, modelFile.erased, modelRefresh.erased, spamThreshold.erased, suspectThreshold.erased,
        suspectLane.erased, bulkLane.erased, addHeader.erased, rspamdURL.erased, rspamdTimeout.erased, rspamdRequired.erased,
        brakeEnabled.erased, brakeMinBurst.erased, brakeVolumeFactor.erased, brakeBadShare.erased, brakeMinVerdicts.erased,
        brakeMaxDomains.erased, brakeBounceShare.erased, brakeMinBounces.erased, brakeAction.erased, brakeNotify.erased,
    ]

    static func policy(_ config: Config) throws -> SpamPolicy {
        var p = SpamPolicy()
        p.spamThreshold = try config.get(spamThreshold)
        p.suspectThreshold = try config.get(suspectThreshold)
        guard p.suspectThreshold <= p.spamThreshold else {
            throw ConfigError(key: suspectThreshold.name, source: "config",
                              problem: "\(p.suspectThreshold) is above classifier.spam_threshold (\(p.spamThreshold))")
        }
        p.suspectLane = Lane(rawValue: try config.get(suspectLane)) ?? .bad
        p.bulkLane = Lane(rawValue: try config.get(bulkLane)) ?? .good
        return p
    }

    static func brakeLimits(_ config: Config) throws -> BrakeLimits {
        var l = BrakeLimits()
        l.minBurst = try config.get(brakeMinBurst)
        l.volumeFactor = try config.get(brakeVolumeFactor)
        l.badShare = try config.get(brakeBadShare)
        l.minVerdicts = try config.get(brakeMinVerdicts)
        l.maxRecipientDomains = try config.get(brakeMaxDomains)
        l.bounceShare = try config.get(brakeBounceShare)
        l.minBounces = try config.get(brakeMinBounces)
        l.action = BrakeAction(rawValue: try config.get(brakeAction)) ?? .refuse
        return l
    }
}
