internal import Foundation

/// Where and how to reach Redis.
///
/// URL forms accepted by `init(url:)`:
/// - `redis://[[user]:password@]host[:port][/db]` (host may be `[::1]`; port defaults to 6379)
/// - `unix:///path/to/redis.sock[?db=N][&password=P]`
/// - `redis+sentinel://[[user]:password@]host:port[,host:port…]/<master name>[/db][?sentinel_password=P]`:
///   the primary of `<master name>` as Redis Sentinel reports it (the hosts are the Sentinels,
///   port default 26379); `user`/`password` are for the data nodes.
/// - `rediss://…` and `rediss+sentinel://…`: the same over TLS (to the Sentinels too, and to the
///   primary they name), trusting the system's roots; `tls` holds the settings (a private CA, a
///   client certificate, the server name), which the caller may replace.
public struct RedisEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// Where Redis Sentinel says the primary is.
    public struct Sentinel: Sendable, Hashable {
        public var addresses: [SentinelAddress]
        public var masterName: String
        /// AUTH for the Sentinels themselves (`requirepass` in sentinel.conf), if they ask for it.
        public var password: String?

        public init(addresses: [SentinelAddress], masterName: String, password: String? = nil) {
            self.addresses = addresses
            self.masterName = masterName
            self.password = password
        }
    }

    public struct SentinelAddress: Sendable, Hashable {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    public var host: String
    public var port: Int
    /// If set, a unix domain socket path; `host`/`port` are then ignored.
    public var unixSocket: String?
    /// ACL user name (Redis 6+). `nil` means `AUTH <password>` (the `default` user).
    public var username: String?
    public var password: String?
    public var database: Int
    /// Set for `redis+sentinel://`: `host`/`port` are then only the last primary Sentinel named.
    public var sentinel: Sentinel?
    /// Set for `rediss://` and `rediss+sentinel://`: connect over TLS (not for unix sockets).
    public var tls: RedisTLS?

    public init(host: String = "127.0.0.1", port: Int = 6379, username: String? = nil,
                password: String? = nil, database: Int = 0) {
        self.host = host
        self.port = port
        self.unixSocket = nil
        self.username = username
        self.password = password
        self.database = database
    }

    public init(unixSocket: String, password: String? = nil, database: Int = 0) {
        self.host = ""
        self.port = 0
        self.unixSocket = unixSocket
        self.username = nil
        self.password = password
        self.database = database
    }

    public init(url: String) throws {
        let lower = url.lowercased()
        if lower.hasPrefix("redis+sentinel://") || lower.hasPrefix("rediss+sentinel://") {
            self = try Self.parseSentinel(url)
            return
        }
        guard let comps = URLComponents(string: url), let scheme = comps.scheme?.lowercased() else {
            throw RedisError(.invalidArgument, "invalid Redis URL")
        }
        let query = Dictionary((comps.queryItems ?? []).map { ($0.name, $0.value ?? "") },
                               uniquingKeysWith: { _, last in last })
        func parseDB(_ s: String) throws -> Int {
            guard let db = Int(s), db >= 0 else { throw RedisError(.invalidArgument, "invalid database in Redis URL") }
            return db
        }
        switch scheme {
        case "redis", "rediss":
            guard var host = comps.host, !host.isEmpty else {
                throw RedisError(.invalidArgument, "Redis URL without host")
            }
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            let port = comps.port ?? 6379
            guard (1...65535).contains(port) else { throw RedisError(.invalidArgument, "invalid port in Redis URL") }
            var db = 0
            let path = comps.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !path.isEmpty { db = try parseDB(path) } else if let q = query["db"] { db = try parseDB(q) }
            let user = comps.user.flatMap { $0.isEmpty ? nil : $0.removingPercentEncoding ?? $0 }
            let pass = comps.password.flatMap { $0.isEmpty ? nil : $0.removingPercentEncoding ?? $0 }
            self.init(host: host, port: port, username: user, password: pass, database: db)
            if scheme == "rediss" { tls = RedisTLS(systemDefaults: ()) }
        case "unix":
            let path = comps.path
            guard path.hasPrefix("/") else { throw RedisError(.invalidArgument, "unix Redis URL needs an absolute path") }
            let db = try query["db"].map(parseDB) ?? 0
            self.init(unixSocket: path, password: query["password"].flatMap { $0.isEmpty ? nil : $0 }, database: db)
        default:
            throw RedisError(.invalidArgument, "unsupported Redis URL scheme \(scheme)")
        }
    }

    /// Parses `redis+sentinel://…` (and `rediss+sentinel://…`) by hand: URLComponents does not
    /// take a list of hosts.
    static func parseSentinel(_ url: String) throws -> RedisEndpoint {
        let secure = url.lowercased().hasPrefix("rediss+")
        var rest = Substring(url.dropFirst((secure ? "rediss+sentinel://" : "redis+sentinel://").count))
        var query: [String: String] = [:]
        if let q = rest.firstIndex(of: "?") {
            for item in rest[rest.index(after: q)...].split(separator: "&") {
                let kv = item.split(separator: "=", maxSplits: 1)
                query[String(kv[0])] = kv.count > 1 ? (String(kv[1]).removingPercentEncoding ?? String(kv[1])) : ""
            }
            rest = rest[..<q]
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        var authority = rest[..<slash]
        let path = rest[slash...].split(separator: "/").map(String.init)
        var user: String?, pass: String?
        if let at = authority.lastIndex(of: "@") {
            let info = authority[..<at]
            authority = authority[authority.index(after: at)...]
            let parts = info.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map {
                String($0).removingPercentEncoding ?? String($0)
            }
            user = parts[0].isEmpty ? nil : parts[0]
            pass = parts.count > 1 && !parts[1].isEmpty ? parts[1] : nil
        }
        var addresses: [SentinelAddress] = []
        for item in authority.split(separator: ",") {
            var host = item, port = 26379
            if item.hasPrefix("["), let close = item.firstIndex(of: "]") {
                host = item[item.index(after: item.startIndex)..<close]
                let tail = item[item.index(after: close)...]
                if tail.hasPrefix(":") {
                    guard let p = Int(tail.dropFirst()) else { throw RedisError(.invalidArgument, "invalid Sentinel port in Redis URL") }
                    port = p
                }
            } else if let colon = item.lastIndex(of: ":") {
                host = item[..<colon]
                guard let p = Int(item[item.index(after: colon)...]) else {
                    throw RedisError(.invalidArgument, "invalid Sentinel port in Redis URL")
                }
                port = p
            }
            guard !host.isEmpty, (1...65535).contains(port) else { throw RedisError(.invalidArgument, "invalid Sentinel address in Redis URL") }
            addresses.append(SentinelAddress(host: String(host), port: port))
        }
        guard !addresses.isEmpty else { throw RedisError(.invalidArgument, "Sentinel Redis URL without Sentinel hosts") }
        guard let master = path.first, !master.isEmpty else {
            throw RedisError(.invalidArgument, "Sentinel Redis URL without the master name (…/mymaster)")
        }
        var db = 0
        if path.count > 1 {
            guard let n = Int(path[1]), n >= 0 else { throw RedisError(.invalidArgument, "invalid database in Redis URL") }
            db = n
        }
        var endpoint = RedisEndpoint(host: addresses[0].host, port: addresses[0].port, username: user, password: pass, database: db)
        endpoint.sentinel = Sentinel(addresses: addresses, masterName: master,
                                     password: query["sentinel_password"].flatMap { $0.isEmpty ? nil : $0 })
        if secure { endpoint.tls = RedisTLS(systemDefaults: ()) }
        return endpoint
    }

    /// This endpoint at another address (the primary Sentinel named), with its credentials and TLS.
    func at(host: String, port: Int) -> RedisEndpoint {
        var copy = self
        copy.host = host
        copy.port = port
        copy.sentinel = nil
        return copy
    }

    /// The endpoint without its password, safe to log.
    public var description: String {
        if let unixSocket { return "unix://\(unixSocket)?db=\(database)" }
        let scheme = tls == nil ? "redis" : "rediss"
        if let sentinel {
            let hosts = sentinel.addresses.map { ($0.host.contains(":") ? "[\($0.host)]" : $0.host) + ":\($0.port)" }
            return "\(scheme)+sentinel://\(hosts.joined(separator: ","))/\(sentinel.masterName)/\(database)"
        }
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(scheme)://\(h):\(port)/\(database)"
    }
}
