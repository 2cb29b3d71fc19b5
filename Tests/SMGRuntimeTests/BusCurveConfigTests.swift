import XCTest
import Foundation
import SMGBus
@testable import SMGRuntime

/// `bus.curve_key_file` and `bus.curve_authorized_keys`: errors name the key (and where the value
/// came from), never the secret key.
final class BusCurveConfigTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-curve-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    func file(_ name: String, _ text: String, mode: Int = 0o600) throws -> String {
        let path = dir.appendingPathComponent(name).path
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        return path
    }

    /// The ConfigError of loading `environment` (and asking for the bus's security), or nil.
    func configError(_ environment: [String: String]) -> ConfigError? {
        do {
            let config = try Config(file: nil, environment: environment, keys: CommonKeys.all)
            _ = try CommonKeys.busSecurity(config)
            return nil
        } catch let error as ConfigError {
            return error
        } catch {
            XCTFail("not a ConfigError: \(error)")
            return nil
        }
    }

    func testDefaultIsPlaintext() throws {
        let config = try Config(file: nil, environment: [:], keys: CommonKeys.all)
        XCTAssertNil(try CommonKeys.busSecurity(config))
        XCTAssertTrue(Config.describe(CommonKeys.all).contains("bus.curve_key_file = \n"))
        XCTAssertTrue(Config.describe(CommonKeys.all).contains("bus.curve_authorized_keys = \n"))
    }

    func testKeyFileAndAuthorizedList() throws {
        let pair = try CurveKeyPair.generate(), other = try CurveKeyPair.generate()
        let keyFile = try file("bus.key", CurveKeyFile.text(of: pair))
        let list = try file("authorized", "# the other site\n\(other.publicZ85) eu-de-02\n", mode: 0o644)
        let config = try Config(file: nil, environment: ["SMG_BUS_CURVE_KEY_FILE": keyFile,
                                                         "SMG_BUS_CURVE_AUTHORIZED_KEYS": list], keys: CommonKeys.all)
        let security = try XCTUnwrap(try CommonKeys.busSecurity(config))
        XCTAssertEqual(security.keyPair, pair)
        XCTAssertEqual(security.authorizedKeys, [pair.publicKey, other.publicKey], "its own key is always authorized")
        XCTAssertEqual(config.effective()["bus.curve_key_file"], keyFile, "the path is shown, the key never")

        let alone = try Config(file: nil, environment: ["SMG_BUS_CURVE_KEY_FILE": keyFile], keys: CommonKeys.all)
        XCTAssertEqual(try CommonKeys.busSecurity(alone)?.authorizedKeys, [pair.publicKey])
    }

    func testErrorsNameTheKey() throws {
        let pair = try CurveKeyPair.generate()
        let secret = Z85.encode(pair.secretKey)
        let loose = try file("loose.key", CurveKeyFile.text(of: pair), mode: 0o644)
        var error = try XCTUnwrap(configError(["SMG_BUS_CURVE_KEY_FILE": loose]))
        XCTAssertEqual(error.key, "bus.curve_key_file")
        XCTAssertEqual(error.source, "environment SMG_BUS_CURVE_KEY_FILE")
        XCTAssertTrue(error.problem.contains("mode 644") && error.problem.contains("chmod 600"), error.problem)
        XCTAssertFalse("\(error)".contains(secret))

        error = try XCTUnwrap(configError(["SMG_BUS_CURVE_KEY_FILE": dir.appendingPathComponent("missing.key").path]))
        XCTAssertEqual(error.key, "bus.curve_key_file")
        XCTAssertTrue(error.problem.contains("No such file"), error.problem)

        let bad = try file("bad.key", "public: \(pair.publicZ85)\nsecret: \(secret.dropLast())!\n")
        error = try XCTUnwrap(configError(["SMG_BUS_CURVE_KEY_FILE": bad]))
        XCTAssertEqual(error.key, "bus.curve_key_file")
        XCTAssertFalse("\(error)".contains(String(secret.dropLast())), "\(error)")

        let keyFile = try file("bus.key", CurveKeyFile.text(of: pair))
        let badList = try file("list", "\(pair.publicZ85)\nshort\n", mode: 0o644)
        error = try XCTUnwrap(configError(["SMG_BUS_CURVE_KEY_FILE": keyFile, "SMG_BUS_CURVE_AUTHORIZED_KEYS": badList]))
        XCTAssertEqual(error.key, "bus.curve_authorized_keys")
        XCTAssertTrue(error.problem.contains("line 2"), error.problem)

        // A list without a keypair authenticates nobody: refused.
        let list = try file("list2", "\(pair.publicZ85)\n", mode: 0o644)
        error = try XCTUnwrap(configError(["SMG_BUS_CURVE_AUTHORIZED_KEYS": list]))
        XCTAssertEqual(error.key, "bus.curve_authorized_keys")
        XCTAssertTrue(error.problem.contains("needs bus.curve_key_file"), error.problem)
    }
}
