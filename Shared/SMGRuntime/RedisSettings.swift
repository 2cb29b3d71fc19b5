public import SMGRedis

/// `redis.url` plus the `redis.tls_*` keys, as one `RedisEndpoint`; every problem a
/// `ConfigError` naming the key at fault.
public enum RedisSettings {
    /// The endpoint of a process's configuration (`GatewayProcess`).
    public static func endpoint(from config: Config) throws -> RedisEndpoint {
        try endpoint(url: config.get(CommonKeys.redisURL), caFile: config.get(CommonKeys.redisTLSCAFile),
                     certificate: config.get(CommonKeys.redisTLSCertificate), key: config.get(CommonKeys.redisTLSKey),
                     serverName: config.get(CommonKeys.redisTLSServerName), source: "config")
    }

    /// The endpoint of `url` with the TLS settings applied (empty = not set). TLS settings with a
    /// URL that is not `rediss://`/`rediss+sentinel://` are refused: the operator asked for TLS,
    /// and Redis would be reached without it.
    public static func endpoint(url: String, caFile: String, certificate: String, key: String, serverName: String,
                                source: String) throws -> RedisEndpoint {
        var endpoint: RedisEndpoint
        do { endpoint = try RedisEndpoint(url: url) } catch {
            throw ConfigError(key: CommonKeys.redisURL.name, source: source, problem: "\(error)")
        }
        let given: [(ConfigKey<String>, String)] = [
            (CommonKeys.redisTLSCAFile, caFile), (CommonKeys.redisTLSCertificate, certificate),
            (CommonKeys.redisTLSKey, key), (CommonKeys.redisTLSServerName, serverName),
        ]
        guard endpoint.tls != nil else {
            if let (setKey, _) = given.first(where: { !$0.1.isEmpty }) {
                throw ConfigError(key: setKey.name, source: source,
                                  problem: "is set, but redis.url is not rediss:// or rediss+sentinel:// (Redis would be reached without TLS)")
            }
            return endpoint
        }
        do {
            endpoint.tls = try RedisTLS(caFile: caFile, certificateFile: certificate, keyFile: key, serverName: serverName)
        } catch let error as RedisTLS.SetupError {
            let key: ConfigKey<String> = switch error.setting {
            case .caFile: CommonKeys.redisTLSCAFile
            case .certificate: CommonKeys.redisTLSCertificate
            case .key: CommonKeys.redisTLSKey
            case .serverName: CommonKeys.redisTLSServerName
            }
            throw ConfigError(key: key.name, source: source, problem: error.problem)
        }
        return endpoint
    }
}
