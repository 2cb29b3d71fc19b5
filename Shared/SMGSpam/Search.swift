#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Substring search over UTF-8 (`memchr` for the first byte, then `memcmp`): the one byte search
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

    static func firstIndex(of needle: UnsafeBufferPointer<UInt8>, in haystack: UnsafeBufferPointer<UInt8>) -> Int? {
        guard let n = needle.baseAddress, needle.count > 0 else { return 0 }
        guard let h = haystack.baseAddress, haystack.count >= needle.count else { return nil }
        let first = Int32(n[0])
        let last = haystack.count - needle.count
        var offset = 0
        while offset <= last {
            guard let hit = memchr(h + offset, first, last - offset + 1) else { return nil }
            let at = UnsafePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self)) - h
            if memcmp(h + at, n, needle.count) == 0 { return at }
            offset = at + 1
        }
        return nil
    }
}
