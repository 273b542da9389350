import Foundation

/// Who computes which micro-batch of a task (a training step or an evaluation pass), as a pure
/// state machine: events in (a worker joined, was heard from, left; results arrived; the clock
/// ticked), decisions out (assign, copy to a backup, accept, refuse, declare dead, complete,
/// stop). It has no sockets and no clock of its own (every event comes with the time), so every
/// fault a run can meet is testable by feeding it events.
///
/// The rules it owns:
/// - Work is cut into contiguous runs sized by the workers' threads, so that runs line up with
///   the reduction tree and workers send few, large partial sums.
/// - A worker silent for longer than `workerTimeout` is dead; the micro-batches only it was
///   computing go to the others (or to the next worker to join).
/// - Stragglers: once some worker is idle and the task has taken more than twice as long as that
///   worker needed, every slow worker's remaining micro-batches are copied to the idle ones. The
///   first copy to arrive counts; every copy has the same bits.
/// - A worker may only report micro-batches it was given (and not since taken back).
/// - Non-finite results follow `NonFinitePolicy` through `NonFiniteGuard`.
/// - With no worker alive for `joinTimeout` seconds the task cannot finish: stop.
public struct StepScheduler {
    public struct Settings: Sendable, Equatable {
        public var workerTimeout: Double
        public var joinTimeout: Double
        public var nonFinite: NonFinitePolicy
        /// The shortest wait before stragglers get backup copies, however fast the first worker was.
        public var minimumPatience: Double

        public init(workerTimeout: Double, joinTimeout: Double, nonFinite: NonFinitePolicy, minimumPatience: Double = 0.2) {
            self.workerTimeout = workerTimeout
            self.joinTimeout = joinTimeout
            self.nonFinite = nonFinite
            self.minimumPatience = minimumPatience
        }
    }

    /// The most threads a worker is counted with, whatever its hello claims: enough for any
    /// machine, and small enough that sums of thread counts cannot overflow.
    public static let maximumThreads = 4096

    public enum Event: Equatable, Sendable {
        /// A worker joined; `name` is for messages only.
        case joined(worker: UInt32, name: String, threads: Int)
        /// Any message arrived from the worker.
        case heard(worker: UInt32)
        /// The worker is gone (it said goodbye, failed, was evicted or cannot be reached).
        case left(worker: UInt32, reason: String)
        /// Finite results for these micro-batches of the current task arrived from the worker.
        case results(worker: UInt32, microBatches: Set<Int>)
        /// Results with NaN or infinity (`finding` says where) for these micro-batches.
        case nonFinite(worker: UInt32, microBatches: Set<Int>, finding: String)
        /// Time passed: check for silent workers, stragglers and an empty pool.
        case tick
        /// Results already taken for these micro-batches are lost (the sharded reduction: a dead
        /// worker's partial sums may not have reached their owners): compute them again.
        case redo(microBatches: Set<Int>)
    }

    public enum Decision: Equatable, Sendable {
        /// Send the worker these micro-batches of the current task (with the weights it lacks).
        case assign(worker: UInt32, microBatches: [Int])
        /// The same as `assign`, as backup copies of a straggler's micro-batches.
        case backup(worker: UInt32, microBatches: [Int], straggler: UInt32, waited: Double, firstFinished: Double)
        /// Take the worker's results for these micro-batches: nobody had delivered them yet.
        case accept(worker: UInt32, microBatches: [Int])
        /// The worker's results are refused (answer it); a `dead` decision for it follows.
        case refuse(worker: UInt32, reason: String)
        /// Its non-finite results are refused and these micro-batches are computed again elsewhere.
        case recompute(worker: UInt32, microBatches: [Int], report: String)
        /// The worker is out of the pool; `reassigned` are the micro-batches nobody else computes.
        case dead(worker: UInt32, reason: String, reassigned: [Int])
        /// No worker is alive; the task waits up to `joinTimeout` for one to join.
        case waitingForWorkers
        /// Every micro-batch of the task has a result.
        case complete
        /// The task cannot finish: the run must stop, keeping the weights of the last whole step.
        case stop(StopReason)
    }

    public enum StopReason: Equatable, Sendable {
        /// Non-finite gradients the policy does not recompute: the report to give.
        case diverged(String)
        /// No worker alive for this many seconds.
        case noWorkers(seconds: Double)
    }

    /// A worker as the scheduler sees it.
    public struct Participant: Equatable, Sendable {
        public let id: UInt32
        public let name: String
        public let threads: Int
        public var lastHeard: Double
        /// Micro-batches of the current task given to it and not yet delivered by anyone.
        public var outstanding: Set<Int> = []
        /// Every micro-batch of the current task it may report.
        public var given: Set<Int> = []

        /// `w3 (node07)`, as in every message about it.
        public var label: String { "w\(id) (\(name))" }
    }

    /// When things happened in a task, for reports.
    public struct Timeline: Equatable, Sendable {
        public var startedAt: Double
        /// When each worker was first given work, and when its last result came.
        public var assignedAt: [UInt32: Double] = [:]
        public var finishedAt: [UInt32: Double] = [:]
        /// When every micro-batch had been handed out once.
        public var allAssignedAt: Double?
        /// When the first worker had nothing left to do.
        public var firstIdleAt: Double?
    }

    private struct Task {
        let step: Int
        let total: Int
        var unassigned: Set<Int>
        var delivered: Set<Int> = []
        var timeline: Timeline
        /// Workers whose remaining micro-batches were already copied to others.
        var backedUp: Set<UInt32> = []
        var waitingSince: Double?
    }

    public let settings: Settings
    private var participants: [UInt32: Participant] = [:]
    private var task: Task?
    private let nonFiniteGuard: NonFiniteGuard

    public init(settings: Settings) {
        self.settings = settings
        nonFiniteGuard = NonFiniteGuard(policy: settings.nonFinite)
    }

    /// The live workers, by id.
    public var workers: [Participant] { participants.values.sorted { $0.id < $1.id } }
    public var workerCount: Int { participants.count }
    public subscript(worker: UInt32) -> Participant? { participants[worker] }

    /// Whether a task is running and every micro-batch of it has a result.
    public var isTaskComplete: Bool { task.map { $0.delivered.count == $0.total } ?? false }

    /// Starts a task of `microBatches` micro-batches (the step number is for messages) and hands
    /// them out to the workers alive.
    public mutating func begin(step: Int, microBatches: Int, at now: Double) -> [Decision] {
        precondition(microBatches > 0, "a task needs at least one micro-batch")
        task = Task(step: step, total: microBatches, unassigned: Set(0..<microBatches), timeline: Timeline(startedAt: now))
        nonFiniteGuard.reset(step: step)
        for id in participants.keys {
            participants[id]!.outstanding = []
            participants[id]!.given = []
        }
        return schedule(at: now)
    }

    /// Ends the current task and returns when things happened in it.
    public mutating func end() -> Timeline? {
        defer { task = nil }
        return task?.timeline
    }

    /// Applies `event`; returns what the caller must do, in order.
    public mutating func handle(_ event: Event, at now: Double) -> [Decision] {
        switch event {
        case .joined(let id, let name, let threads):
            participants[id] = Participant(id: id, name: name, threads: min(max(threads, 1), Self.maximumThreads), lastHeard: now)
            task?.waitingSince = nil
            return schedule(at: now)
        case .heard(let id):
            participants[id]?.lastHeard = now
            return []
        case .left(let id, let reason):
            return remove(id, reason: reason, at: now)
        case .results(let id, let microBatches):
            if let refusal = refuseUnless(id, wasGiven: microBatches, at: now) { return refusal }
            return deliver(microBatches, from: id, at: now)
        case .nonFinite(let id, let microBatches, let finding):
            if let refusal = refuseUnless(id, wasGiven: microBatches, at: now) { return refusal }
            return refuseNonFinite(microBatches, from: id, finding: finding, at: now)
        case .redo(let microBatches):
            guard var task else { return [] }
            let again = microBatches.intersection(task.delivered)
            task.delivered.subtract(again)
            task.unassigned.formUnion(again)
            self.task = task
            return schedule(at: now)
        case .tick:
            var decisions: [Decision] = []
            for worker in workers where now - worker.lastHeard > settings.workerTimeout {
                let silence = String(format: "%.1f", now - worker.lastHeard)
                decisions += remove(worker.id, reason: "silent for \(silence) s, more than distributed.worker_timeout", at: now)
            }
            return decisions + schedule(at: now)
        }
    }

    // MARK: Membership

    private mutating func remove(_ id: UInt32, reason: String, at now: Double) -> [Decision] {
        guard let worker = participants.removeValue(forKey: id) else { return [] }
        guard var task else { return [.dead(worker: id, reason: reason, reassigned: [])] }
        // Micro-batches another worker is also computing (a backup copy) are not lost.
        let stillComputed = participants.values.reduce(into: Set<Int>()) { $0.formUnion($1.outstanding) }
        let lost = worker.outstanding.subtracting(stillComputed).subtracting(task.delivered)
        task.unassigned.formUnion(lost)
        self.task = task
        return [.dead(worker: id, reason: reason, reassigned: lost.sorted())] + schedule(at: now)
    }

    // MARK: Results

    /// Refuses (and removes) a worker reporting micro-batches it was not given, or none at all.
    private mutating func refuseUnless(_ id: UInt32, wasGiven microBatches: Set<Int>, at now: Double) -> [Decision]? {
        guard let worker = participants[id], task != nil else { return [] }
        guard !microBatches.isEmpty else {
            return [.refuse(worker: id, reason: "results that cover no micro-batch")] + remove(id, reason: "it sent invalid results", at: now)
        }
        guard let stray = microBatches.subtracting(worker.given).min() else { return nil }
        return [.refuse(worker: id, reason: "result for micro-batch \(stray), which it was not given")]
            + remove(id, reason: "it sent invalid results", at: now)
    }

    private mutating func deliver(_ microBatches: Set<Int>, from id: UInt32, at now: Double) -> [Decision] {
        guard var task else { return [] }
        let fresh = microBatches.subtracting(task.delivered)
        task.delivered.formUnion(microBatches)
        task.unassigned.subtract(microBatches)
        task.timeline.finishedAt[id] = now
        for other in participants.keys { participants[other]!.outstanding.subtract(microBatches) }
        if task.timeline.firstIdleAt == nil && participants[id]!.outstanding.isEmpty { task.timeline.firstIdleAt = now }
        self.task = task
        var decisions: [Decision] = fresh.isEmpty ? [] : [.accept(worker: id, microBatches: fresh.sorted())]
        if task.delivered.count == task.total { return fresh.isEmpty ? [] : decisions + [.complete] }
        decisions += schedule(at: now)
        return decisions
    }

    private mutating func refuseNonFinite(_ microBatches: Set<Int>, from id: UInt32, finding: String, at now: Double) -> [Decision] {
        guard var task, let worker = participants[id] else { return [] }
        let decision = nonFiniteGuard.record(
            step: task.step, microBatches: microBatches.sorted(), workerID: id, workerLabel: worker.label, finding: finding,
            aliveWorkerIDs: Set(participants.keys))
        switch decision {
        case .stop(let report):
            return [.stop(.diverged(report))]
        case .recompute(let report):
            // Its answer for these micro-batches is spent: a second, finite answer from the same
            // worker (a hostile one trying again) is refused like any result for work not given.
            participants[id]!.given.subtract(microBatches)
            for other in participants.keys { participants[other]!.outstanding.subtract(microBatches) }
            task.unassigned.formUnion(microBatches.subtracting(task.delivered))
            self.task = task
            return [.recompute(worker: id, microBatches: microBatches.sorted(), report: report)] + schedule(at: now)
        }
    }

    // MARK: Assignment

    private mutating func schedule(at now: Double) -> [Decision] {
        guard var task, task.delivered.count < task.total else { return [] }
        guard !participants.isEmpty else {
            guard let since = task.waitingSince else {
                task.waitingSince = now
                self.task = task
                return [.waitingForWorkers]
            }
            return now - since > settings.joinTimeout ? [.stop(.noWorkers(seconds: settings.joinTimeout))] : []
        }
        var decisions: [Decision] = []
        for (id, microBatches) in split(task.unassigned.sorted(), step: task.step) {
            give(microBatches, to: id, at: now)
            decisions.append(.assign(worker: id, microBatches: microBatches))
        }
        if self.task!.unassigned.isEmpty && self.task!.timeline.allAssignedAt == nil { self.task!.timeline.allAssignedAt = now }
        return decisions + backupCopies(at: now)
    }

    private mutating func give(_ microBatches: [Int], to id: UInt32, at now: Double) {
        participants[id]!.outstanding.formUnion(microBatches)
        participants[id]!.given.formUnion(microBatches)
        task!.unassigned.subtract(microBatches)
        if task!.timeline.assignedAt[id] == nil { task!.timeline.assignedAt[id] = now }
    }

    /// Cuts `microBatches` (in order) into contiguous runs, one per worker, sized by threads. A
    /// micro-batch some worker already returned non-finite goes to the first worker that has
    /// not; when every live worker has, to the first one, whose second non-finite answer then
    /// proves that the model diverged.
    private func split(_ microBatches: [Int], step: Int) -> [(UInt32, [Int])] {
        let workers = self.workers
        guard !workers.isEmpty, !microBatches.isEmpty else { return [] }
        var pieces: [UInt32: [Int]] = [:]
        var ordinary: [Int] = []
        for index in microBatches {
            let excluded = nonFiniteGuard.excludedWorkers(step: step, microBatch: index)
            if excluded.isEmpty {
                ordinary.append(index)
            } else {
                let target = workers.first { !excluded.contains($0.id) } ?? workers[0]
                pieces[target.id, default: []].append(index)
            }
        }
        for (id, run) in Self.contiguousRuns(ordinary, among: workers) { pieces[id, default: []] += run }
        return workers.compactMap { worker in pieces[worker.id].map { (worker.id, $0.sorted()) } }
    }

    private mutating func backupCopies(at now: Double) -> [Decision] {
        guard let task, task.unassigned.isEmpty, let idleAt = task.timeline.firstIdleAt else { return [] }
        let started = task.timeline.startedAt
        guard now - started > max(2 * (idleAt - started), settings.minimumPatience) else { return [] }
        // Both lists are taken before any copy is given, so no worker is its own backup.
        let idle = workers.filter { $0.outstanding.isEmpty }
        let slow = workers.filter { !$0.outstanding.isEmpty && !task.backedUp.contains($0.id) }
        guard !idle.isEmpty, !slow.isEmpty else { return [] }
        var decisions: [Decision] = []
        for straggler in slow {
            self.task!.backedUp.insert(straggler.id)
            for (helper, copies) in Self.contiguousRuns(straggler.outstanding.sorted(), among: idle) {
                give(copies, to: helper, at: now)
                decisions.append(.backup(worker: helper, microBatches: copies, straggler: straggler.id,
                                         waited: now - started, firstFinished: idleAt - started))
            }
        }
        return decisions
    }

    /// Cuts `items` (in order) into contiguous runs, one per worker in order, sized by threads;
    /// a worker whose share rounds to nothing gets no run.
    static func contiguousRuns(_ items: [Int], among workers: [Participant]) -> [(UInt32, [Int])] {
        let totalThreads = workers.reduce(0) { $0 + $1.threads }
        var runs: [(UInt32, [Int])] = []
        var start = 0
        var threadsSoFar = 0
        for worker in workers {
            threadsSoFar += worker.threads
            let end = items.count * threadsSoFar / totalThreads
            if end > start { runs.append((worker.id, Array(items[start..<end]))) }
            start = end
        }
        return runs
    }
}
