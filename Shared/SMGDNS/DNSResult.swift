/// The outcome of a lookup, keeping apart what callers must keep apart.
///
/// - `answer`: records exist. `authenticated` is the AD bit from a *trusted* server
///   (always false for untrusted servers); `ttl` is the remaining lifetime in seconds
///   (the minimum over the answer RRset and any CNAMEs followed).
/// - `nxdomain`: the name does not exist (a proven denial; e.g. SMTP 550 for a sender domain).
/// - `nodata`: the name exists but has no records of the asked type (also a proven denial).
/// - `servfail`: the server could not answer (includes DNSSEC validation failure, CNAME
///   loops and chains longer than the configured bound). Temporary: SMTP 451.
/// - `timeout`: no usable response from any server in all tries. Temporary: SMTP 451.
/// - `refused`, `formerr`: the servers refused or did not understand the query. Temporary.
///
/// For DANE (RFC 7672 §2.2): only `answer(authenticated: true)` enables DANE; a denial, or an
/// unauthenticated answer from the trusted validating resolver (an insecure zone: bogus ones come
/// back as SERVFAIL), means no DANE; `servfail`/`timeout`/`refused`/`formerr` are lookup failures,
/// never "no TLSA".
public enum DNSResult<Value: Sendable>: Sendable {
    case answer(Value, authenticated: Bool, ttl: UInt32)
    case nxdomain(authenticated: Bool)
    case nodata(authenticated: Bool)
    case servfail
    case timeout
    case refused
    case formerr

    /// The value of an answer, nil otherwise.
    public var value: Value? {
        if case .answer(let v, _, _) = self { return v }
        return nil
    }

    /// True for answers, NXDOMAIN and NODATA that came with a trusted AD bit.
    public var isAuthenticated: Bool {
        switch self {
        case .answer(_, let a, _), .nxdomain(let a), .nodata(let a): return a
        default: return false
        }
    }

    /// NXDOMAIN or NODATA: the DNS has said there is nothing.
    public var isDenial: Bool {
        switch self {
        case .nxdomain, .nodata: return true
        default: return false
        }
    }

    /// SERVFAIL, timeout, REFUSED, FORMERR: try again later (4xx), never treat as "nothing there".
    public var isTemporaryFailure: Bool {
        switch self {
        case .servfail, .timeout, .refused, .formerr: return true
        default: return false
        }
    }

    /// Transforms an answer's value; every other case is carried over unchanged.
    public func map<T: Sendable>(_ transform: (Value) throws -> T) rethrows -> DNSResult<T> {
        switch self {
        case .answer(let v, let a, let t): return .answer(try transform(v), authenticated: a, ttl: t)
        case .nxdomain(let a): return .nxdomain(authenticated: a)
        case .nodata(let a): return .nodata(authenticated: a)
        case .servfail: return .servfail
        case .timeout: return .timeout
        case .refused: return .refused
        case .formerr: return .formerr
        }
    }
}

extension DNSResult: Equatable where Value: Equatable {}
extension DNSResult: Hashable where Value: Hashable {}

/// A lookup's raw outcome: the records of the asked type (owner = the canonical name after CNAMEs).
public typealias DNSOutcome = DNSResult<[DNSRecord]>

/// The answer to an MX lookup (RFC 5321 §5.1, RFC 7505).
public enum DNSMXAnswer: Hashable, Sendable {
    /// The domain publishes the null MX `0 .`: it accepts no mail (reject with 556/550).
    case nullMX
    /// Mail exchangers sorted by preference (ascending; ties keep the server's order).
    case exchangers([DNSMXData])
}
