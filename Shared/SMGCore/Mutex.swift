import Foundation

/// A small lock-protected box, for state shared between threads (the ULID generator, counters).
/// `Synchronization.Mutex` needs newer platform versions on Darwin; this one works everywhere.
public final class Mutex<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    public init(_ value: Value) { self.value = value }

    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
