// smg-redis-bench: what the TLS relay (hiredis ↔ socketpair ↔ NIOSSL) costs per Redis command,
// against plain TCP. Needs two running servers (bench/redis/run.sh starts them):
//
//     smg-redis-bench <plain redis:// URL> <rediss:// URL> <CA file> [rounds]
//
// Prints, for each: blocking PING and SET (100 B) round trips on one connection, and the
// throughput of a pool of 8 connections with 64 concurrent callers.
import SMGRedis
import Logging
import Foundation

let args = CommandLine.arguments
guard args.count >= 4 else {
    FileHandle.standardError.write(Data("usage: smg-redis-bench <redis://…> <rediss://…> <ca.pem> [rounds]\n".utf8))
    exit(64)
}
let rounds = args.count > 4 ? Int(args[4]) ?? 20_000 : 20_000
var logger = Logger(label: "smg-redis-bench")
logger.logLevel = .error

func perCall(_ d: Duration, _ n: Int) -> Double {
    (Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18) * 1e6 / Double(n)
}

var plain = try RedisEndpoint(url: args[1])
var secure = try RedisEndpoint(url: args[2])
secure.tls = try RedisTLS(caFile: args[3])
plain.tls = nil

print("rounds: \(rounds) (one connection, blocking), pool: 8 connections × 64 callers")
print("endpoint  PING µs  SET µs  pool PING/s")
for (name, endpoint) in [("plain", plain), ("TLS", secure)] {
    let conn = try RedisConnection(endpoint: endpoint, timeout: .seconds(5))
    for _ in 0..<1000 { _ = try conn.command(["PING"]) }
    let clock = ContinuousClock()
    let ping = try clock.measure { for _ in 0..<rounds { _ = try conn.command(["PING"]) } }
    let value = RedisArg(Array(repeating: UInt8(ascii: "x"), count: 100))
    let set = try clock.measure {
        for i in 0..<rounds { _ = try conn.command(["SET", RedisArg("bench:\(i % 1000)"), value]) }
    }
    conn.close()

    let client = RedisClient(endpoint: endpoint, poolSize: 8, timeout: .seconds(5), logger: logger)
    let total = rounds * 4
    let pool = try await clock.measure {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<64 {
                group.addTask {
                    for _ in stride(from: worker, to: total, by: 64) { _ = try await client.command("PING") }
                }
            }
            try await group.waitForAll()
        }
    }
    client.close()
    let rate = Double(total) / (Double(pool.components.seconds) + Double(pool.components.attoseconds) / 1e18)
    let label = name.padding(toLength: 8, withPad: " ", startingAt: 0)
    print(label + String(format: "  %7.1f  %6.1f  %11.0f", perCall(ping, rounds), perCall(set, rounds), rate))
}
