internal import Foundation

/// Thrown by `withTimeout` when the operation did not finish in time.
public struct TimeoutError: Error, CustomStringConvertible {
    public var description: String
}

/// Resumes a continuation at most once (first result wins).
private final class FirstResult<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, any Error>?

    init(_ c: CheckedContinuation<T, any Error>) { continuation = c }

    /// Returns true if this call resumed the continuation.
    @discardableResult
    func resume(_ result: Result<T, any Error>) -> Bool {
        lock.lock()
        let c = continuation
        continuation = nil
        lock.unlock()
        c?.resume(with: result)
        return c != nil
    }
}

/// Runs `operation` and fails with `TimeoutError` once `limit` has passed (the operation is
/// then cancelled). Returns at the deadline even if the operation ignores cancellation or is
/// stuck in a blocking call, so a regression makes a test fail instead of hang.
public func withTimeout<T: Sendable>(
    _ limit: Duration, _ what: String = "operation",
    _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
        let first = FirstResult(cont)
        let work = Task {
            do { first.resume(.success(try await operation())) } catch { first.resume(.failure(error)) }
        }
        Task {
            try? await Task.sleep(for: limit)
            if first.resume(.failure(TimeoutError(description: "\(what) did not finish within \(limit)"))) {
                work.cancel()
            }
        }
    }
}

/// Measures how long `operation` takes.
public func timed<T>(_ operation: () async throws -> T) async rethrows -> (T, Duration) {
    let start = ContinuousClock.now
    let value = try await operation()
    return (value, ContinuousClock.now - start)
}
