import XCTest
import Foundation
import NIOCore
@testable import SMTPServer

/// Runs a subprocess with a bounded wait; kills it on timeout. Returns (status, stdout+stderr).
func runProcess(_ path: String, _ arguments: [String], timeout: TimeInterval = 20) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("proc-\(UUID().uuidString).log")
    _ = FileManager.default.createFile(atPath: output.path, contents: nil)
    let handle = try FileHandle(forWritingTo: output)
    defer {
        try? handle.close()
        try? FileManager.default.removeItem(at: output)
    }
    process.standardOutput = handle
    process.standardError = handle
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning, Date() < deadline { usleep(20_000) }
    if process.isRunning {
        process.terminate()
        process.waitUntilExit()
        throw NSError(domain: "process-timeout", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(path) timed out"])
    }
    process.waitUntilExit()
    let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
    return (process.terminationStatus, text)
}

final class SwaksTests: XCTestCase {
    func testSwaksDeliversToServer() async throws {
        try await withServer { _, port, delegate in
            let (status, log) = try await Task.detached {
                try runProcess("/usr/bin/swaks", ["--server", "127.0.0.1:\(port)", "--to", "a@b.example",
                                                  "--from", "c@d.example", "--helo", "swaks.test",
                                                  "--header", "Subject: swaks test",
                                                  "--body", "Hello from swaks\n.leading dot\nend"])
            }.value
            XCTAssertEqual(status, 0, log)
            XCTAssertTrue(log.contains("<-  250 2.0.0 Ok: queued as 1"), log)
            XCTAssertEqual(delegate.deliveries.count, 1)
            let delivery = try XCTUnwrap(delegate.deliveries.first)
            XCTAssertEqual(delivery.envelope.reversePath, "c@d.example")
            XCTAssertEqual(delivery.envelope.recipients, ["a@b.example"])
            XCTAssertEqual(delivery.session.heloName, "swaks.test")
            let message = String(buffer: delivery.message)
            XCTAssertTrue(message.contains("Subject: swaks test\r\n"), message)
            XCTAssertTrue(message.contains("\r\n\r\nHello from swaks\r\n.leading dot\r\nend\r\n"), message)
            XCTAssertTrue(message.hasSuffix("\r\n"))
            XCTAssertFalse(message.contains("\n\n"))
        }
    }
}
