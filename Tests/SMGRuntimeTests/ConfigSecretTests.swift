import XCTest
import Foundation
@testable import SMGRuntime

/// Secrets never appear in logs, `--check-config` output or error messages.
final class ConfigSecretTests: XCTestCase {
    static let token = ConfigKey<String>.string(
        "test.api_token", default: "", help: "A secret.", secret: true,
        validate: { $0.count < 8 ? "too short: \($0)" : nil })
    static let count = ConfigKey<Int>.int("test.count", default: 1, range: 1...10, help: "A number.").secret()

    func testURLPasswordsAreRedacted() {
        XCTAssertEqual(Config.redact("redis://:hunter2@10.0.0.1:6379/0"), "redis://:***@10.0.0.1:6379/0")
        XCTAssertEqual(Config.redact("redis://app:p%40ss@[::1]:6379/1"), "redis://app:***@[::1]:6379/1")
        XCTAssertEqual(Config.redact("redis://10.0.0.1:6379/0"), "redis://10.0.0.1:6379/0", "no password: unchanged")
        XCTAssertEqual(Config.redact("redis://user@host:6379"), "redis://user@host:6379", "a user alone is no secret")
        XCTAssertEqual(Config.redact("unix:///run/redis.sock?db=1&password=hunter2"), "unix:///run/redis.sock?db=1&password=***")
        XCTAssertEqual(Config.redact("a redis://:x@h:1/0 and smtp://u:y@h:25 too"), "a redis://:***@h:1/0 and smtp://u:***@h:25 too")
        XCTAssertEqual(Config.redact("token abc, not secret", secret: "abc"), "token ***, not secret")
    }

    func testEffectiveValuesHideSecrets() throws {
        let config = try Config(file: nil, environment: [
            "SMG_REDIS_URL": "redis://:hunter2@10.0.0.1:6379/0", "SMG_TEST_API_TOKEN": "tok-123456789",
        ], keys: CommonKeys.all + [Self.token.erased])
        let shown = config.effective()
        XCTAssertEqual(shown["redis.url"], "redis://:***@10.0.0.1:6379/0")
        XCTAssertEqual(shown["test.api_token"], "***")
        XCTAssertFalse(shown.values.joined().contains("hunter2"))
        XCTAssertFalse(shown.values.joined().contains("tok-123456789"))
        // The real values are still there for the program.
        XCTAssertEqual(try config.get(CommonKeys.redisURL), "redis://:hunter2@10.0.0.1:6379/0")
        XCTAssertEqual(config.effective(revealingSecrets: true)["test.api_token"], "tok-123456789")
    }

    func testErrorMessagesHideSecrets() {
        do {
            _ = try Config(file: nil, environment: ["SMG_TEST_API_TOKEN": "pw1"], keys: [Self.token.erased])
            XCTFail("expected a config error")
        } catch let error as ConfigError {
            XCTAssertEqual(error.key, "test.api_token")
            XCTAssertFalse("\(error)".contains("pw1"), "\(error)")
            XCTAssertTrue("\(error)".contains("too short: ***"), "\(error)")
        } catch { XCTFail("\(error)") }
        do {
            _ = try Config(file: nil, environment: ["SMG_TEST_COUNT": "s3cr3t"], keys: [Self.count.erased])
            XCTFail("expected a config error")
        } catch {
            XCTAssertFalse("\(error)".contains("s3cr3t"), "\(error)")
        }
        let urlError = ConfigError(key: "redis.url", source: "config", problem: "cannot use redis://:hunter2@h:1/0")
        XCTAssertFalse(urlError.description.contains("hunter2"))
    }
}
