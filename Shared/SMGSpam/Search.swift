#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Substring search over UTF-8 (Horspool): the one byte search
/// of the engine. `String.contains(String)` goes through Foundation's NSString search when
/// Foundation is linked, which was over half of the engine's time.
enum Search {
    static func contains(_ haystack: String, _ needle: StaticString) -> Bool {
        var h = haystack
        return h.withUTF8 { hb in needle.withUTF8Buffer { nb in firstIndex(of: nb, in: hb) != nil } }
    }

    static func containsAny(_ haystack: String, _ needles: [StaticString]) -> Bool {
        needles.contains { contains(haystack, $0) }
    }

    static func firstIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        haystack.withUnsafeBufferPointer { hb in needle.withUnsafeBufferPointer { nb in firstIndex(of: nb, in: hb) } }
    }

    /// Boyer–Moore–Horspool: compares from the needle's end and skips by the table, so a long
    /// needle costs a fraction of a pass. The `memchr` + `memcmp` loop before it made two libc calls
    /// at every occurrence of the needle's first byte: on smtp-source's bodies of `XXX…` lines
    /// against GTUBE's leading `X`, 13 % of the classifier's CPU.
    static func firstIndex(of needle: UnsafeBufferPointer<UInt8>, in haystack: UnsafeBufferPointer<UInt8>) -> Int? {
        let m = needle.count, n = haystack.count
        guard m > 0 else { return 0 }
        guard n >= m else { return nil }
        if m == 1 {
            guard let h = haystack.baseAddress, let hit = memchr(h, Int32(needle[0]), n) else { return nil }
            return UnsafePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self)) - h
        }
        return withUnsafeTemporaryAllocation(of: Int.self, capacity: 256) { skip in
            skip.initialize(repeating: m)
            for k in 0..<(m - 1) { skip[Int(needle[k])] = m - 1 - k }
            let lastByte = needle[m - 1]
            var at = 0
            while at <= n - m {
                let tail = haystack[at + m - 1]
                if tail == lastByte {
                    var k = m - 2
                    while k >= 0 && haystack[at + k] == needle[k] { k -= 1 }
                    if k < 0 { return at }
                }
                at += skip[Int(tail)]
            }
            return nil
        }
    }
}
