import XCTest
import Foundation
@testable import SMGRuntime
@testable import SMGConfig

final class ConfigTests: XCTestCase {
    let keys: [AnyConfigKey] = CommonKeys.all + StageKeys.all + [ConfigMapKey("egress.routes", help: "routes").erased]

    func write(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "smg-config-\(UUID().uuidString).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testDefaultsFileAndEnvironmentInThatOrder() throws {
        let file = try write("""
            site: eu-de-02
            redis:
              url: redis://10.0.0.1:6379/1
              pool: 8
            stage:
              lease: 2m
            egress:
              routes:
                "*": 127.0.0.1:2526
                example.com: "[192.0.2.1]:25"
            """)
        let config = try Config(file: file, environment: ["SMG_REDIS_POOL": "16", "SMG_STAGE_REDRIVE_AFTER": "250ms"],
                                keys: keys)
        XCTAssertEqual(try config.get(CommonKeys.site), "eu-de-02")
        XCTAssertEqual(try config.get(CommonKeys.redisURL), "redis://10.0.0.1:6379/1")
        XCTAssertEqual(try config.get(CommonKeys.redisPool), 16, "environment overrides the file")
        XCTAssertEqual(try config.get(StageKeys.lease), .seconds(120))
        XCTAssertEqual(try config.get(StageKeys.redriveAfter), .milliseconds(250))
        XCTAssertEqual(try config.get(StageKeys.concurrency), 8, "default")
        XCTAssertEqual(config.get(ConfigMapKey("egress.routes", help: "")),
                       ["*": "127.0.0.1:2526", "example.com": "[192.0.2.1]:25"])
    }

    func testSeveralFilesMergeInOrderKeyByKey() throws {
        let site = try write("""
            site: eu-de-03
            redis:
              url: redis://10.0.3.1:6379/0
              pool: 4
            egress:
              routes:
                "*": 127.0.0.1:2526
                example.org: 127.0.0.1:2527
            """)
        let service = try write("""
            redis:
              pool: 12
            stage:
              concurrency: 32
            egress:
              routes:
                example.com: "[192.0.2.1]:25"
            """)
        let config = try Config(files: [site, service], environment: ["SMG_STAGE_LEASE": "45s"], keys: keys)
        XCTAssertEqual(try config.get(CommonKeys.site), "eu-de-03", "only the first file sets it")
        XCTAssertEqual(try config.get(CommonKeys.redisURL), "redis://10.0.3.1:6379/0")
        XCTAssertEqual(try config.get(CommonKeys.redisPool), 12, "the later file wins")
        XCTAssertEqual(try config.get(StageKeys.concurrency), 32)
        XCTAssertEqual(try config.get(StageKeys.lease), .seconds(45), "the environment overrides every file")
        XCTAssertEqual(config.get(ConfigMapKey("egress.routes", help: "")), ["example.com": "[192.0.2.1]:25"],
                       "a map is replaced whole, never merged entry by entry")

        // In the other order the site's values win.
        let reversed = try Config(files: [service, site], environment: [:], keys: keys)
        XCTAssertEqual(try reversed.get(CommonKeys.redisPool), 4)

        // An error names the file the bad value came from, and an unknown key in any file is refused.
        let bad = try write("stage:\n  concurrency: 0\n")
        XCTAssertThrowsError(try Config(files: [site, bad], environment: [:], keys: keys)) { error in
            XCTAssertTrue("\(error)".contains("stage.concurrency"), "\(error)")
            XCTAssertTrue("\(error)".contains(bad), "\(error) should name \(bad)")
        }
        let typo = try write("redis:\n  pol: 3\n")
        XCTAssertThrowsError(try Config(files: [typo, service], environment: [:], keys: keys)) { error in
            XCTAssertTrue("\(error)".contains("redis.pol") && "\(error)".contains(typo), "\(error)")
        }
        // A value overridden later is not checked: only the effective value must be valid.
        let fixed = try Config(files: [bad, service], environment: [:], keys: keys)
        XCTAssertEqual(try fixed.get(StageKeys.concurrency), 32)
    }

    func testErrorsNameTheKeyAndTheSource() throws {
        let cases: [(String, [String: String], String, String)] = [
            ("stage:\n  concurrency: 0\n", [:], "stage.concurrency", "out of range"),
            ("stage:\n  concurrency: many\n", [:], "stage.concurrency", "not an integer"),
            ("redis:\n  ulr: x\n", [:], "redis.ulr", "unknown key"),
            ("", ["SMG_STAGE_LEASE": "forever"], "stage.lease", "SMG_STAGE_LEASE"),
            ("", ["SMG_LOG_LEVEL": "loud"], "log.level", "unknown level"),
            ("egress:\n  routes: 5\n", [:], "egress.routes", "must be a mapping"),
            ("- a\n- b\n", [:], "--config", "top level must be a mapping"),
            ("redis: [unclosed\n", [:], "--config", "not valid YAML"),
        ]
        for (yaml, env, key, fragment) in cases {
            let file = try write(yaml)
            XCTAssertThrowsError(try Config(file: file, environment: env, keys: keys), "\(key)") { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(key), "\(text) should name \(key)")
                XCTAssertTrue(text.contains(fragment), "\(text) should say \(fragment)")
            }
        }
        XCTAssertThrowsError(try Config(file: "/nonexistent/smg.yaml", environment: [:], keys: keys)) { error in
            XCTAssertTrue("\(error)".contains("cannot read file"))
        }
    }

    func testDurationsSizesAndHostPorts() {
        XCTAssertEqual(parseDuration("250ms"), .milliseconds(250))
        XCTAssertEqual(parseDuration("1.5s"), .milliseconds(1500))
        XCTAssertEqual(parseDuration("7d"), .seconds(7 * 86400))
        XCTAssertEqual(parseDuration("30"), .seconds(30))
        XCTAssertNil(parseDuration("-1s"))
        XCTAssertNil(parseDuration("soon"))
        let size = ConfigKey<Int>.size("x", default: "1M", range: 1...Int.max, help: "")
        XCTAssertEqual(try size.parse("50M").get(), 50 * 1024 * 1024)
        XCTAssertEqual(try size.parse("512k").get(), 512 * 1024)
        XCTAssertEqual(try size.parse("100").get(), 100)
        XCTAssertEqual(HostPort.parse("127.0.0.1:2525")?.1, 2525)
        XCTAssertEqual(HostPort.parse("[::1]:25")?.0, "::1")
        XCTAssertNil(HostPort.parse("nohost"))
        XCTAssertNil(HostPort.parse("h:99999"))
    }

    func testPrintConfigListsEveryKey() {
        let text = Config.describe(keys)
        for key in keys { XCTAssertTrue(text.contains("\(key.name) = "), key.name) }
        XCTAssertTrue(text.contains("SMG_REDIS_URL"))
    }
}
