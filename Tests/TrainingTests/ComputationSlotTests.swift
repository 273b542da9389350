import Foundation
import Wire
import XCTest
@testable import Training

/// The worker's computation thread: one long-lived thread runs every assignment, and a finished
/// one wakes the main thread's poll through the slot's descriptor.
final class ComputationSlotTests: XCTestCase {
    private final class ThreadNames: @unchecked Sendable {
        private let lock = NSLock()
        private var seen: Set<UInt> = []
        func note() { lock.withLock { _ = seen.insert(UInt(pthread_self())) } }
        var count: Int { lock.withLock { seen.count } }
    }

    private func readable(_ descriptor: Int32, waitingUpTo milliseconds: Int32) -> Bool {
        var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, milliseconds) == 1 && entry.revents & Int16(POLLIN) != 0
    }

    func testAFinishedComputationWakesThePollAndTakingItQuietsTheDescriptor() throws {
        let slot = ComputationSlot()
        defer { slot.close() }
        XCTAssertGreaterThanOrEqual(slot.wakeDescriptor, 0)
        XCTAssertFalse(readable(slot.wakeDescriptor, waitingUpTo: 0))
        let threads = ThreadNames()
        for step in 1...3 {
            let release = DispatchSemaphore(value: 0)
            slot.start(runID: 7, receivedAt: 0) {
                threads.note()
                release.wait()
                return (step, .heartbeat(Heartbeat(sentAtMilliseconds: 0, busy: false)))
            }
            XCTAssertTrue(slot.isBusy)
            XCTAssertFalse(readable(slot.wakeDescriptor, waitingUpTo: 20), "woke before the computation finished")
            release.signal()
            XCTAssertTrue(readable(slot.wakeDescriptor, waitingUpTo: 5000), "a finished computation did not wake the poll")
            let outcome = try XCTUnwrap(slot.take())
            XCTAssertEqual(outcome.step, step)
            XCTAssertEqual(outcome.runID, 7)
            XCTAssertFalse(slot.isBusy)
            XCTAssertFalse(readable(slot.wakeDescriptor, waitingUpTo: 0), "the descriptor stayed readable after take")
            XCTAssertNil(slot.take())
        }
        XCTAssertEqual(threads.count, 1, "each computation ran on a thread of its own")
    }

    /// A finished result holds the slot until it is taken: the worker starts its next assignment
    /// only when the slot is free, and a job started while a result waited used to replace it
    /// (HostilePeerTests' NaN test hung one run in ten: the honest worker's own part of a step
    /// was lost behind the recomputation it was given next).
    func testAResultNotYetTakenKeepsTheSlotBusy() throws {
        let slot = ComputationSlot()
        defer { slot.close() }
        slot.start(runID: 3, receivedAt: 0) { (5, .heartbeat(Heartbeat(sentAtMilliseconds: 0, busy: false))) }
        XCTAssertTrue(readable(slot.wakeDescriptor, waitingUpTo: 5000))
        slot.waitUntilIdle()
        XCTAssertTrue(slot.isBusy, "a finished result not yet taken must keep the slot busy")
        XCTAssertEqual(try XCTUnwrap(slot.take()).step, 5)
        XCTAssertFalse(slot.isBusy)
    }

    func testAFailedComputationComesBackAsAnErrorAndTheThreadServesTheNext() throws {
        struct Broken: Error {}
        let slot = ComputationSlot()
        defer { slot.close() }
        slot.start(runID: 1, receivedAt: 0) { throw Broken() }
        XCTAssertTrue(readable(slot.wakeDescriptor, waitingUpTo: 5000))
        guard case .error(let failure) = try XCTUnwrap(slot.take()).message else { return XCTFail("not an error message") }
        XCTAssertEqual(failure.code, 500)
        slot.start(runID: 1, receivedAt: 0) { (4, .heartbeat(Heartbeat(sentAtMilliseconds: 0, busy: false))) }
        slot.waitUntilIdle()
        XCTAssertEqual(try XCTUnwrap(slot.take()).step, 4)
    }
}
