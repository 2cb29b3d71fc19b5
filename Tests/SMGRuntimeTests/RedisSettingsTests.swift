import XCTest
import Foundation
@testable import SMGRuntime
@testable import SMGConfig

/// redis.url + redis.tls_*: each problem is a ConfigError naming the key at fault.
final class RedisSettingsTests: XCTestCase {
    func key(_ body: () throws -> Any) -> String? {
        do { _ = try body(); return nil } catch let e as ConfigError { return e.key } catch { return "\(error)" }
    }

    func testTLSKeysAreCheckedAndNamed() throws {
        let garbage = NSTemporaryDirectory() + "smg-garbage-\(UUID().uuidString).pem"
        try "not PEM\n".write(toFile: garbage, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: garbage) }

        // Unreadable or non-PEM files are refused when the configuration loads (--check-config too).
        for (env, name) in [("SMG_REDIS_TLS_CA_FILE", "redis.tls_ca_file"), ("SMG_REDIS_TLS_CERTIFICATE", "redis.tls_certificate"),
                            ("SMG_REDIS_TLS_KEY", "redis.tls_key")] {
            for path in ["/nonexistent/ca.pem", garbage] {
                XCTAssertEqual(key { try Config(files: [], environment: [env: path, "SMG_REDIS_URL": "rediss://r:6380/0"],
                                                keys: CommonKeys.all) }, name, "\(env)=\(path)")
            }
        }

        // TLS settings with a URL that does not use TLS.
        let plain = "redis://127.0.0.1:6379/0"
        XCTAssertEqual(key { try RedisSettings.endpoint(url: plain, caFile: "", certificate: "", key: "", serverName: "redis.test",
                                                         source: "t") }, "redis.tls_server_name")
        // A client certificate without its key and the other way round.
        let tls = "rediss://127.0.0.1:6380/0"
        XCTAssertEqual(key { try RedisSettings.endpoint(url: tls, caFile: "", certificate: "/x/client.pem", key: "", serverName: "",
                                                         source: "t") }, "redis.tls_key")
        XCTAssertEqual(key { try RedisSettings.endpoint(url: tls, caFile: "", certificate: "", key: "/x/client.key", serverName: "",
                                                         source: "t") }, "redis.tls_certificate")
        XCTAssertEqual(key { try RedisSettings.endpoint(url: tls, caFile: "", certificate: "", key: "", serverName: "10.0.0.1",
                                                         source: "t") }, "redis.tls_server_name")
        XCTAssertEqual(key { try RedisSettings.endpoint(url: "rediss://", caFile: "", certificate: "", key: "", serverName: "",
                                                         source: "t") }, "redis.url")

        // Defaults: plain stays plain; rediss:// trusts the system roots and checks the URL's host.
        let config = try Config(files: [], environment: ["SMG_REDIS_URL": "rediss+sentinel://s1:26379,s2:26379/smg"],
                                keys: CommonKeys.all)
        let endpoint = try RedisSettings.endpoint(from: config)
        XCTAssertNotNil(endpoint.tls)
        XCTAssertNil(endpoint.tls?.caFile)
        XCTAssertNil(endpoint.tls?.serverName)
        XCTAssertNil(try RedisSettings.endpoint(url: plain, caFile: "", certificate: "", key: "", serverName: "", source: "t").tls)
    }
}
