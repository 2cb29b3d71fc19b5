import Logging
import Metrics
import SMGAccounts
import ServiceLifecycle

/// The compromised-account brake as metrics:
/// - `smg_braked_accounts{kind="login"|"customer"}`: the brakes in force on the whole gateway
///   (every site), read from Redis every `every` by every classifier (alert on the max);
/// - `smg_brakes_tripped_total`: brakes this classifier tripped.
/// Both exist from the start (value 0). A Redis error keeps the last value (the stage's own
/// health and metrics report Redis trouble).
struct BrakeMetrics: Service {
    let store: BrakeStore
    let every: Duration
    let logger: Logger
    let tripped = Counter(label: "smg_brakes_tripped_total")
    let braked: [String: Gauge] = Dictionary(uniqueKeysWithValues: ["login", "customer"].map {
        ($0, Gauge(label: "smg_braked_accounts", dimensions: [("kind", $0)]))
    })

    init(store: BrakeStore, every: Duration = .seconds(5), logger: Logger) {
        self.store = store
        self.every = every
        self.logger = logger
    }

    func run() async throws {
        await cancelWhenGracefulShutdown { await self.loop() }
    }

    func loop() async {
        while !Task.isCancelled {
            await refresh()
            do { try await Task.sleep(for: every) } catch { return }
        }
    }

    func refresh() async {
        do {
            let counts = Self.countByKind(try await store.all().map(\.subject))
            for (kind, gauge) in braked { gauge.record(counts[kind] ?? 0) }
        } catch {
            logger.debug("braked accounts gauge not refreshed", metadata: ["error": "\(error)"])
        }
    }

    /// Subjects (`login:<name>`, `customer:<id>`) counted by their kind.
    static func countByKind(_ subjects: [String]) -> [String: Int] {
        var out: [String: Int] = [:]
        for subject in subjects {
            guard let colon = subject.firstIndex(of: ":") else { continue }
            out[String(subject[..<colon]), default: 0] += 1
        }
        return out
    }
}
