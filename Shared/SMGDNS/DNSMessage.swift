/// Plain value types of the DNS wire format (RFC 1035, 6891, 6698, 7505).
/// All are immutable-by-value and `Sendable`; none owns any resource.

/// A resource record type (RFC 1035 §3.2.2 and later).
public struct DNSRecordType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let a = DNSRecordType(rawValue: 1)
    public static let ns = DNSRecordType(rawValue: 2)
    public static let cname = DNSRecordType(rawValue: 5)
    public static let soa = DNSRecordType(rawValue: 6)
    public static let ptr = DNSRecordType(rawValue: 12)
    public static let mx = DNSRecordType(rawValue: 15)
    public static let txt = DNSRecordType(rawValue: 16)
    public static let aaaa = DNSRecordType(rawValue: 28)
    public static let opt = DNSRecordType(rawValue: 41)
    public static let ds = DNSRecordType(rawValue: 43)
    public static let rrsig = DNSRecordType(rawValue: 46)
    public static let nsec = DNSRecordType(rawValue: 47)
    public static let dnskey = DNSRecordType(rawValue: 48)
    public static let tlsa = DNSRecordType(rawValue: 52)

    public var description: String {
        switch rawValue {
        case 1: "A"; case 2: "NS"; case 5: "CNAME"; case 6: "SOA"; case 12: "PTR"; case 15: "MX"
        case 16: "TXT"; case 28: "AAAA"; case 41: "OPT"; case 43: "DS"; case 46: "RRSIG"
        case 47: "NSEC"; case 48: "DNSKEY"; case 52: "TLSA"
        default: "TYPE\(rawValue)"
        }
    }
}

/// Class IN is the only one the resolver asks for.
public enum DNSClass {
    public static let internet: UInt16 = 1
}

/// A response code, including EDNS extended codes (RFC 6891).
public struct DNSResponseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let noError = DNSResponseCode(rawValue: 0)
    public static let formErr = DNSResponseCode(rawValue: 1)
    public static let servFail = DNSResponseCode(rawValue: 2)
    public static let nxDomain = DNSResponseCode(rawValue: 3)
    public static let notImp = DNSResponseCode(rawValue: 4)
    public static let refused = DNSResponseCode(rawValue: 5)
    public static let badVers = DNSResponseCode(rawValue: 16)
    public var description: String {
        switch rawValue {
        case 0: "NOERROR"; case 1: "FORMERR"; case 2: "SERVFAIL"; case 3: "NXDOMAIN"
        case 4: "NOTIMP"; case 5: "REFUSED"; case 16: "BADVERS"
        default: "RCODE\(rawValue)"
        }
    }
}

/// The 16 flag bits of the header (QR, Opcode, AA, TC, RD, RA, Z, AD, CD, RCODE).
public struct DNSHeaderFlags: Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    private func bit(_ n: Int) -> Bool { rawValue & (1 << n) != 0 }
    private mutating func set(_ n: Int, _ v: Bool) {
        if v { rawValue |= (1 << n) } else { rawValue &= ~(1 << n) }
    }
    public var isResponse: Bool { get { bit(15) } set { set(15, newValue) } }
    public var opcode: UInt8 {
        get { UInt8((rawValue >> 11) & 0xF) }
        set { rawValue = (rawValue & ~(0xF << 11)) | (UInt16(newValue & 0xF) << 11) }
    }
    public var authoritative: Bool { get { bit(10) } set { set(10, newValue) } }
    public var truncated: Bool { get { bit(9) } set { set(9, newValue) } }
    public var recursionDesired: Bool { get { bit(8) } set { set(8, newValue) } }
    public var recursionAvailable: Bool { get { bit(7) } set { set(7, newValue) } }
    /// AD: authentic data (RFC 4035 §3.2.3, RFC 6840 §5.7).
    public var authenticData: Bool { get { bit(5) } set { set(5, newValue) } }
    /// CD: checking disabled.
    public var checkingDisabled: Bool { get { bit(4) } set { set(4, newValue) } }
    /// The low 4 bits of the response code (see ``DNSMessage/responseCode`` for the full code).
    public var rcodeLow: UInt8 {
        get { UInt8(rawValue & 0xF) }
        set { rawValue = (rawValue & ~0xF) | UInt16(newValue & 0xF) }
    }
}

/// A question section entry.
public struct DNSQuestion: Hashable, Sendable {
    public var name: DNSName
    public var type: DNSRecordType
    public var recordClass: UInt16
    public init(name: DNSName, type: DNSRecordType, recordClass: UInt16 = DNSClass.internet) {
        self.name = name; self.type = type; self.recordClass = recordClass
    }
}

/// MX data (RFC 1035 §3.3.9). A null MX (RFC 7505) is preference 0 with exchange ".".
public struct DNSMXData: Hashable, Sendable {
    public var preference: UInt16
    public var exchange: DNSName
    public init(preference: UInt16, exchange: DNSName) { self.preference = preference; self.exchange = exchange }
    /// True for the RFC 7505 null MX `0 .`.
    public var isNullMX: Bool { preference == 0 && exchange.isRoot }
}

/// SOA data (RFC 1035 §3.3.13). `minimum` bounds negative caching (RFC 2308 §5).
public struct DNSSOAData: Hashable, Sendable {
    public var mname: DNSName
    public var rname: DNSName
    public var serial: UInt32
    public var refresh: UInt32
    public var retry: UInt32
    public var expire: UInt32
    public var minimum: UInt32
    public init(mname: DNSName, rname: DNSName, serial: UInt32, refresh: UInt32, retry: UInt32, expire: UInt32, minimum: UInt32) {
        self.mname = mname; self.rname = rname; self.serial = serial; self.refresh = refresh
        self.retry = retry; self.expire = expire; self.minimum = minimum
    }
}

/// TLSA data (RFC 6698 §2.1). `data` is at most 65532 octets (RDLENGTH - 3).
public struct DNSTLSAData: Hashable, Sendable {
    public var usage: UInt8
    public var selector: UInt8
    public var matchingType: UInt8
    public var data: [UInt8]
    public init(usage: UInt8, selector: UInt8, matchingType: UInt8, data: [UInt8]) {
        self.usage = usage; self.selector = selector; self.matchingType = matchingType; self.data = data
    }
    /// Lower-case hex of `data`.
    public var hexData: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8](); out.reserveCapacity(data.count * 2)
        for b in data { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xF)]) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// TXT data: one or more character-strings of at most 255 octets each (RFC 1035 §3.3.14).
public struct DNSTXTData: Hashable, Sendable {
    public var strings: [[UInt8]]
    public init(strings: [[UInt8]]) { self.strings = strings }
    public init(_ strings: [String]) { self.strings = strings.map { Array($0.utf8) } }
    /// The strings concatenated without separator (how SPF, DKIM, MTA-STS and DNSBL TXT are read),
    /// decoded as UTF-8 with replacement of invalid sequences.
    public var joined: String { String(decoding: strings.joined(), as: UTF8.self) }
}

/// Record data, decoded for the types the gateway uses; everything else is kept as raw octets.
public enum DNSRData: Hashable, Sendable {
    case a(DNSIPv4Address)
    case aaaa(DNSIPv6Address)
    case ns(DNSName)
    case cname(DNSName)
    case ptr(DNSName)
    case mx(DNSMXData)
    case txt(DNSTXTData)
    case soa(DNSSOAData)
    case tlsa(DNSTLSAData)
    /// Any other type (RRSIG, NSEC, DS, ...), as the raw RDATA octets exactly as received
    /// (RFC 3597: types newer than RFC 1035 never use compression inside RDATA).
    case unknown([UInt8])
}

/// One resource record.
public struct DNSRecord: Hashable, Sendable {
    public var name: DNSName
    public var type: DNSRecordType
    public var recordClass: UInt16
    public var ttl: UInt32
    public var data: DNSRData
    public init(name: DNSName, type: DNSRecordType, recordClass: UInt16 = DNSClass.internet, ttl: UInt32, data: DNSRData) {
        self.name = name; self.type = type; self.recordClass = recordClass; self.ttl = ttl; self.data = data
    }
}

/// EDNS(0) information from the OPT pseudo-record (RFC 6891).
public struct DNSEDNS: Hashable, Sendable {
    /// Requestor's (or responder's) UDP payload size.
    public var udpPayloadSize: UInt16
    /// Upper 8 bits of the extended RCODE.
    public var extendedRCode: UInt8
    public var version: UInt8
    /// The DO bit (RFC 3225).
    public var dnssecOK: Bool
    public init(udpPayloadSize: UInt16 = 1232, extendedRCode: UInt8 = 0, version: UInt8 = 0, dnssecOK: Bool = true) {
        self.udpPayloadSize = udpPayloadSize; self.extendedRCode = extendedRCode
        self.version = version; self.dnssecOK = dnssecOK
    }
}

/// A whole DNS message. The OPT record is not kept in `additionals`; it is decoded into `edns`.
public struct DNSMessage: Hashable, Sendable {
    public var id: UInt16
    public var flags: DNSHeaderFlags
    public var questions: [DNSQuestion]
    public var answers: [DNSRecord]
    public var authorities: [DNSRecord]
    public var additionals: [DNSRecord]
    public var edns: DNSEDNS?

    public init(id: UInt16, flags: DNSHeaderFlags, questions: [DNSQuestion] = [], answers: [DNSRecord] = [],
                authorities: [DNSRecord] = [], additionals: [DNSRecord] = [], edns: DNSEDNS? = nil) {
        self.id = id; self.flags = flags; self.questions = questions; self.answers = answers
        self.authorities = authorities; self.additionals = additionals; self.edns = edns
    }

    /// The full response code: header RCODE plus the EDNS extended bits.
    public var responseCode: DNSResponseCode {
        DNSResponseCode(rawValue: UInt16(edns?.extendedRCode ?? 0) << 4 | UInt16(flags.rcodeLow))
    }

    /// A recursive query for `name`/`type` with EDNS (DO bit) and the AD bit set, as the
    /// resolver sends it (RFC 6840 §5.7: AD in a query asks for the AD bit in the answer).
    public static func query(id: UInt16, name: DNSName, type: DNSRecordType, edns: DNSEDNS? = DNSEDNS()) -> DNSMessage {
        var f = DNSHeaderFlags(rawValue: 0)
        f.recursionDesired = true
        f.authenticData = true
        return DNSMessage(id: id, flags: f, questions: [DNSQuestion(name: name, type: type)], edns: edns)
    }
}
