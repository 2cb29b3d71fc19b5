/// Hand-written DNS wire format: ``DNSMessageParser`` and ``DNSMessageEncoder``.
///
/// Both are pure functions over byte arrays: no I/O, no shared state, safe from any thread.
/// The parser's contract is that *every* input either yields a message or throws a
/// ``DNSError``; it never traps and its running time is linear in the input size:
/// - compression pointers must point strictly backwards, and each pointer in a name must
///   point before the previous one, so pointer chains terminate (at most 127 jumps);
/// - label length bytes 0x40...0xBF (labels > 63, extended label types) are rejected;
/// - names are limited to 255 octets in uncompressed form;
/// - section counts are checked against the remaining bytes (each record needs at least
///   11 octets, each question 5) before anything is allocated;
/// - every RDATA is decoded within its RDLENGTH and must consume it exactly.
/// Input larger than 65535 octets is rejected up front.
public enum DNSMessageParser {
    /// Maximum message size accepted (the DNS/TCP limit).
    public static let maximumMessageSize = 65535

    /// Parses a complete message.
    ///
    /// - Parameter allowTruncatedSections: when true and the header has TC set, running out
    ///   of bytes in the answer/authority/additional sections ends parsing instead of throwing
    ///   (the header and question must still be intact). The UDP transport uses this to see
    ///   the TC bit of a response that a server cut short.
    public static func parse(_ bytes: [UInt8], allowTruncatedSections: Bool = false) throws -> DNSMessage {
        guard bytes.count <= maximumMessageSize else { throw DNSError(.messageTooLarge, "\(bytes.count) octets") }
        var r = Reader(bytes: bytes)
        let id = try r.u16()
        let flags = DNSHeaderFlags(rawValue: try r.u16())
        let qd = Int(try r.u16()), an = Int(try r.u16()), ns = Int(try r.u16()), ar = Int(try r.u16())
        // Cheap plausibility check before any allocation: a question needs >= 5 octets, a record >= 11.
        let minimum = qd * 5 + (an + ns + ar) * 11
        let truncOK = allowTruncatedSections && flags.truncated
        if !truncOK && minimum > r.remaining {
            throw DNSError(.badCounts, "counts \(qd)/\(an)/\(ns)/\(ar) need \(minimum) octets, \(r.remaining) left")
        }
        if qd * 5 > r.remaining { throw DNSError(.badCounts, "question count \(qd) too large") }
        var msg = DNSMessage(id: id, flags: flags)
        for _ in 0..<qd {
            let name = try r.readName()
            let type = DNSRecordType(rawValue: try r.u16())
            let cls = try r.u16()
            msg.questions.append(DNSQuestion(name: name, type: type, recordClass: cls))
        }
        do {
            for _ in 0..<an { msg.answers.append(try r.record()) }
            for _ in 0..<ns { msg.authorities.append(try r.record()) }
            for _ in 0..<ar {
                let rec = try r.record()
                if rec.type == .opt {
                    guard msg.edns == nil, rec.name.isRoot else { throw DNSError(.badCounts, "second or misplaced OPT") }
                    msg.edns = DNSEDNS(udpPayloadSize: UInt16(rec.recordClass),
                                       extendedRCode: UInt8(rec.ttl >> 24),
                                       version: UInt8((rec.ttl >> 16) & 0xFF),
                                       dnssecOK: rec.ttl & 0x8000 != 0)
                } else {
                    msg.additionals.append(rec)
                }
            }
        } catch let e as DNSError where truncOK && e.code == .truncated {
            return msg
        }
        guard r.remaining == 0 else { throw DNSError(.trailingBytes, "\(r.remaining) octets after the last record") }
        return msg
    }

    /// Bounds-checked cursor. Every read checks before it touches the array.
    struct Reader {
        let bytes: [UInt8]
        var pos = 0
        init(bytes: [UInt8]) { self.bytes = bytes }
        var remaining: Int { bytes.count - pos }

        mutating func u8() throws -> UInt8 {
            guard pos < bytes.count else { throw DNSError(.truncated, "at \(pos)") }
            defer { pos += 1 }
            return bytes[pos]
        }
        mutating func u16() throws -> UInt16 {
            guard pos + 2 <= bytes.count else { throw DNSError(.truncated, "at \(pos)") }
            defer { pos += 2 }
            return UInt16(bytes[pos]) << 8 | UInt16(bytes[pos + 1])
        }
        mutating func u32() throws -> UInt32 {
            guard pos + 4 <= bytes.count else { throw DNSError(.truncated, "at \(pos)") }
            defer { pos += 4 }
            return UInt32(bytes[pos]) << 24 | UInt32(bytes[pos + 1]) << 16 | UInt32(bytes[pos + 2]) << 8 | UInt32(bytes[pos + 3])
        }
        mutating func take(_ n: Int) throws -> [UInt8] {
            guard n >= 0, pos + n <= bytes.count else { throw DNSError(.truncated, "need \(n) at \(pos)") }
            defer { pos += n }
            return Array(bytes[pos..<(pos + n)])
        }

        /// Reads a possibly compressed name; leaves `pos` after the name's in-place part.
        mutating func readName() throws -> DNSName {
            var wire: [UInt8] = []
            wire.reserveCapacity(32)
            var p = pos
            var resume: Int? = nil
            var limit = pos           // pointer targets must be < limit; decreases with every jump
            var jumps = 0
            while true {
                guard p < bytes.count else { throw DNSError(.truncated, "name at \(p)") }
                let len = Int(bytes[p])
                switch len & 0xC0 {
                case 0x00:
                    if len == 0 {
                        wire.append(0)
                        guard wire.count <= DNSName.maximumWireLength else { throw DNSError(.nameTooLong) }
                        pos = resume ?? (p + 1)
                        return DNSName(uncheckedWire: wire)
                    }
                    guard p + 1 + len <= bytes.count else { throw DNSError(.truncated, "label at \(p)") }
                    guard wire.count + 1 + len + 1 <= DNSName.maximumWireLength else { throw DNSError(.nameTooLong) }
                    wire.append(UInt8(len))
                    wire.append(contentsOf: bytes[(p + 1)..<(p + 1 + len)])
                    p += 1 + len
                case 0xC0:
                    guard p + 1 < bytes.count else { throw DNSError(.truncated, "pointer at \(p)") }
                    let target = (len & 0x3F) << 8 | Int(bytes[p + 1])
                    guard target < bytes.count else { throw DNSError(.pointerOutOfRange, "\(target) at \(p)") }
                    guard target < limit, target < p else { throw DNSError(.pointerNotBackward, "\(target) at \(p)") }
                    jumps += 1
                    guard jumps <= 127 else { throw DNSError(.tooManyPointers) }
                    if resume == nil { resume = p + 2 }
                    limit = target
                    p = target
                default:
                    throw DNSError(.badLabel, "label byte 0x\(String(len, radix: 16)) at \(p)")
                }
            }
        }

        mutating func record() throws -> DNSRecord {
            let name = try readName()
            let type = DNSRecordType(rawValue: try u16())
            let cls = try u16()
            let ttl = try u32()
            let rdlen = Int(try u16())
            guard pos + rdlen <= bytes.count else { throw DNSError(.truncated, "RDATA of \(rdlen) at \(pos)") }
            let end = pos + rdlen
            let data: DNSRData
            switch type {
            case .a:
                guard rdlen == 4 else { throw DNSError(.badRData, "A length \(rdlen)") }
                data = .a(DNSIPv4Address(value: try u32()))
            case .aaaa:
                guard rdlen == 16 else { throw DNSError(.badRData, "AAAA length \(rdlen)") }
                data = .aaaa(DNSIPv6Address(octets: try take(16))!)
            case .ns: data = .ns(try readName())
            case .cname: data = .cname(try readName())
            case .ptr: data = .ptr(try readName())
            case .mx:
                let pref = try u16()
                data = .mx(DNSMXData(preference: pref, exchange: try readName()))
            case .txt:
                var strings: [[UInt8]] = []
                while pos < end {
                    let n = Int(try u8())
                    guard pos + n <= end else { throw DNSError(.badRData, "TXT string overruns RDATA") }
                    strings.append(try take(n))
                }
                data = .txt(DNSTXTData(strings: strings))
            case .soa:
                let m = try readName(), rn = try readName()
                data = .soa(DNSSOAData(mname: m, rname: rn, serial: try u32(), refresh: try u32(),
                                       retry: try u32(), expire: try u32(), minimum: try u32()))
            case .tlsa:
                guard rdlen >= 3 else { throw DNSError(.badRData, "TLSA length \(rdlen)") }
                data = .tlsa(DNSTLSAData(usage: try u8(), selector: try u8(), matchingType: try u8(), data: try take(rdlen - 3)))
            default:
                data = .unknown(try take(rdlen))
            }
            guard pos == end else { throw DNSError(.badRData, "\(type) RDATA length \(rdlen) but used \(rdlen + pos - end)") }
            return DNSRecord(name: name, type: type, recordClass: cls, ttl: ttl, data: data)
        }
    }
}

/// Encodes a ``DNSMessage`` to wire form, with name compression (RFC 1035 §4.1.4) for owner
/// names and the names inside NS/CNAME/PTR/MX/SOA data. Output is at most 65535 octets.
/// Used by the resolver for queries and by tests and benchmarks to build responses.
public enum DNSMessageEncoder {
    public static func encode(_ msg: DNSMessage, compress: Bool = true) throws -> [UInt8] {
        var w = Writer(compress: compress)
        w.u16(msg.id)
        w.u16(msg.flags.rawValue)
        w.u16(UInt16(truncatingIfNeeded: msg.questions.count))
        w.u16(UInt16(truncatingIfNeeded: msg.answers.count))
        w.u16(UInt16(truncatingIfNeeded: msg.authorities.count))
        w.u16(UInt16(truncatingIfNeeded: msg.additionals.count + (msg.edns == nil ? 0 : 1)))
        for q in msg.questions {
            w.name(q.name); w.u16(q.type.rawValue); w.u16(q.recordClass)
        }
        for r in msg.answers { try w.record(r) }
        for r in msg.authorities { try w.record(r) }
        for r in msg.additionals { try w.record(r) }
        if let e = msg.edns {
            w.bytes.append(0)
            w.u16(DNSRecordType.opt.rawValue)
            w.u16(e.udpPayloadSize)
            w.u32(UInt32(e.extendedRCode) << 24 | UInt32(e.version) << 16 | (e.dnssecOK ? 0x8000 : 0))
            w.u16(0)
        }
        guard w.bytes.count <= DNSMessageParser.maximumMessageSize else { throw DNSError(.messageTooLarge) }
        return w.bytes
    }

    struct Writer {
        var bytes: [UInt8] = []
        let compress: Bool
        /// Offsets of name suffixes already written (lower-cased wire form → offset).
        var offsets: [[UInt8]: Int] = [:]
        init(compress: Bool) { self.compress = compress; bytes.reserveCapacity(512) }

        mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xFF)) }
        mutating func u32(_ v: UInt32) { u16(UInt16(v >> 16)); u16(UInt16(v & 0xFFFF)) }

        mutating func name(_ n: DNSName) {
            let wire = n.wire
            var i = 0
            while i < wire.count, wire[i] != 0 {
                if compress {
                    let suffix = wire[i...].map(asciiLower)
                    if let off = offsets[suffix] {
                        u16(0xC000 | UInt16(off))
                        return
                    }
                    if bytes.count < 0x3FFF { offsets[suffix] = bytes.count }
                }
                let len = Int(wire[i])
                bytes.append(contentsOf: wire[i...(i + len)])
                i += 1 + len
            }
            bytes.append(0)
        }

        mutating func record(_ r: DNSRecord) throws {
            name(r.name)
            u16(r.type.rawValue); u16(r.recordClass); u32(r.ttl)
            let lenAt = bytes.count
            u16(0)
            switch r.data {
            case .a(let v4): u32(v4.value)
            case .aaaa(let v6): bytes.append(contentsOf: v6.octets)
            case .ns(let n), .cname(let n), .ptr(let n): name(n)
            case .mx(let mx): u16(mx.preference); name(mx.exchange)
            case .txt(let t):
                for s in t.strings {
                    guard s.count <= 255 else { throw DNSError(.badRData, "TXT string > 255") }
                    bytes.append(UInt8(s.count)); bytes.append(contentsOf: s)
                }
            case .soa(let s):
                name(s.mname); name(s.rname)
                u32(s.serial); u32(s.refresh); u32(s.retry); u32(s.expire); u32(s.minimum)
            case .tlsa(let t):
                bytes.append(t.usage); bytes.append(t.selector); bytes.append(t.matchingType)
                bytes.append(contentsOf: t.data)
            case .unknown(let raw): bytes.append(contentsOf: raw)
            }
            let rdlen = bytes.count - lenAt - 2
            guard rdlen <= 0xFFFF else { throw DNSError(.messageTooLarge, "RDATA > 65535") }
            bytes[lenAt] = UInt8(rdlen >> 8); bytes[lenAt + 1] = UInt8(rdlen & 0xFF)
        }
    }
}
