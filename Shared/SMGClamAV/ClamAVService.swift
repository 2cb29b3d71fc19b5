public import Logging
import SMGSync
import Foundation

/// A reloadable ClamAV engine and the threads that scan with it.
///
/// - Scans run on a dedicated concurrent `DispatchQueue` (never on Swift's cooperative pool),
///   bridged with continuations; a scan that outlives `timeout` fails with `.timeout` (its
///   thread finishes in the background and its result is dropped).
/// - At most `slots` scans run at once. A scan takes a slot before it starts and gives it back
///   only when libclamav really returned — not when the caller stopped waiting — so retries of
///   timed-out messages cannot pile up scans that still run (and their threads and memory).
///   A scan that finds no free slot waits for one, first come first served, for at most
///   `timeout`; then it fails with `.busy` (temporary: the message is retried later).
/// - `reloadIfChanged()` builds a new engine when the signature folder changed (or none is
///   loaded yet), off the pool, then swaps it in. Scans in flight keep the old engine alive
///   until they finish; it is freed with its last reference. No message is dropped.
/// - Without a loadable database every scan fails with `.noEngine` (the caller fails closed).
public final class ClamAVService: Sendable {
    public let databaseDirectory: String
    public let limits: ClamAVLimits
    public let timeout: Duration
    /// Scans that may run at once (each holds one thread while libclamav works).
    public let slots: Int
    let slotPool: ScanSlots
    let logger: Logger
    let queue = DispatchQueue(label: "smg.clamav.scan", qos: .userInitiated, attributes: .concurrent)
    let loadQueue = DispatchQueue(label: "smg.clamav.load")
    let state = Locked<(engine: ClamAVEngine?, fingerprint: String?, lastError: String?)>((nil, nil, nil))

    /// - Parameter slots: concurrent scans; 0 or less = the number of active processor cores.
    public init(databaseDirectory: String, limits: ClamAVLimits = ClamAVLimits(), timeout: Duration = .seconds(60),
                slots: Int = 0, logger: Logger) {
        self.databaseDirectory = databaseDirectory
        self.limits = limits
        self.timeout = timeout
        self.slots = slots > 0 ? slots : max(1, ProcessInfo.processInfo.activeProcessorCount)
        self.slotPool = ScanSlots(count: self.slots)
        self.logger = logger
    }

    /// Slots occupied right now: scans running in libclamav, including timed-out ones that
    /// have not returned yet.
    public var busySlots: Int { slotPool.busy }

    /// The engine scans use now (nil before the first successful load).
    public var engine: ClamAVEngine? { state.withLock { $0.engine } }
    /// Why the last load failed (nil after a success).
    public var lastError: String? { state.withLock { $0.lastError } }

    /// Names, sizes and modification times of the signature files: changes when freshclam
    /// (or an operator) replaces a database.
    public static func fingerprint(of directory: String) -> String {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory) else { return "missing" }
        return names.sorted().map { name in
            let attributes = try? fm.attributesOfItem(atPath: directory + "/" + name)
            let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
            let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return "\(name):\(size):\(modified)"
        }.joined(separator: "|")
    }

    /// Loads a new engine if the folder changed since the last attempt, or if none is loaded.
    /// Returns true when a new engine was swapped in.
    @discardableResult
    public func reloadIfChanged() async -> Bool {
        let now = ClamAVService.fingerprint(of: databaseDirectory)
        let (current, seen) = state.withLock { ($0.engine, $0.fingerprint) }
        if current != nil, seen == now { return false }
        if current == nil, seen == now, seen != nil { return false }  // same broken folder: wait for a change
        let directory = databaseDirectory, limits = limits, logger = logger
        let result: Result<ClamAVEngine, any Error> = await withCheckedContinuation { continuation in
            loadQueue.async {
                continuation.resume(returning: Result { try ClamAVEngine(databaseDirectory: directory, limits: limits,
                                                                         logger: logger) })
            }
        }
        switch result {
        case .success(let engine):
            let old = state.withLock { s -> ClamAVEngine? in
                let old = s.engine
                s = (engine, now, nil)
                return old
            }
            if old != nil { logger.notice("clamav engine reloaded; the old one is freed after its scans finish") }
            return true
        case .failure(let error):
            logger.error("clamav signature load failed", metadata: ["database": .string(directory), "error": "\(error)"])
            state.withLock { $0.fingerprint = now; $0.lastError = "\(error)" }
            return false
        }
    }

    /// Scans `bytes` with the current engine on the scan queue. Throws `ClamAVError` for no
    /// engine, an engine error or a timeout: the caller must not treat that as clean.
    /// `timeout` overrides the service's for this scan (it bounds the wait for a slot plus the scan).
    public func scan(_ bytes: [UInt8], name: String? = nil,
                     timeout: Duration? = nil) async throws -> (ClamAVVerdict, ClamAVEngine) {
        let timeout = timeout ?? self.timeout
        let (engine, lastError) = state.withLock { ($0.engine, $0.lastError) }
        guard let engine else {
            throw ClamAVError(code: .noEngine, message: lastError ?? "signatures not loaded yet")
        }
        let started = ContinuousClock.now
        try await slotPool.acquire(within: timeout)
        let slotPool = self.slotPool
        let left = timeout - (ContinuousClock.now - started)
        let verdict = try await Self.run(on: queue, timeout: max(left, .milliseconds(1)), what: "clamav scan") {
            // The slot is returned when libclamav returns, also after the caller timed out.
            defer { slotPool.release() }
            return try engine.scan(bytes, name: name)
        }
        return (verdict, engine)
    }

    /// Runs blocking `work` on `queue`; throws `.timeout` if it has not finished after `timeout`.
    static func run<T: Sendable>(on queue: DispatchQueue, timeout: Duration, what: String,
                                 _ work: @escaping @Sendable () throws -> T) async throws -> T {
        let once = Locked<CheckedContinuation<T, any Error>?>(nil)
        return try await withCheckedThrowingContinuation { continuation in
            once.withLock { $0 = continuation }
            queue.async {
                let result = Result { try work() }
                once.withLock { c in c.take() }?.resume(with: result)
            }
            let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) {
                once.withLock { c in c.take() }?.resume(
                    throwing: ClamAVError(code: .timeout, message: "\(what) took longer than \(timeout)"))
            }
        }
    }
}

/// A counting semaphore for scans with FIFO waiters and a bounded wait. Thread-safe.
final class ScanSlots: Sendable {
    private struct State {
        var free: Int
        var busy = 0
        var nextTicket: UInt64 = 0
        var waiters: [(ticket: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
    }
    private let state: Locked<State>

    init(count: Int) {
        state = Locked(State(free: count))
    }

    var busy: Int { state.withLock { $0.busy } }

    /// Takes a slot, waiting at most `limit` for one; throws `ClamAVError(.busy)` after that.
    func acquire(within limit: Duration) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            // Check and enqueue under one lock, so a release in between cannot be missed.
            let ticket: UInt64? = state.withLock { s in
                if s.free > 0, s.waiters.isEmpty {
                    s.free -= 1
                    s.busy += 1
                    return nil
                }
                s.nextTicket += 1
                s.waiters.append((s.nextTicket, continuation))
                return s.nextTicket
            }
            guard let ticket else {
                continuation.resume()
                return
            }
            let seconds = Double(limit.components.seconds) + Double(limit.components.attoseconds) / 1e18
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [state] in
                let expired = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                    guard let i = s.waiters.firstIndex(where: { $0.ticket == ticket }) else { return nil }
                    return s.waiters.remove(at: i).continuation
                }
                expired?.resume(throwing: ClamAVError(
                    code: .busy, message: "no scan slot free within \(limit) (all busy, some may be timed-out scans still running)"))
            }
        }
    }

    /// Gives a slot back: to the first waiter, or to the pool.
    func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            if !s.waiters.isEmpty { return s.waiters.removeFirst().continuation }  // the slot passes on: busy unchanged
            s.busy -= 1
            s.free += 1
            return nil
        }
        next?.resume()
    }
}
