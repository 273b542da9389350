import Foundation
import Wire

/// One background computation at a time; the main thread polls for its result.
final class ComputationSlot: @unchecked Sendable {
    // Sendable: every field is guarded by `lock`, which is signalled when a computation ends.
    private let lock = NSCondition()
    private var busy = false
    /// A finished computation: its run, step and message, and when its assignment arrived.
    typealias Outcome = (runID: UInt64, step: Int, message: Message, receivedAt: Double)


    private var result: Outcome?
    private var runID: UInt64 = 0

    var isBusy: Bool { lock.withLock { busy } }

    /// Runs `body` on a new thread for the assignment that arrived at `receivedAt`.
    func start(runID: UInt64, receivedAt: Double, _ body: @escaping @Sendable () throws -> (Int, Message)) {
        lock.withLock { busy = true; self.runID = runID }
        Thread.detachNewThread { [self] in
            do {
                let (step, message) = try body()
                finish(with: (runID, step, message, receivedAt))
            } catch {
                let failure = error is SampleFailure
                    ? Message.error(WireFailure(code: SampleFailure.code, text: "\(error)"))
                    : Message.error(WireFailure(code: 500, text: "computation failed: \(error)"))
                finish(with: (runID, 0, failure, receivedAt))
            }
        }
    }

    private func finish(with outcome: Outcome) {
        lock.withLock {
            result = outcome
            busy = false
            lock.broadcast()
        }
    }

    /// Returns once no computation runs (at once when none does).
    func waitUntilIdle() {
        lock.withLock {
            while busy { lock.wait() }
        }
    }

    /// The finished result, if any (a failed computation comes back as an error message).
    func take() -> Outcome? {
        lock.withLock {
            defer { result = nil }
            return result
        }
    }
}
