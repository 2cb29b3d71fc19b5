import Foundation
import SMGDKIM

/// smg-dkim-bench — DKIM signatures per second on one core (one thread), RSA-2048 and Ed25519,
/// for a typical message (8 headers, 4 KiB body), and the raw private-key operation alone, so the
/// figures can be set against `openssl speed rsa2048 ed25519` (see run.sh and bench/README.md).
/// Usage: smg-dkim-bench [seconds-per-case (default 3)] [--json]

let seconds = Double(CommandLine.arguments.dropFirst().first { Double($0) != nil } ?? "3") ?? 3
let json = CommandLine.arguments.contains("--json")

var body = ""
while body.utf8.count < 4096 { body += "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n" }
let message = Array(("""
    Received: from app1.customer.example (app1.customer.example [192.0.2.1]) by smg.example\r
    From: Alice Example <alice@customer.example>\r
    To: Bob <bob@example.net>\r
    Subject: Quarterly report\r
    Date: Mon, 23 Nov 2026 05:00:00 +0000\r
    Message-ID: <20261123050000.1234@customer.example>\r
    MIME-Version: 1.0\r
    Content-Type: text/plain; charset=utf-8\r
    \r

    """ + body).utf8)

func measure(_ name: String, _ work: () throws -> Void) rethrows -> Double {
    for _ in 0..<20 { try work() }   // warm up
    var count = 0
    let clock = ContinuousClock()
    let start = clock.now
    let limit = Duration.milliseconds(Int64(seconds * 1000))
    while clock.now - start < limit {
        for _ in 0..<10 { try work() }
        count += 10
    }
    let elapsed = clock.now - start
    let perSecond = Double(count) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    if !json { print("\(name.padding(toLength: 44, withPad: " ", startingAt: 0)) \(String(format: "%10.0f", perSecond)) /s") }
    return perSecond
}

let rsa = DKIMSigningKey(domain: "customer.example", selector: "rsa", key: try .generate(.rsaSHA256, bits: 2048))
let ed = DKIMSigningKey(domain: "customer.example", selector: "ed", key: try .generate(.ed25519SHA256))
let signer = DKIMSigner()
let time = Int(Date().timeIntervalSince1970)
var results: [String: Double] = [:]
results["sign_rsa2048"] = try measure("DKIM sign, rsa-sha256 2048 (4 KiB message)") {
    _ = try signer.sign(DKIMMessage(message), keys: [rsa], time: time)
}
results["sign_ed25519"] = try measure("DKIM sign, ed25519-sha256 (4 KiB message)") {
    _ = try signer.sign(DKIMMessage(message), keys: [ed], time: time)
}
results["sign_both"] = try measure("DKIM sign, both keys (one message)") {
    _ = try signer.sign(DKIMMessage(message), keys: [ed, rsa], time: time)
}
results["min_rsa2048"] = try measure("DKIM sign, rsa-sha256, minimal message") {
    _ = try signer.sign(DKIMMessage(Array("From: a@b.example\r\n\r\n".utf8)), keys: [rsa], time: time)
}
results["min_ed25519"] = try measure("DKIM sign, ed25519-sha256, minimal message") {
    _ = try signer.sign(DKIMMessage(Array("From: a@b.example\r\n\r\n".utf8)), keys: [ed], time: time)
}
results["canonicalize_hash_only"] = measure("parse + canonicalize + body hash (no key op)") {
    let m = DKIMMessage(message)
    _ = signer.headerList(for: m)
    _ = DKIMCanonicalization.relaxed.canonicalizeBody(m.body)
}
if json {
    let data = try JSONSerialization.data(withJSONObject: results, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}
