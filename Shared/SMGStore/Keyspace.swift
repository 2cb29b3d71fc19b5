public import SMGCore

/// Every Redis key the gateway uses. `docs/ARCHITECTURE.md` lists them with their types
/// and writers; keep the two in step.
///
/// All keys start with a configurable prefix (default `smg:`), so several test gateways or a
/// staging gateway can share one Redis.
public struct Keyspace: Sendable, Hashable {
    public var prefix: String

    /// The prefix when `redis.key_prefix` (or smgctl's `--prefix`) does not say otherwise.
    public static let defaultPrefix = "smg:"

    public init(prefix: String = Keyspace.defaultPrefix) { self.prefix = prefix }

    /// HASH: `envelope` (JSON), `state`, `created` (ms), `lane`, stage facts, `rcpt:<address>` (JSON).
    public func message(_ id: MessageID) -> String { "\(prefix)msg:\(id)" }
    /// STRING: the raw message as accepted (CRLF line ends, the gateway's Received header on top).
    public func body(_ id: MessageID) -> String { "\(prefix)body:\(id)" }
    /// STREAM: the message's own event log (field `e` = event JSON); `smgctl trace` reads it.
    public func events(_ id: MessageID) -> String { "\(prefix)ev:\(id)" }
    /// STREAM: every event of the gateway, capped with MAXLEN ~.
    public var globalEvents: String { "\(prefix)events" }
    /// ZSET: messages published on `topic` whose consuming stage has not recorded a result;
    /// score = lease deadline in ms (Redis server time). Past the deadline, redrive takes them.
    public func pending(_ topic: String) -> String { "\(prefix)pending:\(topic)" }
    /// HASH: message id → owner token of the process that holds its lease for `topic`
    /// (`~wait` while it waits for a retry time).
    public func owners(_ topic: String) -> String { "\(prefix)owner:\(topic)" }
    /// HASH: endpoint → expiry (ms, wall clock) of the processes that serve `kind`:
    /// a data topic (producers' PUSH endpoints), `events` (PUB endpoints for taps), `http`.
    public func registry(_ kind: String) -> String { "\(prefix)registry:\(kind)" }
    /// HASH: message id → the topic whose stage it was taken from, for messages an operator put
    /// on hold (`smgctl queue hold`). Held messages are in no pending set, so nothing redrives them.
    public var held: String { "\(prefix)held" }
    /// ZSET: message id → time (ms) it was quarantined: its record could not be read, so no stage
    /// can work on it; `smgctl queue` shows it, an operator deletes or repairs it.
    public var quarantine: String { "\(prefix)quarantine" }
    /// STRING (with a time to live): submission fingerprint → id of the message stored for it, so
    /// a client's retry of a transaction whose 250 it never saw is not stored twice.
    public func submission(_ fingerprint: String) -> String { "\(prefix)dedupe:\(fingerprint)" }

    /// HASH: source address → JSON `{reason, by, at}` of egress source addresses an operator (or
    /// the blacklist monitor) drained: egress sends nothing from them until undrained (R17).
    public var drainedSources: String { "\(prefix)pool:drained" }
    /// HASH: source address → JSON `{lane, helo, seen}`: every egress announces its pool (every
    /// minute); the blacklist monitor checks these addresses.
    public var poolMembers: String { "\(prefix)pool:members" }

    // Blacklist monitor (R19).

    /// HASH: `"<address> <zone>"` → JSON listing (state open|requested|cleared, code, reason, delisting URL, times).
    public var blacklistListings: String { "\(prefix)blacklist:listings" }
    /// STRING with a time to live: the owner token of the monitor instance running a check now.
    public var blacklistLock: String { "\(prefix)blacklist:lock" }
    /// STRING (expires after 3 days): a check run that is done (`daily:<local day>`, `hourly:<UTC hour>`).
    public func blacklistRun(_ run: String) -> String { "\(prefix)blacklist:done:\(run)" }
    /// HASH: run kind (`daily`, `recheck`) → Unix seconds when the last such run (by any instance)
    /// finished, for monitoring.
    public var blacklistLastRun: String { "\(prefix)blacklist:last_run" }

    // Accounts (SMGAccounts; written by smgctl, read by ingress).

    /// STRING (JSON): a customer's policy.
    public func customer(_ id: String) -> String { "\(prefix)customer:\(id)" }
    /// SET: every customer id.
    public var customers: String { "\(prefix)customers" }
    /// STRING (JSON): a login's account. Logins are case-insensitive: the key uses the lowercase form.
    public func account(_ login: String) -> String { "\(prefix)account:\(login.lowercased())" }
    /// SET: the (lowercase) logins of a customer.
    public func logins(_ customer: String) -> String { "\(prefix)logins:\(customer)" }
    /// ZSET: the customer's sliding window of admission times (R6).
    public func rate(_ customer: String) -> String { "\(prefix)rate:\(customer)" }
    /// STRING counter: makes the members of `rate(customer)` unique.
    public func rateSequence(_ customer: String) -> String { "\(rate(customer)):seq" }
    /// STRING counter (with a time to live): failed logins from one client IP.
    public func authFailures(ip: String) -> String { "\(prefix)authfail:ip:\(ip)" }
    /// STRING counter (with a time to live): failed logins for one login, existing or not (lowercase).
    public func authFailures(login: String) -> String { "\(prefix)authfail:login:\(login.lowercased())" }

    // Outbound TLS policy (SMGTLSPolicy; R14–R16).

    /// STRING (JSON, expires with the policy's max_age): a domain's MTA-STS policy as fetched —
    /// `{id, policy, fetched, expires}`; shared by every site and egress (RFC 8461 §5).
    public func mtaSTS(_ domain: String) -> String { "\(prefix)tls:sts:\(domain.lowercased())" }
    /// HASH: rule id → JSON of a forced TLS rule (`smgctl tls rule`).
    public var tlsRules: String { "\(prefix)tls:rules" }
    /// STRING counter: the number part of the next rule id.
    public var tlsRuleSequence: String { "\(prefix)tls:rules:seq" }
    /// HASH (expires after 8 days): TLS-RPT session counts of one policy domain on one UTC day
    /// (`day` = YYYY-MM-DD): `policy` (JSON), `ok`, and `fail|<result-type>|<mx>|<ip>|<source ip>`.
    public func tlsReport(day: String, domain: String) -> String { "\(prefix)tlsrpt:\(day):\(domain.lowercased())" }
    /// SET (expires after 8 days): the policy domains counted on `day`.
    public func tlsReportDomains(day: String) -> String { "\(prefix)tlsrpt:\(day)" }
    /// STRING (expires after 8 days): set once the reports of `day` were sent (by whichever egress).
    public func tlsReportSent(day: String) -> String { "\(prefix)tlsrpt:sent:\(day)" }

    // DKIM keys (SMGDKIMKeys; written by smgctl, read by the signer).

    /// HASH: selector → key record JSON for `domain`.
    public func dkimKeys(_ domain: String) -> String { "\(prefix)dkim:\(domain)" }
    /// SET: domains that have DKIM keys.
    public var dkimDomains: String { "\(prefix)dkim:domains" }

    // Ingress connection census (R3 across processes).

    /// HASH with a short time to live: one ingress process's open connections (`_total`, and one
    /// field per client IP), rewritten every second.
    public func connections(site: String, instance: String) -> String { "\(prefix)conn:\(site):\(instance)" }
    /// What `connections(site:)` keys of a site, or of all sites, start with.
    public func connectionsPrefix(site: String?) -> String { site.map { "\(prefix)conn:\($0):" } ?? "\(prefix)conn:" }
    /// ZSET: every census hash → when it expires (ms).
    public var connectionsIndex: String { "\(prefix)conn-index" }

    // Operator web interface (smg-admin; written by it and by `smgctl operator`).

    /// STRING (JSON): an operator account `{name, role, password_hash, disabled, created}`.
    public func adminOperator(_ name: String) -> String { "\(prefix)admin:operator:\(name.lowercased())" }
    /// SET: every operator name (lowercase).
    public var adminOperators: String { "\(prefix)admin:operators" }
    /// STRING (JSON, expires with the session): a web session, keyed by the SHA-256 (hex) of its cookie.
    public func adminSession(_ digest: String) -> String { "\(prefix)admin:session:\(digest)" }
    /// HASH: SHA-256 (hex) of an API token → JSON `{operator, created, label}`.
    public var adminTokens: String { "\(prefix)admin:tokens" }
    /// STRING counter (with a time to live): failed operator logins from one IP, or for one name.
    public func adminLoginFailures(_ subject: String) -> String { "\(prefix)admin:loginfail:\(subject)" }
    /// STREAM (capped): every change made through smg-admin (`admin.change` events).
    public var adminAudit: String { "\(prefix)admin:audit" }
}
