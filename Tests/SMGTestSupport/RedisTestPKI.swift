internal import Foundation

/// Certificates for Redis-over-TLS tests, made with `openssl` at test time in a private
/// temporary directory (removed by `deinit`). EC P-256, valid for two days.
///
/// - `caFile`: the CA that signed everything below.
/// - `serverCertificate`/`serverKey`: for `localhost`, `redis.test` and `IP:127.0.0.1`
///   (server and client use: Redis presents it to a primary when it replicates over TLS).
/// - `namedServerCertificate`/`namedServerKey`: for `redis.test` only (checks hostname verification).
/// - `clientCertificate`/`clientKey`: a client certificate (`tls-auth-clients yes`).
/// - `otherCAFile`: an unrelated CA (the "wrong CA").
public final class RedisTestPKI: @unchecked Sendable {
    public let directory: String

    public var caFile: String { directory + "/ca.pem" }
    public var serverCertificate: String { directory + "/server.pem" }
    public var serverKey: String { directory + "/server.key" }
    public var namedServerCertificate: String { directory + "/named.pem" }
    public var namedServerKey: String { directory + "/named.key" }
    public var clientCertificate: String { directory + "/client.pem" }
    public var clientKey: String { directory + "/client.key" }
    public var otherCAFile: String { directory + "/other-ca.pem" }

    public init() throws {
        var template = Array((NSTemporaryDirectory() + "smg-redis-pki-XXXXXX").utf8CString)
        guard let dir = mkdtemp(&template) else { throw FixtureError("mkdtemp failed") }
        directory = String(cString: dir)
        let newKey = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
        let script = """
            set -e
            cd '\(directory)'
            ca() {
              openssl req -x509 \(newKey) -keyout "$1.key" -out "$1.pem" -days 2 -subj "/CN=$2" \\
                -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null
            }
            leaf() {
              openssl req \(newKey) -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
              printf '%s\\n' "$3" > "$1.ext"
              openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 2 \\
                -extfile "$1.ext" 2>/dev/null
            }
            ca ca 'SMG Redis Test CA'
            ca other-ca 'Some Other CA'
            leaf server localhost 'subjectAltName=DNS:localhost,DNS:redis.test,IP:127.0.0.1
            extendedKeyUsage=serverAuth,clientAuth'
            leaf named redis.test 'subjectAltName=DNS:redis.test
            extendedKeyUsage=serverAuth,clientAuth'
            leaf client smg-gateway 'extendedKeyUsage=clientAuth'
            chmod 600 *.key
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        do {
            try p.run()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else { throw FixtureError("openssl failed with \(p.terminationStatus)") }
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }
}
