/// DKIM canonicalization algorithms (RFC 6376 §3.4). Pure functions over octets.
public enum DKIMCanonicalization: String, Sendable, Hashable, CaseIterable {
    case simple
    case relaxed

    static let cr: UInt8 = 0x0D, lf: UInt8 = 0x0A, sp: UInt8 = 0x20, tab: UInt8 = 0x09, colon: UInt8 = 0x3A

    @inline(__always) static func isWSP(_ b: UInt8) -> Bool { b == sp || b == tab }

    /// One header field (its raw octets, folded lines and the final CRLF included) in this
    /// canonical form, with a terminating CRLF.
    public func canonicalizeHeader(_ raw: ArraySlice<UInt8>) -> [UInt8] {
        switch self {
        case .simple:
            var out = Array(raw)
            if !out.ends(withCRLF: ()) { out += [Self.cr, Self.lf] }
            return out
        case .relaxed:
            return Self.relaxedHeader(raw, terminate: true)
        }
    }

    /// RFC 6376 §3.4.2: lowercase the name, unfold, collapse WSP runs, trim WSP at the end of the
    /// value and around the colon.
    static func relaxedHeader(_ raw: ArraySlice<UInt8>, terminate: Bool) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        guard let colon = raw.firstIndex(of: Self.colon) else {
            // Not a header field; canonicalize it as a value without name.
            return Array(raw)
        }
        for b in raw[raw.startIndex..<colon] where !isWSP(b) && b != cr && b != lf {
            out.append(b >= 0x41 && b <= 0x5A ? b | 0x20 : b)
        }
        out.append(Self.colon)
        var pendingSpace = false
        var started = false
        for b in raw[(colon + 1)...] {
            if b == cr || b == lf { continue }          // unfold
            if isWSP(b) { pendingSpace = true; continue }
            if pendingSpace && started { out.append(sp) }
            pendingSpace = false
            started = true
            out.append(b)
        }
        if terminate { out += [cr, lf] }
        return out
    }

    /// The whole body in this canonical form (RFC 6376 §3.4.3, §3.4.4).
    public func canonicalizeBody(_ body: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(body.count + 2)
        switch self {
        case .simple:
            out.append(contentsOf: body)
            if !out.isEmpty && !out.ends(withCRLF: ()) { out += [Self.cr, Self.lf] }
            while out.count >= 4 && out[out.count - 4] == Self.cr && out[out.count - 3] == Self.lf
                    && out[out.count - 2] == Self.cr && out[out.count - 1] == Self.lf {
                out.removeLast(2)
            }
            if out.count == 2 && out[0] == Self.cr && out[1] == Self.lf { return out }
            if out.isEmpty { return [Self.cr, Self.lf] }
            return out
        case .relaxed:
            var i = body.startIndex
            let end = body.endIndex
            var pendingSpace = false
            while i < end {
                let b = body[i]
                if b == Self.cr && i + 1 < end && body[i + 1] == Self.lf {
                    // End of line: trailing WSP is dropped.
                    pendingSpace = false
                    out += [Self.cr, Self.lf]
                    i += 2
                    continue
                }
                if Self.isWSP(b) {
                    pendingSpace = true
                } else {
                    if pendingSpace { out.append(Self.sp); pendingSpace = false }
                    out.append(b)
                }
                i += 1
            }
            // A last line without CRLF: its trailing WSP is dropped; a CRLF is added below.
            if !out.isEmpty && !out.ends(withCRLF: ()) { out += [Self.cr, Self.lf] }
            while out.count >= 2 && out[out.count - 2] == Self.cr && out[out.count - 1] == Self.lf
                    && (out.count == 2 || (out.count >= 4 && out[out.count - 4] == Self.cr && out[out.count - 3] == Self.lf)) {
                out.removeLast(2)
            }
            return out
        }
    }
}

extension Array where Element == UInt8 {
    func ends(withCRLF: Void) -> Bool {
        count >= 2 && self[count - 2] == 0x0D && self[count - 1] == 0x0A
    }
}
