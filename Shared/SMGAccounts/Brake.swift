public import SMGRedis
public import SMGStore
import SMGCore
public import Foundation

/// When a login or customer looks taken over. Every threshold must be exceeded on its own; the
/// defaults let a normal daily peak through (a shop's newsletter morning: a few hundred messages in
/// an hour, tens of recipient domains, a few bounces) and catch what a hijacked account does
/// (thousands per hour, hundreds of domains, mostly spam verdicts, many bounces).
public struct BrakeLimits: Sendable, Codable, Hashable {
    /// Messages in the current hour beyond which the volume counts as a burst, whatever the baseline.
    public var minBurst: Int = 300
    /// A burst must also exceed this many times the account's busiest hour of the previous 7 days.
    public var volumeFactor: Double = 5
    /// Spam/suspect share (last two hours) that brakes, once at least `minVerdicts` messages were seen.
    public var badShare: Double = 0.5
    public var minVerdicts: Int = 20
    /// Distinct recipient domains in the current hour that brake.
    public var maxRecipientDomains: Int = 300
    /// Bounce share (bounced recipients per message, last two hours) that brakes once at least
    /// `minBounces` recipients bounced.
    public var bounceShare: Double = 0.3
    public var minBounces: Int = 30
    /// What a braked account's new mail meets: `refuse` (451 4.7.1 at MAIL) or `hold` (accepted,
    /// held for an operator after classification).
    public var action: BrakeAction = .refuse

    public init() {}

    /// Checks ranges; the error names the field.
    public func validate() throws {
        func bad(_ field: String, _ why: String) -> AccountError { AccountError(code: .invalid, message: "brake.\(field): \(why)") }
        if minBurst < 1 { throw bad("min_burst", "must be at least 1") }
        if !(volumeFactor >= 1 && volumeFactor.isFinite) { throw bad("volume_factor", "must be at least 1") }
        if !(badShare > 0 && badShare <= 1) { throw bad("bad_share", "must be in (0, 1]") }
        if minVerdicts < 1 { throw bad("min_verdicts", "must be at least 1") }
        if maxRecipientDomains < 1 { throw bad("max_recipient_domains", "must be at least 1") }
        if !(bounceShare > 0 && bounceShare <= 1000) { throw bad("bounce_share", "must be positive") }
        if minBounces < 1 { throw bad("min_bounces", "must be at least 1") }
    }
}

public enum BrakeAction: String, Sendable, Codable, Hashable, CaseIterable {
    case refuse, hold
}

/// A brake in force: on whom, why, since when, what happens to new mail.
public struct BrakeRecord: Sendable, Hashable {
    public var subject: String      // "login:<name>" or "customer:<id>"
    public var reason: String
    public var since: String        // RFC 3339
    public var action: BrakeAction
}

/// The compromised-account brake (R10's sender behaviour): rolling per-hour statistics for every
/// login and customer, shared by every classifier and egress on every site, and the brakes.
///
/// Keys (`<prefix>` from `Keyspace`):
/// - `behav:<subject>` — hash: `<hour>:n` messages, `<hour>:bad` spam/suspect verdicts,
///   `<hour>:bounce` bounced recipients, `peak:<day>` busiest hour of that day; old fields are pruned
///   as hours pass (a subject keeps at most ~3 hours and 8 days of fields);
/// - `behav:<subject>:dom:<hour>` — HyperLogLog of recipient domains, expires after two hours;
/// - `brake:<subject>` — hash `reason`, `since`, `action`: the brake; deleted by a release.
/// Subjects are `login:<login>` and `customer:<id>`.
public struct BrakeStore: Sendable {
    public let redis: RedisClient
    public let keys: Keyspace

    public init(redis: RedisClient, keys: Keyspace = Keyspace()) {
        self.redis = redis
        self.keys = keys
    }

    public static func loginSubject(_ login: String) -> String { "login:\(login.lowercased())" }
    public static func customerSubject(_ id: String) -> String { "customer:\(id)" }

    func behaviourKey(_ subject: String) -> String { "\(keys.prefix)behav:\(subject)" }
    func domainsKey(_ subject: String, hour: Int) -> String { "\(keys.prefix)behav:\(subject):dom:\(hour)" }
    public func brakeKey(_ subject: String) -> String { "\(keys.prefix)brake:\(subject)" }
    var brakeIndex: String { "\(keys.prefix)brakes" }

    /// The result of observing one message for one subject.
    public enum Observation: Sendable, Hashable {
        case fine
        /// Braked before this message.
        case braked(BrakeAction)
        /// This message tripped the brake (reported once, by the observer that tripped it).
        case tripped(reason: String, action: BrakeAction)
    }

    /// Counts one classified message of `subject` and checks the limits. One script per subject.
    public func observe(subjects: [(subject: String, limits: BrakeLimits)], recipientDomains: Set<String>,
                        badVerdict: Bool, now: Date = Date()) async throws -> [Observation] {
        let hour = Int(now.timeIntervalSince1970) / 3600
        let day = hour / 24
        let stamp = Timestamp.format(now)
        let calls: [(keys: [RedisArg], args: [RedisArg])] = subjects.map { item in
            let l = item.limits
            return ([.init(behaviourKey(item.subject)), .init(domainsKey(item.subject, hour: hour)),
                     .init(brakeKey(item.subject)), .init(brakeIndex)],
                    [.init(hour), .init(day), .init(badVerdict ? 1 : 0), .init(l.minBurst), .init(l.volumeFactor),
                     .init(l.badShare), .init(l.minVerdicts), .init(l.maxRecipientDomains), .init(l.bounceShare),
                     .init(l.minBounces), .init(l.action.rawValue), .init(stamp), .init(item.subject)]
                    + recipientDomains.sorted().prefix(1000).map { RedisArg($0) })
        }
        let replies = try await redis.evalMany(Self.observeScript, calls: calls)
        return try replies.map { reply in
            if case .error(let m) = reply { throw RedisError(.server, m) }
            guard let parts = reply.array, parts.count == 3, let kind = parts[0].string else { return .fine }
            let action = parts[2].string.flatMap(BrakeAction.init(rawValue:)) ?? .refuse
            switch kind {
            case "tripped": return .tripped(reason: parts[1].string ?? "", action: action)
            case "braked": return .braked(action)
            default: return .fine
            }
        }
    }

    /// KEYS: behaviour hash, domains HLL (this hour), brake hash, brake index (set).
    /// ARGV: hour, day, bad(0/1), min_burst, volume_factor, bad_share, min_verdicts, max_domains,
    ///       bounce_share, min_bounces, action, now (RFC 3339), subject, domains…
    /// Returns {kind, reason, action}: kind `fine`, `braked` (already) or `tripped` (by this call).
    static let observeScript = RedisScript("""
    local h = tonumber(ARGV[1]); local d = tonumber(ARGV[2])
    local b = KEYS[1]
    local n = redis.call('HINCRBY', b, h .. ':n', 1)
    local bad = tonumber(redis.call('HGET', b, h .. ':bad') or '0')
    if ARGV[3] == '1' then bad = redis.call('HINCRBY', b, h .. ':bad', 1) end
    if #ARGV > 13 then
      redis.call('PFADD', KEYS[2], unpack(ARGV, 14, #ARGV))
      redis.call('EXPIRE', KEYS[2], 7200)
    end
    local peak = tonumber(redis.call('HGET', b, 'peak:' .. d) or '0')
    if n > peak then redis.call('HSET', b, 'peak:' .. d, n) end
    redis.call('HDEL', b, (h - 3) .. ':n', (h - 3) .. ':bad', (h - 3) .. ':bounce', 'peak:' .. (d - 8))
    redis.call('EXPIRE', b, 9 * 86400)
    if redis.call('EXISTS', KEYS[3]) == 1 then
      return {'braked', redis.call('HGET', KEYS[3], 'reason') or '', redis.call('HGET', KEYS[3], 'action') or 'refuse'}
    end
    local baseline = 0
    for i = 1, 7 do
      local p = tonumber(redis.call('HGET', b, 'peak:' .. (d - i)) or '0')
      if p > baseline then baseline = p end
    end
    local n2 = n + tonumber(redis.call('HGET', b, (h - 1) .. ':n') or '0')
    local bad2 = bad + tonumber(redis.call('HGET', b, (h - 1) .. ':bad') or '0')
    local bounce2 = tonumber(redis.call('HGET', b, h .. ':bounce') or '0') + tonumber(redis.call('HGET', b, (h - 1) .. ':bounce') or '0')
    local reason = nil
    local burst = math.max(tonumber(ARGV[4]), tonumber(ARGV[5]) * baseline)
    if n > burst then
      reason = string.format('%d messages this hour (limit %d; busiest hour of the last 7 days: %d)', n, burst, baseline)
    elseif n2 >= tonumber(ARGV[7]) and bad2 / n2 >= tonumber(ARGV[6]) then
      reason = string.format('%d of the last %d messages classified spam or suspect (limit %d%%)', bad2, n2, math.floor(tonumber(ARGV[6]) * 100 + 0.5))
    elseif bounce2 >= tonumber(ARGV[10]) and bounce2 / n2 >= tonumber(ARGV[9]) then
      reason = string.format('%d bounced recipients for %d messages in the last two hours (limit %d%%)', bounce2, n2, math.floor(tonumber(ARGV[9]) * 100 + 0.5))
    else
      local domains = redis.call('PFCOUNT', KEYS[2])
      if domains > tonumber(ARGV[8]) then
        reason = string.format('about %d different recipient domains this hour (limit %d)', domains, tonumber(ARGV[8]))
      end
    end
    if not reason then return {'fine', '', ''} end
    redis.call('HSET', KEYS[3], 'reason', reason, 'since', ARGV[12], 'action', ARGV[11])
    redis.call('SADD', KEYS[4], ARGV[13])
    return {'tripped', reason, ARGV[11]}
    """)

    /// Counts bounced recipients for the bounce-rate limit (egress calls it with its outcomes).
    public func recordBounces(subjects: [String], count: Int, now: Date = Date()) async throws {
        guard count > 0, !subjects.isEmpty else { return }
        let hour = Int(now.timeIntervalSince1970) / 3600
        _ = try await redis.pipeline(subjects.map { ["HINCRBY", .init(behaviourKey($0)), .init("\(hour):bounce"), .init(count)] })
    }

    /// The brakes in force among `subjects` (one round trip), for ingress's check at MAIL.
    public func active(_ subjects: [String]) async throws -> [BrakeRecord] {
        let replies = try await redis.pipeline(subjects.map { ["HMGET", .init(brakeKey($0)), "reason", "since", "action"] })
        var out: [BrakeRecord] = []
        for (subject, reply) in zip(subjects, replies) {
            guard let f = reply.array, f.count == 3, let reason = f[0].string else { continue }
            out.append(BrakeRecord(subject: subject, reason: reason, since: f[1].string ?? "",
                                   action: f[2].string.flatMap(BrakeAction.init(rawValue:)) ?? .refuse))
        }
        return out
    }

    /// Every brake in force. Index entries whose brake is gone (lifted or expired) are pruned.
    public func all() async throws -> [BrakeRecord] {
        let subjects = (try await redis.command("SMEMBERS", .init(brakeIndex)).array ?? []).compactMap(\.string).sorted()
        let found = try await active(subjects)
        let live = Set(found.map(\.subject))
        try await prune(subjects.filter { !live.contains($0) })
        return found
    }

    /// Takes `subjects` out of the index, each only if its brake is still gone when Redis runs
    /// this: between reading a subject as stale and removing it, the subject may trip again (the
    /// observe script writes the brake and adds it back to the index), and a plain SREM then hid a
    /// brake in force from every listing and the `smg_braked_accounts` gauge.
    func prune(_ subjects: [String]) async throws {
        guard !subjects.isEmpty else { return }
        _ = try await redis.eval(Self.pruneScript, keys: [.init(brakeIndex)] + subjects.map { .init(brakeKey($0)) },
                                 args: subjects.map { .init($0) })
    }

    /// KEYS: index, brake key of each subject; ARGV: the subjects. Returns how many were removed.
    static let pruneScript = RedisScript("""
    local removed = 0
    for i, subject in ipairs(ARGV) do
      if redis.call('EXISTS', KEYS[i + 1]) == 0 then removed = removed + redis.call('SREM', KEYS[1], subject) end
    end
    return removed
    """)

    /// Lifts a brake and clears the subject's current counts, so the burst that tripped it does not
    /// trip it again at once. Returns the record that was lifted, nil when there was none.
    public func release(_ subject: String, now: Date = Date()) async throws -> BrakeRecord? {
        guard let record = try await active([subject]).first else { return nil }
        let hour = Int(now.timeIntervalSince1970) / 3600
        _ = try await redis.pipeline([
            ["DEL", .init(brakeKey(subject))],
            ["SREM", .init(brakeIndex), .init(subject)],
            ["HDEL", .init(behaviourKey(subject)), .init("\(hour):n"), .init("\(hour):bad"), .init("\(hour):bounce"),
             .init("\(hour - 1):n"), .init("\(hour - 1):bad"), .init("\(hour - 1):bounce")],
            ["DEL", .init(domainsKey(subject, hour: hour))],
        ])
        return record
    }
}
