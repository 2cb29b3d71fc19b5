public import SMGCore
public import ServiceLifecycle
import SMGSync
import Logging
import Metrics

/// Records events that are not part of a stage transition (refusals, rate-limit hits) without
/// ever making the caller wait, and with bounded memory.
///
/// **Ownership and threads.** One per process. `record` may be called from any thread,
/// including an event loop: it only appends to a buffer under a lock and never awaits, so a
/// refusal reply is never delayed by Redis. One writer (`run`, a `Service`) drains the buffer
/// in batches of at most `batchSize` events, one Redis pipeline per batch (`MessageStore.append`),
/// then publishes the batch on the event tap.
///
/// **Bounds.** At most `capacity` events wait. When the buffer is full (a client pipelining
/// thousands of refused commands, or Redis slow or down) further events are dropped: counted
/// in `smg_events_dropped_total{reason="buffer_full"}` and logged once per `logInterval`.
/// A batch Redis refuses is dropped too (`reason="write_failed"`): events are a record for
/// operators, never mail; the next batch is tried after a short pause.
///
/// **Shutdown.** On graceful shutdown the writer writes what is still buffered (one pass), then ends.
public final class EventRecorder: Service, Sendable {
    public let capacity: Int
    public let batchSize: Int
    public let logInterval: Duration
    private let process: GatewayProcess
    private let state = Locked<State>(State())
    private let wake: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation
    private let droppedFull = Counter(label: "smg_events_dropped_total", dimensions: [("reason", "buffer_full")])
    private let droppedFailed = Counter(label: "smg_events_dropped_total", dimensions: [("reason", "write_failed")])

    private struct State {
        var buffer: [Event] = []
        var droppedSinceLog = 0
        var lastDropLog: ContinuousClock.Instant?
        var written = 0
        var dropped = 0
    }

    public init(process: GatewayProcess, capacity: Int = 10_000, batchSize: Int = 256,
                logInterval: Duration = .seconds(10)) {
        precondition(capacity >= 1 && batchSize >= 1)
        self.process = process
        self.capacity = capacity
        self.batchSize = batchSize
        self.logInterval = logInterval
        (wake, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Queues `event` for writing; never blocks or awaits. Returns false if it was dropped.
    @discardableResult
    public func record(_ event: Event) -> Bool {
        let now = ContinuousClock.now
        let (accepted, report) = state.withLock { s -> (Bool, Int?) in
            if s.buffer.count < capacity {
                s.buffer.append(event)
                return (true, nil)
            }
            s.dropped += 1
            s.droppedSinceLog += 1
            if let last = s.lastDropLog, now - last < logInterval { return (false, nil) }
            s.lastDropLog = now
            defer { s.droppedSinceLog = 0 }
            return (false, s.droppedSinceLog)
        }
        if accepted {
            wakeContinuation.yield(())
        } else {
            droppedFull.increment()
            if let report {
                process.logger.warning("event buffer full; dropping events", metadata: [
                    "dropped": "\(report)", "capacity": "\(capacity)",
                ])
            }
        }
        return accepted
    }

    /// Events waiting, written and dropped so far (for tests and diagnostics).
    public var counts: (buffered: Int, written: Int, dropped: Int) {
        state.withLock { ($0.buffer.count, $0.written, $0.dropped) }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            for await _ in self.wake {
                await self.drain()
            }
        }
        await drain(final: true)
    }

    /// Writes batches until the buffer is empty (the final pass stops at the first failure).
    private func drain(final: Bool = false) async {
        while true {
            let batch = state.withLock { s -> [Event] in
                let batch = Array(s.buffer.prefix(batchSize))
                s.buffer.removeFirst(batch.count)
                return batch
            }
            if batch.isEmpty { return }
            do {
                try await process.store.append(batch)
                state.withLock { $0.written += batch.count }
                await process.publish(batch)
            } catch {
                state.withLock { $0.dropped += batch.count }
                droppedFailed.increment(by: batch.count)
                process.logger.warning("could not record events; dropped", metadata: [
                    "events": "\(batch.count)", "error": "\(error)",
                ])
                if final { return }
                try? await Task.sleep(for: .milliseconds(250))
                if Task.isCancelled { return }
            }
        }
    }
}
