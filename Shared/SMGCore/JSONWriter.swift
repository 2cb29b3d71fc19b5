/// Writes JSON by hand, byte for byte as the gateway's `JSONEncoder` configuration writes it
/// (`Event.encoder`: keys sorted by their Unicode order, `/` not escaped, control characters as
/// `\b \t \n \f \r` or `\u00xx`, doubles in Swift's shortest form without a trailing `.0`).
/// Every stage writes several events per message; Foundation's encoder cost more than the rest of
/// a stage's own work. `EventTests` checks the two agree.
struct JSONWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func string(_ text: String) {
        bytes.append(34)
        var text = text
        text.withUTF8 { utf8 in
            var run = 0
            for i in 0..<utf8.count {
                let b = utf8[i]
                guard b < 0x20 || b == 34 || b == 92 else { continue }
                if i > run { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run..<i])) }
                run = i + 1
                bytes.append(92)
                switch b {
                case 34: bytes.append(34)
                case 92: bytes.append(92)
                case 8: bytes.append(98)     // b
                case 9: bytes.append(116)    // t
                case 10: bytes.append(110)   // n
                case 12: bytes.append(102)   // f
                case 13: bytes.append(114)   // r
                default:
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    bytes += [117, 48, 48, hex[Int(b >> 4)], hex[Int(b & 15)]]   // u00xx
                }
            }
            if utf8.count > run { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run...])) }
        }
        bytes.append(34)
    }

    mutating func value(_ value: JSONValue) {
        switch value {
        case .string(let s): string(s)
        case .int(let i): bytes.append(contentsOf: String(i).utf8)
        case .double(let d):
            guard d.isFinite else { raw("null"); return }
            var text = d.description
            if text.hasSuffix(".0") { text.removeLast(2) }
            bytes.append(contentsOf: text.utf8)
        case .bool(let b): b ? raw("true") : raw("false")
        case .null: raw("null")
        case .array(let items):
            bytes.append(91)
            for (n, item) in items.enumerated() {
                if n > 0 { bytes.append(44) }
                self.value(item)
            }
            bytes.append(93)
        case .object(let fields): object(fields)
        }
    }

    mutating func object(_ fields: [String: JSONValue]) {
        bytes.append(123)
        for (n, key) in fields.keys.sorted().enumerated() {
            if n > 0 { bytes.append(44) }
            string(key)
            bytes.append(58)
            value(fields[key]!)
        }
        bytes.append(125)
    }
}
