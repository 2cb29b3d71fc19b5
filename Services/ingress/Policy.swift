import SMGCore
import SMGAccounts
import SMGDNS
import SMTPProtocol
import Foundation
import Crypto
import SMGSync
import SMGDKIM
import SMGMIME

/// A refusal: the reply the client gets, and the reason operators see in the event and metric.
struct Refusal: Error {
    var reply: SMTPReply
    var reason: String
    var eventType: String = EventType.rejectedPolicy

    /// Ingress's refusals: each pairs a reply of the one table (`SMTPStatus`) with the reason and
    /// event type operators see.
    static func senderDomainUnresolvable() -> Refusal {
        Refusal(reply: SMTPReply(.senderDomainUnresolvable), reason: "sender domain does not resolve")
    }
    static func senderDomainTemporary() -> Refusal {
        Refusal(reply: SMTPReply(.senderDomainTemporary),
                reason: "sender domain lookup failed temporarily")
    }
    static func rateLimited() -> Refusal {
        Refusal(reply: SMTPReply(.rateLimited), reason: "rate limit", eventType: EventType.ratelimitHit)
    }
    static func braked(_ subject: String) -> Refusal {
        Refusal(reply: SMTPReply(.accountBraked), reason: "\(subject) braked (compromised-account brake)")
    }
    static func networkNotAllowed() -> Refusal {
        Refusal(reply: SMTPReply(.networkNotAllowed),
                reason: "client network not allowed for the customer")
    }
    static func senderNotOwned() -> Refusal {
        Refusal(reply: SMTPReply(.senderNotOwned),
                reason: "sender domain not owned by the customer")
    }
    static func tlsRequired() -> Refusal {
        Refusal(reply: SMTPReply(.tlsRequired),
                reason: "customer requires TLS")
    }
    static func reverseDNSFailed() -> Refusal {
        Refusal(reply: SMTPReply(.reverseDNSFailed),
                reason: "reverse DNS check failed")
    }
    static func reverseDNSTemporary() -> Refusal {
        Refusal(reply: SMTPReply(.reverseDNSTemporary),
                reason: "reverse DNS lookup failed temporarily")
    }
    static func accountUnavailable() -> Refusal {
        Refusal(reply: SMTPReply(.authRequired), reason: "account or customer disabled")
    }
    /// Backpressure (pending mail across the stages, Redis memory): 451 4.3.2, nothing recorded per message.
    static func busy(_ why: String) -> Refusal {
        Refusal(reply: SMTPReply(.systemBusy), reason: why)
    }
    static func temporary(_ why: String) -> Refusal {
        Refusal(reply: SMTPReply(.temporaryFailure), reason: why)
    }
    static func tooBig() -> Refusal {
        Refusal(reply: SMTPReply(.messageTooBig), reason: "message larger than the customer's limit")
    }
    /// A From or Sender field that the RFC 5322 parser cannot read, or that is repeated: the reply
    /// says which field and why, so that the customer's developer can fix the application.
    static func addressHeaderMalformed(_ field: String, _ why: String) -> Refusal {
        let table = SMTPReply(.addressHeaderMalformed)
        return Refusal(reply: SMTPReply(code: table.code, enhanced: table.enhanced, "\(field) header: \(why)"),
                       reason: "\(field) header malformed: \(why)")
    }
    static func fromNotOwned() -> Refusal {
        Refusal(reply: SMTPReply(.fromNotOwned),
                reason: "From header domain not owned by the customer")
    }
    static func tooManyRecipients() -> Refusal {
        Refusal(reply: SMTPReply(.tooManyRecipients), reason: "more recipients than the customer's limit")
    }
}

/// The DNS-based checks of ingress (R4, R5), mapping DNS outcomes to SMTP replies:
/// a proven absence is permanent (5xx), anything else about DNS is temporary (4xx).
struct DNSChecks {
    let resolver: DNSResolver

    let allowNonPublic: Bool

    /// R5: mail could be sent back to the sender's domain: its MX (not the null MX) or, without
    /// MX, its A/AAAA lead to at least one public address (RFC 5321 §5.1 routing, the same
    /// `mailDestination` egress uses). Private, loopback and reserved addresses count as none
    /// unless `ingress.allow_nonpublic_sender_domains`. Address literals are refused.
    func senderDomain(_ domain: String) async -> Refusal? {
        guard !domain.isEmpty, !domain.hasPrefix("[") else { return .senderDomainUnresolvable() }
        let policy = MailDestinationPolicy(maxAddresses: 1, allowNonPublic: allowNonPublic)
        switch await resolver.mailDestination(for: domain, policy: policy) {
        case .targets(let targets): return targets.isEmpty ? .senderDomainUnresolvable() : nil
        case .nullMX, .permanentFailure: return .senderDomainUnresolvable()
        case .temporaryFailure: return .senderDomainTemporary()
        }
    }

    /// R4: the client IP has a PTR whose name resolves back to the same IP (FCrDNS).
    func reverseDNS(_ ip: String) async -> Refusal? {
        guard let clientBytes = CIDR.parseAddress(ip) else { return .reverseDNSFailed() }
        let names: [DNSName]
        switch (try? await resolver.ptr(for: ip)) ?? .servfail {
        case .answer(let list, _, _): names = list
        case .nxdomain, .nodata: return .reverseDNSFailed()
        case .servfail, .timeout, .refused, .formerr: return .reverseDNSTemporary()
        }
        var temporary = false
        for name in names.prefix(5) {
            switch (try? await resolver.addresses(of: name.description)) ?? .servfail {
            case .answer(let addresses, _, _):
                if addresses.contains(where: { CIDR.parseAddress($0.description) == clientBytes }) { return nil }
            case .nxdomain, .nodata: continue
            case .servfail, .timeout, .refused, .formerr: temporary = true
            }
        }
        return temporary ? .reverseDNSTemporary() : .reverseDNSFailed()
    }
}

/// Accounts and customers with a short in-process cache, and the credential check.
final class Authenticator: Sendable {
    let store: AccountStore
    let hasher: PasswordHasher
    let throttle: AuthThrottle
    /// login → (verified digest of password+hash, until)
    let verified = Locked<[String: (digest: [UInt8], until: Date)]>([:])
    let customers = Locked<[String: (customer: Customer?, until: Date)]>([:])
    let accounts = Locked<[String: (account: Account?, until: Date)]>([:])
    static let cacheTime: TimeInterval = 5
    static let verifiedTime: TimeInterval = 300

    init(store: AccountStore, hasher: PasswordHasher, throttle: AuthThrottle) {
        self.store = store
        self.hasher = hasher
        self.throttle = throttle
    }

    enum Outcome {
        case success(Account)
        case failure
        case throttled
    }

    /// Checks credentials; the same outcome (and about the same time) for a missing user as
    /// for a wrong password. Throws only for Redis trouble (→ 454 4.7.0).
    func check(login: String, password: String, ip: String) async throws -> Outcome {
        if try await throttle.isBlocked(ip: ip, login: login) { return .throttled }
        let account = try await store.account(login)
        let hash = account?.passwordHash ?? hasher.decoy
        let digest = Self.digest(password: password, hash: hash)
        let cached = verified.withLock { entry -> Bool in
            guard let e = entry[login.lowercased()], e.until > Date() else { return false }
            return e.digest == digest
        }
        let ok = cached ? true : await hasher.verify(password, against: hash)
        guard ok, let account, !account.disabled else {
            try await throttle.recordFailure(ip: ip, login: login)
            return .failure
        }
        if !cached {
            verified.withLock { $0[login.lowercased()] = (digest, Date().addingTimeInterval(Self.verifiedTime)) }
        }
        return .success(account)
    }

    /// The login's account and customer, cached for `cacheTime`: MAIL, every RCPT and DATA ask,
    /// and a Redis round trip per command is not worth a few seconds of freshness.
    func customer(forLogin login: String) async throws -> (Account, Customer)? {
        let now = Date()
        let key = login.lowercased()
        let account: Account?
        if let hit = accounts.withLock({ $0[key] }), hit.until > now {
            account = hit.account
        } else {
            account = try await store.account(login)
            accounts.withLock { $0[key] = (account, now.addingTimeInterval(Self.cacheTime)) }
        }
        guard let account, !account.disabled else { return nil }
        if let hit = customers.withLock({ $0[account.customer] }), hit.until > now {
            return hit.customer.map { (account, $0) }
        }
        let customer = try await store.customer(account.customer)
        customers.withLock { $0[account.customer] = (customer, now.addingTimeInterval(Self.cacheTime)) }
        return customer.map { (account, $0) }
    }

    /// What the verified-credentials cache remembers: SHA-256 of password and stored hash (a
    /// changed password changes the stored hash, which invalidates the entry). Memory only.
    static func digest(password: String, hash: String) -> [UInt8] {
        Array(SHA256.hash(data: Array(password.utf8) + [0] + Array(hash.utf8)))
    }
}

/// R5 for the header section: exactly one `From:` field, at most one `Sender:`, and every mailbox
/// in them (groups, several mailboxes, obsolete routes included) at a domain of the customer — the
/// signer signs with the From domain's key, so one foreign mailbox would get the customer's
/// signature on another's name. Parsed with the one RFC 5322 parser (`SMGMIME.AddressList`).
enum HeaderSenderPolicy {
    static func check(_ message: DKIMMessage, owns: (String) -> Bool) -> Refusal? {
        for (name, required) in [("From", true), ("Sender", false)] {
            let fields = message.fields(named: name)
            if fields.isEmpty {
                if required { return .fromNotOwned() }
                continue
            }
            guard fields.count == 1 else { return .addressHeaderMalformed(name, "more than one \(name) field") }
            let mailboxes: [AddressList.Mailbox]
            do {
                mailboxes = try AddressList.mailboxes(fields[0].value)
            } catch {
                return .addressHeaderMalformed(name, error.reason)
            }
            guard !mailboxes.isEmpty else { return .addressHeaderMalformed(name, "no mailbox") }
            if name == "Sender", mailboxes.count != 1 { return .addressHeaderMalformed(name, "more than one mailbox") }
            for mailbox in mailboxes where mailbox.isDomainLiteral || !owns(mailbox.domain) {
                return .fromNotOwned()
            }
        }
        return nil
    }
}

/// The compromised-account brake as ingress sees it: whether a login or its customer is braked
/// with `refuse`, cached for two seconds per login (a brake takes effect within that; MAIL does
/// not pay a Redis round trip each).
final class BrakeCheck: Sendable {
    let store: BrakeStore
    let cache = Locked<[String: (subject: String?, until: ContinuousClock.Instant)]>([:])

    init(store: BrakeStore) { self.store = store }

    /// The braked subject (`login:…` or `customer:…`) whose mail is refused, nil when none.
    func refusing(login: String, customer: String) async throws -> String? {
        let key = "\(login.lowercased())\u{0}\(customer)"
        let now = ContinuousClock.now
        if let hit = cache.withLock({ $0[key] }), hit.until > now { return hit.subject }
        let active = try await store.active([BrakeStore.loginSubject(login), BrakeStore.customerSubject(customer)])
        let subject = active.first { $0.action == .refuse }?.subject
        cache.withLock { c in
            if c.count > 100_000 { c.removeAll() }
            c[key] = (subject, now.advanced(by: .seconds(2)))
        }
        return subject
    }
}
