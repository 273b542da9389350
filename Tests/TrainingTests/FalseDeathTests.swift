import CNN
import Foundation
import Logging
import PeerSecurity
import Training
import Wire
import XCTest

/// A worker the coordinator gave up on may be alive: stopped for a while, cut off, or slow. What
/// it says next is answered with "join again", never held against it, however often it happens;
/// a worker that is declared dead every few seconds must not end up banned (the chaos soak found
/// honest workers ignored for 60 s after twenty messages sent while given up).
///
/// The scripted peers speak the central strategy's part (they take work and send gradients, and
/// never listen for peers), so these runs are `central`; `ChaosSoakTests` kill sharded members.
final class FalseDeathTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    func testAWorkerGivenUpOnIsToldToJoinAgainAndIsNeverBannedForWhatItSaysMeanwhile() throws {
        let run = try InMemoryRun(steps: 8, seed: 4, workerTimeout: 0.5, reduction: .central)
        let lines = LogLines()
        let events = RunEvents()
        let coordinator = try run.coordinator(logger: lines.logger(label: "coord"), observers: [events], expectedWorkers: 2)
        let welcomes = Counter()
        let rejoinAnswers = Counter()
        // The sleeper joins, takes its work and falls silent past the timeout; then, given up,
        // says 30 things (each answered "join again"), says hello again, and falls silent again.
        Thread {
            let sleeper = ScriptedPeer(run, name: "sleeper", welcomes: welcomes)
            guard let runID = sleeper.join() else { return }
            Thread.sleep(forTimeInterval: 1.0)
            while (try? sleeper.endpoint.receive(timeoutMilliseconds: 0)) != nil {}
            for _ in 0..<30 { sleeper.heartbeat(runID) }
            rejoinAnswers.add(sleeper.answers(code: 401, within: 2))
            _ = sleeper.join()
        }.start()
        Self.startSlowWorker(run, name: "honest")
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, 8)
        try run.assertMatchesReference(summary)
        XCTAssertEqual(welcomes.value, 2, "the sleeper was not welcomed back:\n" + lines.all.joined(separator: "\n"))
        XCTAssertEqual(rejoinAnswers.value, 30, "every message of a given-up worker is answered 'join again'")
        XCTAssertFalse(lines.all.contains { $0.contains("ignoring") || $0.contains("evicted") || $0.contains("offence") },
                       lines.all.joined(separator: "\n"))
    }

    func testAHelloAgainAfterTheTimeoutIsFreeWhileRapidOnesAreOffences() throws {
        // An honest worker says hello again only when it heard nothing for the worker timeout
        // (the coordinator was busy, say writing a large checkpoint): at most once per timeout.
        // Nineteen rapid ones are nineteen strikes; one more, after the timeout, must not be the
        // twentieth (which would ban the worker for a minute).
        let (run, lines, coordinator) = try Self.centralRun(expectedWorkers: 2)
        let welcomes = Counter()
        Thread {
            let rejoiner = ScriptedPeer(run, name: "rejoiner", welcomes: welcomes)
            guard let runID = rejoiner.join() else { return }
            for _ in 0..<19 { _ = rejoiner.join() }
            // Alive (heartbeats) for longer than the timeout, then hello again.
            for _ in 0..<7 {
                rejoiner.heartbeat(runID)
                Thread.sleep(forTimeInterval: 0.1)
            }
            _ = rejoiner.join()
        }.start()
        Self.startSlowWorker(run, name: "honest")
        let summary = try coordinator.run()
        try run.assertMatchesReference(summary)
        XCTAssertEqual(welcomes.value, 21, lines.all.joined(separator: "\n"))
        XCTAssertFalse(lines.all.contains { $0.contains("evicted") }, lines.all.joined(separator: "\n"))
    }

    func testMessagesOfAnEarlierRunAreNeverHeldAgainstTheWorkerThatSendsThem() throws {
        // A worker stopped while its coordinator was killed and resumed sends what its step had
        // left to send, stamped with the run it belonged to, before it reads the first "not of
        // this coordinator's run". Twenty of those banned it for a minute, hellos included: a
        // sharded soak saw the pool empty and the run wait.
        try assertJoinsAfterThirtyMisdirectedMessages(answeredWith: 409) { run, welcomes in
            let stopped = ScriptedPeer(run, name: "stopped", welcomes: welcomes)
            return (stopped, 0xBAD)
        }
    }

    func testMessagesOfAnEarlierRunAreNamedInOneWarningForAllItsWorkers() throws {
        // After a restart every worker of the previous life sends some: a hundred workers made
        // three hundred warnings. Each still gets its answers.
        let (run, lines, coordinator) = try Self.centralRun(steps: 4, expectedWorkers: 1)
        let answers = Counter()
        Thread {
            let welcomes = Counter()
            let old = ["old-a", "old-b", "old-c"].map { ScriptedPeer(run, name: $0, welcomes: welcomes) }
            let older = ScriptedPeer(run, name: "older", welcomes: welcomes)
            for peer in old { for _ in 0..<5 { peer.heartbeat(0xBAD) } }
            older.heartbeat(0xBAD0)
            for peer in old + [older] { answers.add(peer.answers(code: 409, within: 1)) }
            FalseDeathTests.startSlowWorker(run, name: "honest")
        }.start()
        _ = try coordinator.run()
        let warnings = lines.all.filter { $0.hasPrefix("warning:") }
        let log = lines.all.joined(separator: "\n")
        XCTAssertEqual(warnings.filter { $0.contains("of run bad,") }.count, 1, log)
        XCTAssertEqual(warnings.filter { $0.contains("of run bad0,") }.count, 1, log)
        XCTAssertEqual(answers.value, 3 * PeerGuard.loudOffences + 1, "every sender is still told to join, the first few times")
    }

    func testAWorkerOnAConnectionTheCoordinatorNeverSawIsNeverHeldToAccountForIt() throws {
        // A worker given up on that has reconnected since speaks from a connection (a routing
        // id) the coordinator does not know, with the run's id, until it reads "send hello first".
        try assertJoinsAfterThirtyMisdirectedMessages(answeredWith: 401) { run, welcomes in
            let first = ScriptedPeer(run, name: "first-connection", welcomes: welcomes)
            let runID = try XCTUnwrap(first.join(), "the first connection was not welcomed")
            return (ScriptedPeer(run, name: "second-connection", welcomes: welcomes), runID)
        }
    }

    /// A peer (made by `peer`, with the run id it stamps) sends thirty heartbeats that the
    /// coordinator cannot take, counts the answers with `code`, then says hello: it must be
    /// welcomed, with only the first few answered and nobody evicted.
    private func assertJoinsAfterThirtyMisdirectedMessages(
        answeredWith code: UInt16, file: StaticString = #filePath, line: UInt = #line,
        _ peer: @escaping @Sendable (InMemoryRun, Counter) throws -> (ScriptedPeer, UInt64)) throws {
        let (run, lines, coordinator) = try Self.centralRun(expectedWorkers: 2)
        let welcomes = Counter()
        let answers = Counter()
        let joinedAgain = Counter()
        Thread {
            guard let (scripted, runID) = try? peer(run, welcomes) else { return }
            for _ in 0..<30 { scripted.heartbeat(runID) }
            answers.add(scripted.answers(code: code, within: 1))
            if scripted.join() != nil { joinedAgain.add() }
        }.start()
        Self.startSlowWorker(run, name: "honest")
        let summary = try coordinator.run()
        try run.assertMatchesReference(summary)
        let log = lines.all.joined(separator: "\n")
        XCTAssertEqual(joinedAgain.value, 1, "the peer was not welcomed after its misdirected messages:\n" + log, file: file, line: line)
        XCTAssertEqual(answers.value, PeerGuard.loudOffences, "only the first few are answered", file: file, line: line)
        XCTAssertFalse(lines.all.contains { $0.contains("ignoring") || $0.contains("evicted") }, log, file: file, line: line)
    }

    func testTwentyRapidHellosAgainStillEvict() throws {
        let (run, lines, coordinator) = try Self.centralRun(expectedWorkers: 2)
        Thread {
            let endpoint = run.endpoint("rejoiner")
            let hello = Hello(name: "rejoiner", threads: 1, processID: 1, hostName: "h", coreType: BLAS.kernelName)
            for _ in 0..<21 {
                try? endpoint.send(Envelope(runID: 0, step: 0, message: .hello(hello)), to: nil)
                Thread.sleep(forTimeInterval: 0.01)
            }
        }.start()
        Self.startSlowWorker(run, name: "honest")
        let summary = try coordinator.run()
        try run.assertMatchesReference(summary)
        XCTAssertTrue(lines.all.contains { $0.contains("evicted") && $0.contains("hello again while already a worker") },
                      lines.all.joined(separator: "\n"))
    }

    /// A central in-memory run with a worker timeout of 0.5 s, and its coordinator logging into `lines`.
    private static func centralRun(steps: Int = 8, expectedWorkers: Int) throws -> (InMemoryRun, LogLines, Coordinator) {
        let run = try InMemoryRun(steps: steps, seed: 4, workerTimeout: 0.5, reduction: .central)
        let lines = LogLines()
        return (run, lines, try run.coordinator(logger: lines.logger(label: "coord"), expectedWorkers: expectedWorkers))
    }

    /// A real worker slowed down, so that the run lasts while the sleeper does its part.
    private static func startSlowWorker(_ run: InMemoryRun, name: String) {
        let network = run.network
        Thread {
            var options = WorkerOptions(connect: InMemoryRun.coordinatorAddress, threads: 1, name: name)
            options.computeDelay = 0.25
            let worker = Worker(options: options, logger: Logger(label: name) { _ in SwiftLogNoOpLogHandler() },
                                transport: network.endpoint(PeerID(bytes: Array(name.utf8)), connectedTo: InMemoryRun.coordinatorID))
            try? worker.run()
        }.start()
    }

    /// After a coordinator restarts, a worker's messages sent before it joined the new run come
    /// back as 409 ("not of this coordinator's run"), stamped with the run it has joined since.
    /// It must not join again for those (that retired its fresh record, and under the sharded
    /// reduction a plan member), but must for a 409 of a run it does not belong to.
    func testAComplaintAboutAnEarlierRunsMessageDoesNotMakeAJoinedWorkerJoinAgain() throws {
        let run = try InMemoryRun(steps: 1)
        let coordinator = run.network.endpoint(InMemoryRun.coordinatorID)
        run.startWorker(name: "joined")
        func nextHello(within seconds: Double) throws -> PeerID? {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                guard let incoming = try coordinator.receive(timeoutMilliseconds: 50),
                      case .success(let envelope) = incoming.result, case .hello = envelope.message else { continue }
                return incoming.peer
            }
            return nil
        }
        let worker = try XCTUnwrap(try nextHello(within: 10), "the worker never said hello")
        let state = try ModelState(config: run.config)
        let runID: UInt64 = 0x5EED
        let welcome = Welcome(workerID: 1, configText: run.config.yaml, parameterCount: state.parameterCount,
                              heartbeatIntervalMilliseconds: 200, workerTimeoutMilliseconds: 5000)
        try coordinator.send(Envelope(runID: runID, step: 0, message: .welcome(welcome)), to: worker)
        func complaint(stampedWith stamp: UInt64) -> Envelope {
            Envelope(runID: stamp, step: 0, message: .error(WireFailure(code: 409, text: "a heartbeat message of run 1, not of this coordinator's run \(String(stamp, radix: 16))")))
        }
        try coordinator.send(complaint(stampedWith: runID), to: worker)
        XCTAssertNil(try nextHello(within: 1.5), "the worker joined again over a message of a run it had left")
        try coordinator.send(complaint(stampedWith: runID + 1), to: worker)
        XCTAssertNotNil(try nextHello(within: 10), "a 409 of a run the worker does not belong to must make it join again")
        try coordinator.send(Envelope(runID: runID, step: 0, message: .bye(Bye(reason: "test over"))), to: worker)
    }
}

/// A peer that speaks the protocol by hand: joins, and says what a test wants it to say.
private struct ScriptedPeer {
    let endpoint: InMemoryTransport
    let hello: Hello
    let welcomes: Counter

    init(_ run: InMemoryRun, name: String, welcomes: Counter) {
        endpoint = run.endpoint(name)
        hello = Hello(name: name, threads: 1, processID: 1, hostName: "h", coreType: BLAS.kernelName)
        self.welcomes = welcomes
    }

    /// Says hello and waits for the welcome; the run's id, or nil without one within 5 s.
    func join() -> UInt64? {
        try? endpoint.send(Envelope(runID: 0, step: 0, message: .hello(hello)), to: nil)
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, let incoming = try? endpoint.receive(timeoutMilliseconds: 100) {
            if case .success(let envelope) = incoming.result, case .welcome = envelope.message {
                welcomes.add()
                return envelope.runID
            }
        }
        return nil
    }

    /// How many `error` answers with `code` arrive within `seconds` (or until none comes for 0.1 s).
    func answers(code: UInt16, within seconds: Double) -> Int {
        var count = 0
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline, let incoming = try? endpoint.receive(timeoutMilliseconds: 100) {
            if case .success(let envelope) = incoming.result, case .error(let failure) = envelope.message, failure.code == code { count += 1 }
        }
        return count
    }

    func heartbeat(_ runID: UInt64) {
        try? endpoint.send(Envelope(runID: runID, step: 0, message: .heartbeat(Heartbeat(sentAtMilliseconds: 1, busy: true))), to: nil)
    }
}

/// A count shared between threads.
private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0

    func add(_ amount: Int = 1) { lock.withLock { count += amount } }
    var value: Int { lock.withLock { count } }
}
