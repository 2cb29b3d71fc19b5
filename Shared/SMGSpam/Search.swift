#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Substring search over UTF-8 (`memchr` for the first byte, then `memcmp`). `String.contains(String)` goes through Foundation's
/// NSString search when Foundation is linked, which was over half of the engine's time.
enum Search {
    static func contains(_ haystack: String, _ needle: StaticString) -> Bool {
        var h = haystack
        return h.withUTF8 { hb in
            needle.withUTF8Buffer { nb in
                guard nb.count > 0 else { return true }
                guard hb.count >= nb.count, let hp = hb.baseAddress, let np = nb.baseAddress else { return false }
                return find(hp, hb.count, np, nb.count)
            }
        }
    }

    static func find(_ h: UnsafePointer<UInt8>, _ hn: Int, _ n: UnsafePointer<UInt8>, _ nn: Int) -> Bool {
        let first = Int32(n[0])
        var offset = 0
        let last = hn - nn
        while offset <= last {
            guard let hit = memchr(h + offset, first, last - offset + 1) else { return false }
            let at = UnsafePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self))
            if memcmp(at, n, nn) == 0 { return true }
            offset = at - h + 1
        }
        return false
    }

    static func containsAny(_ haystack: String, _ needles: [StaticString]) -> Bool {
        needles.contains { contains(haystack, $0) }
    }
}
