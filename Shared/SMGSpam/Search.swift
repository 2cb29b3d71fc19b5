import CMemmem

/// Substring search over UTF-8 (`memmem`): the one byte search
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

    /// glibc's `memmem`: linear however often the needle's first byte occurs, and vectorised
    /// for the short phrases the rules look for. The `memchr` + `memcmp` loop before it made two
    /// libc calls at every occurrence of the needle's first byte (on smtp-source's bodies of
    /// `XXX…` lines against GTUBE's leading `X`, 13 % of the classifier's CPU); a Horspool loop in
    /// Swift fixed that but was slower on the rules' many short phrases.
    static func firstIndex(of needle: UnsafeBufferPointer<UInt8>, in haystack: UnsafeBufferPointer<UInt8>) -> Int? {
        guard let n = needle.baseAddress, needle.count > 0 else { return 0 }
        guard let h = haystack.baseAddress, haystack.count >= needle.count else { return nil }
        guard let hit = memmem(h, haystack.count, n, needle.count) else { return nil }
        return UnsafePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self)) - h
    }
}
