import XCTest
import SMGRedis

final class RedisEndpointAndScriptTests: XCTestCase {
    func testURLParsing() throws {
        let a = try RedisEndpoint(url: "redis://:s3cret@127.0.0.1:6390/3")
        XCTAssertEqual(a.host, "127.0.0.1")
        XCTAssertEqual(a.port, 6390)
        XCTAssertEqual(a.password, "s3cret")
        XCTAssertNil(a.username)
        XCTAssertEqual(a.database, 3)
        XCTAssertNil(a.unixSocket)
        XCTAssertFalse(a.description.contains("s3cret"))

        let b = try RedisEndpoint(url: "redis://localhost")
        XCTAssertEqual(b.port, 6379)
        XCTAssertEqual(b.database, 0)
        XCTAssertNil(b.password)

        let c = try RedisEndpoint(url: "unix:///run/redis/redis.sock?db=5")
        XCTAssertEqual(c.unixSocket, "/run/redis/redis.sock")
        XCTAssertEqual(c.database, 5)

        let d = try RedisEndpoint(url: "redis://[::1]:7000")
        XCTAssertEqual(d.host, "::1")
        XCTAssertEqual(d.port, 7000)

        let e = try RedisEndpoint(url: "redis://app:pw@10.0.0.1:6379/0")
        XCTAssertEqual(e.username, "app")
        XCTAssertEqual(e.password, "pw")

        for bad in ["http://x", "redis://", "redis://h:6379/notanumber", "unix://relative?db=1", "::"] {
            XCTAssertThrowsError(try RedisEndpoint(url: bad), bad) { error in
                XCTAssertEqual((error as? RedisError)?.code, .invalidArgument, bad)
            }
        }
    }

    func testSHA1KnownVectors() {
        XCTAssertEqual(RedisScript("").sha1, "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        XCTAssertEqual(RedisScript("abc").sha1, "a9993e364706816aba3e25717850c26c9cd0d89d")
        XCTAssertEqual(RedisScript("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").sha1,
                       "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        XCTAssertEqual(RedisScript(String(repeating: "a", count: 1000)).sha1,
                       "291e9a6c66994949b57ba5e650361e98fc36b1ba")
    }

    func testValueHelpers() {
        XCTAssertEqual(RedisValue.bulk(Array("42".utf8)).int, 42)
        XCTAssertEqual(RedisValue.integer(7).int, 7)
        XCTAssertNil(RedisValue.null.string)
        XCTAssertEqual(RedisValue.status("OK").string, "OK")
        XCTAssertNil(RedisValue.bulk([0xFF, 0xFE]).string) // not UTF-8
        XCTAssertEqual(RedisValue.bulk([0xFF, 0xFE]).bytes, [0xFF, 0xFE])
        XCTAssertEqual(RedisValue.array([.integer(1)]).array, [.integer(1)])
        XCTAssertNil(RedisValue.integer(1).array)
        XCTAssertEqual(RedisArg(3.5).bytes, Array("3.5".utf8))
        XCTAssertEqual(RedisArg(Int64(-9)).bytes, Array("-9".utf8))
        let lit: RedisArg = 12
        XCTAssertEqual(lit.bytes, Array("12".utf8))
    }

    func testErrorCodesAreDistinct() {
        let codes: [RedisError.Code] = [.connection, .timeout, .server, .protocol, .closed, .invalidArgument, .overloaded]
        XCTAssertEqual(Set(codes).count, codes.count)
        let e = RedisError(.server, "NOSCRIPT No matching script")
        XCTAssertEqual(e.serverErrorPrefix, "NOSCRIPT")
        XCTAssertFalse(e.isConnectionFatal)
        XCTAssertTrue(RedisError(.timeout, "x").isConnectionFatal)
    }
}
