import Foundation
import Wire

/// One background computation at a time, on one long-lived thread (until `close`); the main
/// thread takes its result. The thread is made once: creating one per assignment put the
/// scheduler's start-up of a new thread into every step. A finished computation also makes
/// `wakeDescriptor` readable, so the main thread can sleep in its socket poll and still take the
/// result at once.
final class ComputationSlot: @unchecked Sendable {
    // Sendable: every field is guarded by `lock`, which is signalled when a job is handed over,
    // when a computation ends, and at close.
    private let lock = NSCondition()
    private var busy = false
    /// A finished computation: its run, step and message, and when its assignment arrived.
    typealias Outcome = (runID: UInt64, step: Int, message: Message, receivedAt: Double)
    typealias Body = @Sendable () throws -> (Int, Message)

    private var result: Outcome?
    /// Parts of a computation's results it handed out before finishing (`post`), oldest first.
    private var streamed: [Streamed] = []
    /// Slices `slices` of a training computation's partial sums, final while it still runs.
    typealias Streamed = (runID: UInt64, step: Int, slices: Range<Int>, values: [TreeNode: GradientBuffer])
    private var job: (runID: UInt64, receivedAt: Double, body: Body)?
    private var closed = false
    /// A pipe whose read end becomes readable when a computation finishes (drained by `take`).
    private let wakePipe: (read: Int32, write: Int32)

    init() {
        var ends: [Int32] = [-1, -1]
        if pipe(&ends) == 0 {
            for end in ends {
                _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
                _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            }
        }
        wakePipe = (ends[0], ends[1])
        Thread.detachNewThread { [self] in serve() }
    }

    deinit {
        if wakePipe.read >= 0 { Glibc.close(wakePipe.read); Glibc.close(wakePipe.write) }
    }

    /// A descriptor that is readable while a finished result waits to be taken (-1 when the
    /// pipe could not be made: then the caller must poll `take` itself).
    var wakeDescriptor: Int32 { wakePipe.read }

    /// Whether a computation runs or its result waits to be taken: either way the slot is taken.
    /// (A job started while a result waited replaced that result: a worker given two assignments
    /// of one step, its own and a recomputation, lost the first and its step waited for ever.)
    var isBusy: Bool { lock.withLock { busy || result != nil } }

    /// Runs `body` on the computation thread for the assignment that arrived at `receivedAt`.
    func start(runID: UInt64, receivedAt: Double, _ body: @escaping Body) {
        lock.withLock {
            precondition(!busy && result == nil && !closed, "a computation was started while another ran or its result waited, or after close")
            busy = true
            job = (runID, receivedAt, body)
            lock.broadcast()
        }
    }

    /// The computation thread: runs each job handed over until `close`.
    private func serve() {
        while true {
            let next: (runID: UInt64, receivedAt: Double, body: Body)? = lock.withLock {
                while job == nil && !closed { lock.wait() }
                defer { job = nil }
                return job
            }
            guard let (runID, receivedAt, body) = next else { return }
            let outcome: Outcome
            do {
                let (step, message) = try body()
                outcome = (runID, step, message, receivedAt)
            } catch {
                let failure = error is SampleFailure
                    ? Message.error(WireFailure(code: SampleFailure.code, text: "\(error)"))
                    : Message.error(WireFailure(code: 500, text: "computation failed: \(error)"))
                outcome = (runID, 0, failure, receivedAt)
            }
            finish(with: outcome)
        }
    }

    private func finish(with outcome: Outcome) {
        lock.withLock {
            result = outcome
            busy = false
            lock.broadcast()
        }
        wake()
    }

    /// Hands part of the running computation's results to the main thread (from the computation
    /// thread), which takes it with `takeStreamed`.
    func post(_ part: Streamed) {
        lock.withLock { streamed.append(part) }
        wake()
    }

    private func wake() {
        if wakePipe.write >= 0 {
            var byte: UInt8 = 1
            // A full pipe already wakes the reader; nothing is lost by a write that does not fit.
            _ = write(wakePipe.write, &byte, 1)
        }
    }

    /// Returns once no computation runs (at once when none does).
    func waitUntilIdle() {
        lock.withLock {
            while busy { lock.wait() }
        }
    }

    /// Lets the computation thread end once the computation in flight (if any) is done.
    func close() {
        lock.withLock {
            closed = true
            lock.broadcast()
        }
    }

    /// The parts posted since the last call, oldest first. Call it after `take`: every part a
    /// computation posts comes before its result, and one posted after `take` drained the pipe
    /// wakes it again.
    func takeStreamed() -> [Streamed] {
        lock.withLock {
            defer { streamed.removeAll() }
            return streamed
        }
    }

    /// The finished result, if any (a failed computation comes back as an error message).
    func take() -> Outcome? {
        var byte: UInt8 = 0
        while wakePipe.read >= 0, read(wakePipe.read, &byte, 1) > 0 {}
        return lock.withLock {
            defer { result = nil }
            return result
        }
    }
}
