/// Lower-case hex of bytes (digests, fingerprints). Written out by hand: `String(format: "%02x")`
/// per byte went through Foundation's formatter and was 7 % of ingress's CPU per message.
public enum Hex {
    public static func lower<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let digits: StaticString = "0123456789abcdef"
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        digits.withUTF8Buffer { d in
            for b in bytes {
                out.append(d[Int(b >> 4)])
                out.append(d[Int(b & 0xF)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
