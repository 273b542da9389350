import Training
import XCTest

/// The scheduler's rules, driven by events alone: no socket, no process, no clock.
final class StepSchedulerTests: XCTestCase {
    private typealias Decision = StepScheduler.Decision

    private func scheduler(policy: NonFinitePolicy = .recompute, timeout: Double = 10, joinTimeout: Double = 30) -> StepScheduler {
        StepScheduler(settings: .init(workerTimeout: timeout, joinTimeout: joinTimeout, nonFinite: policy))
    }

    private func assignments(_ decisions: [Decision]) -> [UInt32: [Int]] {
        decisions.reduce(into: [:]) { result, decision in
            switch decision {
            case .assign(let worker, let batches), .backup(let worker, let batches, _, _, _): result[worker, default: []] += batches
            default: break
            }
        }
    }

    private func join(_ ids: [UInt32], threads: [Int]? = nil, to scheduler: inout StepScheduler, at now: Double = 0) {
        for (position, id) in ids.enumerated() {
            _ = scheduler.handle(.joined(worker: id, name: "n\(id)", threads: threads?[position] ?? 1), at: now)
        }
    }

    func testWorkIsCutIntoContiguousRunsSizedByThreads() {
        var s = scheduler()
        join([0, 1], threads: [1, 3], to: &s)
        let decisions = s.begin(step: 0, microBatches: 8, at: 0)
        XCTAssertEqual(decisions, [.assign(worker: 0, microBatches: [0, 1]), .assign(worker: 1, microBatches: [2, 3, 4, 5, 6, 7])])
    }

    func testHugeThreadCountsNeitherOverflowNorStarveOthers() {
        var s = scheduler()
        join([0, 1, 2], threads: [Int.max, Int.max, 1], to: &s)
        let given = assignments(s.begin(step: 0, microBatches: 8193, at: 0))
        XCTAssertEqual(given.values.reduce(0) { $0 + $1.count }, 8193, "every micro-batch is given exactly once")
        XCTAssertEqual(Set(given.values.flatMap { $0 }).count, 8193)
        XCTAssertEqual(s[0]?.threads, StepScheduler.maximumThreads)
        XCTAssertEqual(given[2]?.count, 1, "the honest worker still gets its share")
    }

    func testAStepCompletesWhenEveryMicroBatchIsDeliveredAndDuplicatesAreNotAcceptedTwice() {
        var s = scheduler()
        join([0, 1], to: &s)
        _ = s.begin(step: 0, microBatches: 4, at: 0)
        XCTAssertEqual(s.handle(.results(worker: 0, microBatches: [0, 1]), at: 1), [.accept(worker: 0, microBatches: [0, 1])])
        XCTAssertFalse(s.isTaskComplete)
        XCTAssertEqual(s.handle(.results(worker: 1, microBatches: [2, 3]), at: 2), [.accept(worker: 1, microBatches: [2, 3]), .complete])
        XCTAssertTrue(s.isTaskComplete)
        let timeline = s.end()
        XCTAssertEqual(timeline?.assignedAt, [0: 0, 1: 0])
        XCTAssertEqual(timeline?.finishedAt, [0: 1, 1: 2])
        XCTAssertEqual(timeline?.firstIdleAt, 1)
    }

    func testAWorkerDyingMidStepLosesNothing() {
        var s = scheduler()
        join([0, 1, 2], to: &s)
        _ = s.begin(step: 5, microBatches: 6, at: 0)
        XCTAssertEqual(s.handle(.results(worker: 0, microBatches: [0, 1]), at: 1), [.accept(worker: 0, microBatches: [0, 1])])
        let decisions = s.handle(.left(worker: 1, reason: "killed"), at: 1.5)
        XCTAssertEqual(decisions.first, .dead(worker: 1, reason: "killed", reassigned: [2, 3]))
        XCTAssertEqual(assignments(decisions), [0: [2], 2: [3]], "cut among the live workers, as at the start of a step")
        _ = s.handle(.results(worker: 2, microBatches: [3, 4, 5]), at: 2)
        XCTAssertEqual(s.handle(.results(worker: 0, microBatches: [2]), at: 3).last, .complete)
    }

    func testMicroBatchesABackupIsAlsoComputingAreNotReassignedWhenTheStragglerDies() {
        var s = scheduler()
        join([0, 1], to: &s)
        _ = s.begin(step: 0, microBatches: 4, at: 0)
        _ = s.handle(.results(worker: 0, microBatches: [0, 1]), at: 1)
        XCTAssertEqual(assignments(s.handle(.tick, at: 2.5)), [0: [2, 3]], "backup copies of the straggler's work")
        XCTAssertEqual(s.handle(.left(worker: 1, reason: "killed"), at: 3), [.dead(worker: 1, reason: "killed", reassigned: [])])
    }

    func testALateJoinerGetsTheWorkOfAStepThatHadNoWorkers() {
        var s = scheduler(joinTimeout: 30)
        XCTAssertEqual(s.begin(step: 0, microBatches: 3, at: 0), [.waitingForWorkers])
        XCTAssertEqual(s.handle(.tick, at: 10), [], "the wait is announced once")
        let decisions = s.handle(.joined(worker: 4, name: "late", threads: 2), at: 12)
        XCTAssertEqual(decisions, [.assign(worker: 4, microBatches: [0, 1, 2])])
    }

    func testAJoinMidStepTakesWorkOnlyWhenSomeIsUnassigned() {
        var s = scheduler()
        join([0], to: &s)
        _ = s.begin(step: 0, microBatches: 2, at: 0)
        XCTAssertEqual(s.handle(.joined(worker: 1, name: "late", threads: 1), at: 0.1), [], "everything is already handed out")
        XCTAssertEqual(s.handle(.left(worker: 0, reason: "gone"), at: 0.2),
                       [.dead(worker: 0, reason: "gone", reassigned: [0, 1]), .assign(worker: 1, microBatches: [0, 1])])
    }

    func testStragglersGetBackupCopiesOnlyAfterTwiceTheFirstWorkersTime() {
        var s = scheduler()
        join([0, 1], to: &s)
        _ = s.begin(step: 0, microBatches: 4, at: 0)
        _ = s.handle(.results(worker: 0, microBatches: [0, 1]), at: 1)
        XCTAssertEqual(s.handle(.tick, at: 1.9), [], "patience is twice the first worker's time")
        let decisions = s.handle(.tick, at: 2.1)
        XCTAssertEqual(decisions, [.backup(worker: 0, microBatches: [2, 3], straggler: 1, waited: 2.1, firstFinished: 1)])
        XCTAssertEqual(s.handle(.tick, at: 5), [], "a straggler is backed up once")
        XCTAssertEqual(s.handle(.results(worker: 0, microBatches: [2, 3]), at: 3).last, .complete,
                       "the step completes with the copies, long before the straggler")
        XCTAssertEqual(s.handle(.results(worker: 1, microBatches: [2, 3]), at: 9), [], "the straggler's late copy adds nothing")
    }

    func testNoWorkerIsItsOwnBackup() {
        var s = scheduler()
        join([0, 1, 2], to: &s)
        _ = s.begin(step: 0, microBatches: 3, at: 0)
        _ = s.handle(.results(worker: 0, microBatches: [0]), at: 1)
        let decisions = s.handle(.tick, at: 3)
        XCTAssertEqual(decisions.count, 2)
        for case .backup(let helper, _, let straggler, _, _) in decisions {
            XCTAssertEqual(helper, 0, "only the idle worker takes copies")
            XCTAssertNotEqual(helper, straggler)
        }
        XCTAssertEqual(assignments(decisions), [0: [1, 2]])
    }

    func testASilentWorkerIsDeclaredDeadAfterTheTimeoutAndHeartbeatsKeepItAlive() {
        var s = scheduler(timeout: 5)
        join([0, 1], to: &s)
        _ = s.begin(step: 0, microBatches: 2, at: 0)
        _ = s.handle(.heard(worker: 1), at: 4)
        let decisions = s.handle(.tick, at: 6)
        guard case .dead(0, let reason, [0]) = decisions.first else { return XCTFail("\(decisions)") }
        XCTAssertTrue(reason.contains("silent for 6.0 s"), reason)
        XCTAssertEqual(s.workers.map(\.id), [1])
        XCTAssertEqual(assignments(decisions), [1: [0]])
    }

    func testANonFiniteResultIsRecomputedElsewhereAndASecondAnswerFromTheRefusedWorkerIsRefused() {
        var s = scheduler(policy: .recompute)
        join([0, 1], to: &s)
        _ = s.begin(step: 7, microBatches: 4, at: 0)
        let decisions = s.handle(.nonFinite(worker: 1, microBatches: [2, 3], finding: "NaN at 0.weight[0, 0]"), at: 1)
        guard case .recompute(1, [2, 3], let report) = decisions.first else { return XCTFail("\(decisions)") }
        for part in ["step 7", "w1 (n1)", "NaN or infinity", "[2, 3]", "0.weight", "another worker"] {
            XCTAssertTrue(report.contains(part), "\(part) in \(report)")
        }
        XCTAssertEqual(assignments(decisions), [0: [2, 3]], "never back to the worker that failed them")
        let second = s.handle(.results(worker: 1, microBatches: [2, 3]), at: 2)
        guard case .refuse(1, let why) = second.first else { return XCTFail("\(second)") }
        XCTAssertTrue(why.contains("which it was not given"), why)
        XCTAssertEqual(s.workers.map(\.id), [0])
    }

    func testEveryLiveWorkerFailingAMicroBatchStopsTheRun() {
        var s = scheduler(policy: .recompute)
        join([0, 1], to: &s)
        _ = s.begin(step: 2, microBatches: 2, at: 0)
        _ = s.handle(.nonFinite(worker: 0, microBatches: [0], finding: "NaN at 1.bias[3]"), at: 1)
        let decisions = s.handle(.nonFinite(worker: 1, microBatches: [0, 1], finding: "the loss is not finite"), at: 2)
        guard case .stop(.diverged(let report)) = decisions.first else { return XCTFail("\(decisions)") }
        XCTAssertTrue(report.contains("training diverged") && report.contains("w0 (n0), w1 (n1)"), report)
    }

    func testAMicroBatchEveryLiveWorkerFailedGoesBackToOneOfThemToProveTheDivergence() {
        var s = scheduler(policy: .recompute)
        join([0, 1], to: &s)
        _ = s.begin(step: 2, microBatches: 2, at: 0)
        _ = s.handle(.nonFinite(worker: 0, microBatches: [0], finding: "NaN"), at: 1)
        _ = s.handle(.results(worker: 1, microBatches: [1]), at: 1.1)
        let decisions = s.handle(.left(worker: 1, reason: "killed"), at: 1.2)
        XCTAssertEqual(assignments(decisions), [0: [0]], "no one else is left: a second non-finite answer stops the run")
        guard case .stop(.diverged) = s.handle(.nonFinite(worker: 0, microBatches: [0], finding: "NaN"), at: 2).first else {
            return XCTFail("the only live worker failed it twice")
        }
    }

    func testTheStopPolicyStopsAtTheFirstNonFiniteResult() {
        var s = scheduler(policy: .stop)
        join([0], to: &s)
        _ = s.begin(step: 9, microBatches: 1, at: 0)
        guard case .stop(.diverged(let report)) = s.handle(.nonFinite(worker: 0, microBatches: [0], finding: "NaN"), at: 1).first else {
            return XCTFail("stop means stop")
        }
        XCTAssertTrue(report.contains("nonfinite_gradients: stop") && report.contains("were not updated"), report)
    }

    func testResultsForWorkNotGivenOrForNothingAreRefusedAndTheWorkerRemoved() {
        var s = scheduler()
        join([0, 1], to: &s)
        _ = s.begin(step: 0, microBatches: 4, at: 0)
        let decisions = s.handle(.results(worker: 0, microBatches: [1, 3]), at: 1)
        XCTAssertEqual(decisions.first, .refuse(worker: 0, reason: "result for micro-batch 3, which it was not given"))
        XCTAssertEqual(decisions.dropFirst().first, .dead(worker: 0, reason: "it sent invalid results", reassigned: [0, 1]))
        XCTAssertEqual(assignments(decisions), [1: [0, 1]])
        let empty = s.handle(.results(worker: 1, microBatches: []), at: 2)
        XCTAssertEqual(empty.first, .refuse(worker: 1, reason: "results that cover no micro-batch"))
    }

    func testWhenEveryWorkerIsGoneTheTaskWaitsForTheJoinTimeoutThenStops() {
        var s = scheduler(joinTimeout: 30)
        join([0], to: &s)
        _ = s.begin(step: 0, microBatches: 2, at: 0)
        XCTAssertEqual(s.handle(.left(worker: 0, reason: "bye"), at: 1),
                       [.dead(worker: 0, reason: "bye", reassigned: [0, 1]), .waitingForWorkers])
        XCTAssertEqual(s.handle(.tick, at: 30), [])
        XCTAssertEqual(s.handle(.tick, at: 31.5), [.stop(.noWorkers(seconds: 30))])
    }

    func testEventsBetweenTasksOnlyChangeMembership() {
        var s = scheduler()
        XCTAssertEqual(s.handle(.joined(worker: 0, name: "a", threads: 1), at: 0), [])
        XCTAssertEqual(s.handle(.results(worker: 0, microBatches: [0]), at: 1), [])
        XCTAssertEqual(s.handle(.left(worker: 0, reason: "bye"), at: 2), [.dead(worker: 0, reason: "bye", reassigned: [])])
        XCTAssertEqual(s.workerCount, 0)
    }

    /// Random joins, deaths, stragglers and results over many tasks: every task completes, and
    /// every micro-batch is accepted exactly once, from a worker that was given it.
    func testRandomFaultsNeverLoseOrDoubleCountAMicroBatch() {
        for reportedSeed: UInt64 in [1, 2, 3, 42, 2026] { runRandomFaults(seed: reportedSeed) }
    }

    private func runRandomFaults(seed reportedSeed: UInt64) {
        var seed = reportedSeed
        func next(_ bound: Int) -> Int {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Int((seed >> 33) % UInt64(bound))
        }
        var s = scheduler(timeout: 1000, joinTimeout: 1e9)
        var nextID: UInt32 = 0
        var now = 0.0
        for _ in 0..<3 { _ = s.handle(.joined(worker: nextID, name: "w", threads: 1 + next(3)), at: now); nextID += 1 }
        for step in 0..<300 {
            let total = 1 + next(12)
            var accepted: [Int] = []
            var pending = s.begin(step: step, microBatches: total, at: now)
            var given: [UInt32: Set<Int>] = [:]
            var rounds = 0
            while !s.isTaskComplete {
                rounds += 1
                XCTAssertLessThan(rounds, 10_000, "seed \(reportedSeed): step \(step) never completes")
                if rounds >= 10_000 { return }
                for case let .assign(worker, batches) in pending { given[worker, default: []].formUnion(batches) }
                for case let .backup(worker, batches, _, _, _) in pending { given[worker, default: []].formUnion(batches) }
                for case let .accept(_, batches) in pending { accepted += batches }
                now += 0.1
                switch next(10) {
                case 0 where s.workerCount > 1:
                    let victim = s.workers[next(s.workerCount)].id
                    given[victim] = nil
                    pending = s.handle(.left(worker: victim, reason: "chaos"), at: now)
                case 1:
                    pending = s.handle(.joined(worker: nextID, name: "w", threads: 1 + next(3)), at: now)
                    nextID += 1
                case 2:
                    pending = s.handle(.tick, at: now)
                default:
                    let busy = s.workers.filter { !$0.outstanding.isEmpty }
                    guard !busy.isEmpty else { pending = s.handle(.tick, at: now); continue }
                    let worker = busy[next(busy.count)]
                    let batches = Set(worker.outstanding.sorted().prefix(1 + next(3)))
                    XCTAssertTrue(batches.isSubset(of: given[worker.id] ?? []), "seed \(reportedSeed)")
                    pending = s.handle(.results(worker: worker.id, microBatches: batches), at: now)
                }
            }
            for case let .accept(_, batches) in pending { accepted += batches }
            XCTAssertEqual(accepted.sorted(), Array(0..<total), "seed \(reportedSeed): step \(step)")
            _ = s.end()
        }
    }
}
