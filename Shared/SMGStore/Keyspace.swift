public import SMGCore

/// Every Redis key the gateway uses. `docs/ARCHITECTURE.md` lists them with their types
/// and writers; keep the two in step.
///
/// All keys start with a configurable prefix (default `smg:`), so several test gateways or a
/// staging gateway can share one Redis.
public struct Keyspace: Sendable, Hashable {
    public var prefix: String

    public init(prefix: String = "smg:") { self.prefix = prefix }

    /// HASH: `envelope` (JSON), `state`, `created` (ms), `lane`, stage facts, `rcpt:<address>` (JSON).
    public func message(_ id: MessageID) -> String { "\(prefix)msg:\(id)" }
    /// STRING: the raw message as accepted (CRLF line ends, the gateway's Received header on top).
    public func body(_ id: MessageID) -> String { "\(prefix)body:\(id)" }
    /// STREAM: the message's own event log (field `e` = event JSON); `smgctl trace` reads it.
    public func events(_ id: MessageID) -> String { "\(prefix)ev:\(id)" }
    /// STREAM: every event of the gateway, capped with MAXLEN ~.
    public var globalEvents: String { "\(prefix)events" }
    /// ZSET: messages published on `topic` whose consuming stage has not recorded a result;
    /// score = lease deadline in ms (Redis server time). Past the deadline, redrive takes them.
    public func pending(_ topic: String) -> String { "\(prefix)pending:\(topic)" }
    /// HASH: message id → owner token of the process that holds its lease for `topic`
    /// (`~wait` while it waits for a retry time).
    public func owners(_ topic: String) -> String { "\(prefix)owner:\(topic)" }
    /// HASH: endpoint → expiry (ms, wall clock) of the processes that serve `kind`:
    /// a data topic (producers' PUSH endpoints), `events` (PUB endpoints for taps), `http`.
    public func registry(_ kind: String) -> String { "\(prefix)registry:\(kind)" }
    /// HASH: message id → the topic whose stage it was taken from, for messages an operator put
    /// on hold (`smgctl queue hold`). Held messages are in no pending set, so nothing redrives them.
    public var held: String { "\(prefix)held" }
    /// ZSET: message id → time (ms) it was quarantined: its record could not be read, so no stage
    /// can work on it; `smgctl queue` shows it, an operator deletes or repairs it.
    public var quarantine: String { "\(prefix)quarantine" }
    /// STRING (with a time to live): submission fingerprint → id of the message stored for it, so
    /// a client's retry of a transaction whose 250 it never saw is not stored twice.
    public func submission(_ fingerprint: String) -> String { "\(prefix)dedupe:\(fingerprint)" }
}
