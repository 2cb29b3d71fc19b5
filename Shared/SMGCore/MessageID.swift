public import Foundation
import SMGSync

/// A message's identity: a ULID (48-bit millisecond time + 80 random bits, Crockford base32).
///
/// ULIDs sort by creation time as plain strings, so Redis keys, log lines and event streams
/// list messages in the order they were accepted. Within one process, ids made in the same
/// millisecond still increase (the random part is incremented), so ordering holds per producer.
public struct MessageID: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String

    /// Accepts a canonical 26-character ULID (case-insensitive); returns nil for anything else.
    public init?(_ text: String) {
        let upper = text.uppercased()
        guard upper.utf8.count == 26, upper.utf8.allSatisfy({ MessageID.decodeTable[Int($0)] != 0xFF }),
              let first = upper.utf8.first, MessageID.decodeTable[Int(first)] <= 7
        else { return nil }
        self.rawValue = upper
    }

    private init(unchecked: String) { self.rawValue = unchecked }

    public var description: String { rawValue }
    public static func < (lhs: MessageID, rhs: MessageID) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = MessageID(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "not a ULID: \(text)"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }

    /// Milliseconds since the Unix epoch at which this id was made.
    public var timestampMilliseconds: UInt64 {
        var value: UInt64 = 0
        for byte in rawValue.utf8.prefix(10) { value = value << 5 | UInt64(MessageID.decodeTable[Int(byte)]) }
        return value
    }

    /// Makes a new id, monotonic within this process.
    public static func make(now: Date = Date()) -> MessageID {
        generator.withLock { $0.next(milliseconds: UInt64(max(0, now.timeIntervalSince1970 * 1000))) }
    }

    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)
    static let decodeTable: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, char) in alphabet.enumerated() { table[Int(char)] = UInt8(index) }
        return table
    }()

    private static let generator = Locked(ULIDGenerator())

    struct ULIDGenerator {
        var lastMilliseconds: UInt64 = 0
        var high: UInt16 = 0     // top 16 of the 80 random bits
        var low: UInt64 = 0      // bottom 64

        mutating func next(milliseconds: UInt64) -> MessageID {
            if milliseconds > lastMilliseconds {
                lastMilliseconds = milliseconds
                var rng = SystemRandomNumberGenerator()
                high = UInt16.random(in: 0...UInt16.max, using: &rng)
                low = UInt64.random(in: 0...UInt64.max, using: &rng)
            } else {
                // Same (or earlier: clock stepped back) millisecond: keep the time, bump the random part.
                let (sum, overflow) = low.addingReportingOverflow(1)
                low = sum
                if overflow { high &+= 1 }
            }
            return MessageID(unchecked: encode(time: lastMilliseconds, high: high, low: low))
        }

        func encode(time: UInt64, high: UInt16, low: UInt64) -> String {
            var chars = [UInt8](repeating: 0, count: 26)
            var t = time
            for i in stride(from: 9, through: 0, by: -1) {
                chars[i] = MessageID.alphabet[Int(t & 31)]
                t >>= 5
            }
            // 80 random bits → 16 characters.
            var lo = low
            var hi = UInt64(high)
            for i in stride(from: 25, through: 10, by: -1) {
                chars[i] = MessageID.alphabet[Int(lo & 31)]
                lo = (lo >> 5) | ((hi & 31) << 59)
                hi >>= 5
            }
            return String(decoding: chars, as: UTF8.self)
        }
    }
}
