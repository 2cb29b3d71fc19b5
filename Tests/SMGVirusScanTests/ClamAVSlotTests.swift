import XCTest
import Foundation
@testable import SMGClamAV

/// A scan that timed out keeps its slot until libclamav really returns, so retries cannot pile
/// up scans that still run; a scan that finds every slot taken fails with a temporary error.
final class ClamAVSlotTests: XCTestCase {
    func testTimedOutScanKeepsItsSlotUntilLibclamavReturns() async throws {
        let service = ClamAVService(databaseDirectory: shippedDatabase, slots: 1, logger: logger)
        await service.reloadIfChanged()
        XCTAssertEqual(service.slots, 1)
        XCTAssertEqual(service.busySlots, 0)
        // 60 MB take libclamav far longer than 1 ms.
        let big = Array(repeating: UInt8(0x41), count: 60_000_000)
        do {
            _ = try await service.scan(big, timeout: .milliseconds(1))
            XCTFail("expected a timeout")
        } catch let error as ClamAVError { XCTAssertEqual(error.code, .timeout) }
        XCTAssertEqual(service.busySlots, 1, "the timed-out scan still runs and holds its slot")

        // A retry now waits for the slot at most its timeout, then fails temporarily (not a verdict).
        let started = ContinuousClock.now
        do {
            _ = try await service.scan(eicar, timeout: .milliseconds(30))
            XCTFail("expected all slots busy")
        } catch let error as ClamAVError { XCTAssertEqual(error.code, .busy) }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(2), "fails fast")
        XCTAssertEqual(service.busySlots, 1, "the waiter gave nothing back it did not have")

        // Once libclamav returns the slot is free again; nothing leaked.
        let deadline = ContinuousClock.now + .seconds(60)
        while service.busySlots > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        XCTAssertEqual(service.busySlots, 0)
        let (verdict, _) = try await service.scan(eicar, timeout: .seconds(30))
        guard case .infected = verdict else { return XCTFail("expected EICAR, got \(verdict)") }
        XCTAssertEqual(service.busySlots, 0)
    }

    func testWaitingScansGetFreedSlotsInTurn() async throws {
        let service = ClamAVService(databaseDirectory: shippedDatabase, slots: 2, logger: logger)
        await service.reloadIfChanged()
        // Eight scans on two slots: all finish (the waiters get slots as they free up), none leaks.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    let (verdict, _) = try await service.scan(eicar,
                                                              timeout: .seconds(60))
                    guard case .infected = verdict else { throw ClamAVError(code: .scanFailed, message: "\(verdict)") }
                }
            }
            try await group.waitForAll()
        }
        XCTAssertEqual(service.busySlots, 0)
    }
}
