import SMGSync

/// Group commit for one Lua script: calls made while another batch of the same script is on its
/// way to Redis wait and go together in the next pipeline (`RedisClient.evalMany`), so under load
/// many messages share one round trip, one wake-up of the connection's thread and, for Redis, one
/// fsync; alone, a call goes at once, as by itself.
///
/// **How.** A caller that finds no batch in flight becomes the leader: it sends everything queued
/// (its own call included, at most `maxBatch` per pipeline), hands each waiting caller its reply,
/// and goes on sending what queued up meanwhile, for at most `leaderRounds` rounds; after those it
/// hands the rest to a new task, so one caller never works for all others for long.
///
/// **Failures** are each caller's own: an error reply is thrown to that caller only
/// (`RedisError(.server)`); a connection failure or timeout is thrown to every caller of that
/// pipeline, just as each would have got it alone (the scripts may or may not have run).
/// Cancellation is checked before a call is queued, never afterwards (as `RedisClient` does); a
/// leader whose own task is cancelled meanwhile still sends the batch it carries for the others.
public final class RedisBatcher: Sendable {
    public let client: RedisClient
    public let script: RedisScript
    public let maxBatch: Int
    /// A pipeline takes more calls only while it carries fewer argument bytes than this (a call
    /// larger than it goes alone): big messages are not copied into one huge write.
    public let maxBatchBytes: Int
    let leaderRounds = 4

    private struct Call {
        let keys: [RedisArg]
        let args: [RedisArg]
        /// Plain commands right after the script (`RedisClient.evalMany`'s `followUps`).
        let followUps: [[RedisArg]]
        var bytes: Int {
            keys.reduce(0) { $0 + $1.bytes.count } + args.reduce(0) { $0 + $1.bytes.count }
                + followUps.reduce(0) { $0 + $1.reduce(0) { $0 + $1.bytes.count } }
        }
        /// nil for the leader's own call (it reads its reply from the batch itself).
        let reply: CheckedContinuation<Role, any Error>?
    }
    private enum Role: Sendable {
        case answered(RedisValue)
        case lead
    }
    private struct State {
        var queue: [Call] = []
        var sending = false
        var pipelines = 0
        var calls = 0
    }
    private let state = Locked(State())

    /// How many pipelines went to Redis and how many calls they carried (for tests and metrics).
    public var sent: (pipelines: Int, calls: Int) { state.withLock { ($0.pipelines, $0.calls) } }

    /// `WAIT` after each batch (see `RedisClient.evalMany`): one wait covers the whole batch.
    public let replicas: ReplicaAcknowledgement?

    public init(client: RedisClient, script: RedisScript, maxBatch: Int = 64, maxBatchBytes: Int = 8 << 20,
                replicas: ReplicaAcknowledgement? = nil) {
        self.replicas = replicas
        self.client = client
        self.script = script
        self.maxBatch = max(1, maxBatch)
        self.maxBatchBytes = max(1, maxBatchBytes)
    }

    /// Runs the script with `keys` and `args`, in a pipeline with whatever else is queued.
    /// `followUps`: plain commands sent right after it; the reply is then `.array([script reply] +
    /// their replies)` (see `RedisClient.evalMany`).
    public func eval(keys: [RedisArg], args: [RedisArg], followUps: [[RedisArg]] = []) async throws -> RedisValue {
        try Task.checkCancellation()
        let role = try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Role, any Error>) in
            let lead = state.withLock { s -> Bool in
                if s.sending {
                    s.queue.append(Call(keys: keys, args: args, followUps: followUps, reply: cont))
                    return false
                }
                s.sending = true
                return true
            }
            if lead { cont.resume(returning: .lead) }
        }
        switch role {
        case .answered(let value): return value
        case .lead: return try await drain(own: Call(keys: keys, args: args, followUps: followUps, reply: nil))!.get()
        }
    }

    /// Sends `own` (the leader's call, if any) with everything queued, then keeps sending what
    /// queued up meanwhile for at most `leaderRounds` batches; a task carries on after that (the
    /// sending flag stays set, so no second sender starts). Returns `own`'s result.
    private func drain(own: Call?) async -> Result<RedisValue, any Error>? {
        var mine: Result<RedisValue, any Error>?
        var first = own
        var finished = false
        for _ in 0..<leaderRounds {
            let batch = take(adding: first)
            first = nil
            if batch.isEmpty { finished = true; break }
            for (call, result) in await send(batch) {
                if let reply = call.reply { reply.resume(with: result.map { .answered($0) }) } else { mine = result }
            }
        }
        if !finished { Task { _ = await self.drain(own: nil) } }
        return mine
    }

    /// Takes up to `maxBatch` queued calls and `maxBatchBytes` (at least one call) after `own`;
    /// an empty take ends the sending.
    private func take(adding own: Call?) -> [Call] {
        state.withLock { s in
            var batch = own.map { [$0] } ?? []
            var bytes = own?.bytes ?? 0
            var n = 0
            while n < s.queue.count, batch.count < maxBatch {
                let size = s.queue[n].bytes
                if !batch.isEmpty, bytes + size > maxBatchBytes { break }
                batch.append(s.queue[n])
                bytes += size
                n += 1
            }
            s.queue.removeFirst(n)
            if batch.isEmpty {
                s.sending = false
            } else {
                s.pipelines += 1
                s.calls += batch.count
            }
            return batch
        }
    }

    /// One pipeline; each call's result.
    private func send(_ batch: [Call]) async -> [(Call, Result<RedisValue, any Error>)] {
        do {
            let followUps = batch.contains { !$0.followUps.isEmpty } ? batch.map(\.followUps) : []
            let replies = try await client.evalMany(script, calls: batch.map { ($0.keys, $0.args) }, followUps: followUps,
                                                    ignoringCancellation: true, replicas: replicas)
            return batch.enumerated().map { i, call in
                guard i < replies.count else {
                    return (call, .failure(RedisError(.protocol, "pipeline returned \(replies.count) replies for \(batch.count) commands")))
                }
                if case .error(let message) = replies[i] { return (call, .failure(RedisError(.server, message))) }
                return (call, .success(replies[i]))
            }
        } catch {
            return batch.map { ($0, .failure(error)) }
        }
    }
}
