import SMGSync
import Logging
internal import NIOCore

/// Where the primary is, for a `redis+sentinel://` endpoint: asked of the Sentinels (the first that
/// answers `SENTINEL get-master-addr-by-name`), remembered until a connection to it fails, it
/// answers `-READONLY`, or `ROLE` says it is not the primary (a failover moved it); then the next
/// connection asks again. Each time the remembered primary is dropped the `generation` moves, and
/// every pooled connection made for an older generation is replaced before its next command — so
/// the whole pool moves to the new primary, not only the connection that noticed.
///
/// With `rediss+sentinel://` the Sentinels are asked over TLS too (same CA, client certificate and
/// server name as the data nodes), and the primary they name is reached over TLS.
///
/// Thread rules: `Sendable`; `primary()` blocks (network), so it is only called on a pool slot's
/// serial queue, never on the cooperative pool.
final class PrimaryLocator: Sendable {
    let endpoint: RedisEndpoint
    let sentinel: RedisEndpoint.Sentinel
    let timeout: Duration
    let logger: Logger
    /// Carries TLS (nil: plain TCP, or NIO's singleton).
    let eventLoopGroup: (any EventLoopGroup)?

    private struct State {
        var current: RedisEndpoint?
        var generation = 0
        /// The primary last logged as found / as dropped: while Sentinel still names a dead
        /// primary (the seconds before it notices), each retry would log both again.
        var announced: RedisEndpoint?
        var dropped: RedisEndpoint?
    }
    private let state = Locked(State())

    init(endpoint: RedisEndpoint, sentinel: RedisEndpoint.Sentinel, timeout: Duration, logger: Logger,
         eventLoopGroup: (any EventLoopGroup)? = nil) {
        self.endpoint = endpoint
        self.sentinel = sentinel
        self.timeout = timeout
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
    }

    var generation: Int { state.withLock { $0.generation } }

    /// The primary as last learned, or as the Sentinels say now. Throws `.connection` (with
    /// `commandNotSent`) when no Sentinel names one.
    func primary() throws -> (endpoint: RedisEndpoint, generation: Int) {
        if let known = state.withLock({ s in s.current.map { ($0, s.generation) } }) { return known }
        var problems: [String] = []
        for address in sentinel.addresses {
            do {
                var asked = RedisEndpoint(host: address.host, port: address.port, password: sentinel.password)
                asked.tls = endpoint.tls
                let conn = try RedisConnection(endpoint: asked, timeout: timeout, eventLoopGroup: eventLoopGroup)
                defer { conn.close() }
                let reply = try conn.command(["SENTINEL", "get-master-addr-by-name", RedisArg(sentinel.masterName)])
                guard let parts = reply.array, parts.count == 2, let host = parts[0].string,
                      let port = parts[1].string.flatMap({ Int($0) }) else {
                    problems.append("\(address.host):\(address.port) does not know \(sentinel.masterName)")
                    continue
                }
                let found = endpoint.at(host: host, port: port)
                let (generation, news) = state.withLock { s -> (Int, Bool) in
                    s.current = found
                    defer { s.announced = found }
                    return (s.generation, s.announced != found)
                }
                logger.log(level: news ? .info : .debug, "redis primary found through Sentinel", metadata: [
                    "master": "\(sentinel.masterName)", "primary": "\(found)", "sentinel": "\(address.host):\(address.port)",
                ])
                return (found, generation)
            } catch {
                problems.append("\(address.host):\(address.port): \(error)")
            }
        }
        throw RedisError(.connection, "no Sentinel named the primary of \(sentinel.masterName): \(problems.joined(separator: "; "))",
                         commandNotSent: true)
    }

    /// Drops `failed` if it is still the remembered primary: the next connection asks the
    /// Sentinels again, and connections of the old generation are replaced.
    func forget(_ failed: RedisEndpoint, because reason: String) {
        let (dropped, news) = state.withLock { s -> (Bool, Bool) in
            guard s.current == failed else { return (false, false) }
            s.current = nil
            s.generation += 1
            defer { s.dropped = failed }
            return (true, s.dropped != failed)
        }
        if dropped {
            logger.log(level: news ? .warning : .debug, "redis primary dropped; asking Sentinel again", metadata: [
                "master": "\(sentinel.masterName)", "primary": "\(failed)", "reason": "\(reason)",
            ])
        }
    }
}
