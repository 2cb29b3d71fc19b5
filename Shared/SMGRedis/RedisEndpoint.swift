internal import Foundation

/// Where and how to reach Redis.
///
/// URL forms accepted by `init(url:)`:
/// - `redis://[[user]:password@]host[:port][/db]` (host may be `[::1]`; port defaults to 6379)
/// - `unix:///path/to/redis.sock[?db=N][&password=P]`
public struct RedisEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// If set, a unix domain socket path; `host`/`port` are then ignored.
    public var unixSocket: String?
    /// ACL user name (Redis 6+). `nil` means `AUTH <password>` (the `default` user).
    public var username: String?
    public var password: String?
    public var database: Int

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
        case "redis":
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
        case "unix":
            let path = comps.path
            guard path.hasPrefix("/") else { throw RedisError(.invalidArgument, "unix Redis URL needs an absolute path") }
            let db = try query["db"].map(parseDB) ?? 0
            self.init(unixSocket: path, password: query["password"].flatMap { $0.isEmpty ? nil : $0 }, database: db)
        default:
            throw RedisError(.invalidArgument, "unsupported Redis URL scheme \(scheme)")
        }
    }

    /// The endpoint without its password, safe to log.
    public var description: String {
        if let unixSocket { return "unix://\(unixSocket)?db=\(database)" }
        let h = host.contains(":") ? "[\(host)]" : host
        return "redis://\(h):\(port)/\(database)"
    }
}
