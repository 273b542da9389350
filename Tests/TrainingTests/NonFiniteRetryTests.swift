import Foundation
import TestSupport
import Wire
import XCTest

/// A worker whose NaN gradient was refused has spent its answer for those micro-batches: a second,
/// finite answer from it must be refused too, or a hostile worker could replace the recomputation
/// with numbers of its choosing.
final class NonFiniteRetryTests: XCTestCase {
    private let config = """
        model:
          input: [1, 12, 12]
          layers:
            - conv: {filters: 4, kernel: 3, padding: 1}
            - relu
            - maxpool: 2
            - flatten
            - dense: 10
        data:
          dataset: synthetic
          synthetic_train: 512
          synthetic_test: 64
        train:
          epochs: 1
          batch: 32
          micro_batch: 4
          seed: 5
          optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
          eval_batch: 64
          log_every: 1
        distributed:
          worker_timeout: 2
          heartbeat_interval: 0.2
          join_timeout: 30
          # The rogue sends its gradients to the coordinator: the central strategy's part.
          reduction: central
        """

    private let steps = 4

    func testAFiniteSecondAnswerAfterARefusedNaNIsRefusedAndChangesNothing() throws {
        let folder = try LocalCluster.temporaryDirectory("nan-retry")
        let path = try LocalCluster.write(config, to: "config.yaml", in: folder)

        let reference = folder + "/reference"
        let plain = try LocalCluster.run(
            "cnn-coord", ["--config", path, "--spawn-workers", "1", "--steps", "\(steps)", "--run-dir", reference, "--quiet"],
            seconds: 120)
        XCTAssertEqual(plain.status, 0, plain.combined)

        // One honest local worker and the rogue: the first step waits for both, so the rogue is
        // given micro-batches of that step.
        let run = folder + "/attacked"
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", path, "--spawn-workers", "1", "--workers", "2", "--steps", "\(steps)", "--run-dir", run,
                          "--bind", "tcp://127.0.0.1:0"])
        let endpoint = try FuzzCoordinatorTests.endpoint(fromRunDirectory: run, coordinator: coordinator)
        // The rogue joins second, as a hostile worker usually would. (Twice in some 250 runs before
        // this wait, the run stalled after dropping the rogue, which had joined first; 100 runs with
        // the rogue deliberately first did not stall again. Not yet understood: see the notes.)
        let joinDeadline = Date().addingTimeInterval(60)
        while !coordinator.error.contains("(local-0) joined") && coordinator.process.isRunning && Date() < joinDeadline {
            usleep(10_000)
        }
        let retries = try answerTwice(endpoint: endpoint, while: { coordinator.process.isRunning })
        let outcome = coordinator.wait(seconds: 60)

        XCTAssertGreaterThan(retries, 0, "the rogue was never given work to answer twice:\n\(outcome.combined)")
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.combined.contains("recomputing them on another worker"), outcome.combined)
        XCTAssertTrue(outcome.combined.contains("which it was not given"), outcome.combined)
        XCTAssertEqual(try FuzzCoordinatorTests.finalModel(run), try FuzzCoordinatorTests.finalModel(reference), "the finite second answer reached the weights")
    }

    /// Joins as a worker and answers each training assignment first with NaN gradients, then at
    /// once with finite ones (every value 0.5) for the same micro-batches. Returns how many
    /// assignments it answered twice.
    private func answerTwice(endpoint: String, while running: () -> Bool) throws -> Int {
        let context = try ZMQContext()
        defer { context.close() }
        let socket = try ZMQSocket(context: context, kind: .dealer)
        defer { socket.close() }
        try socket.setLinger(milliseconds: 0)
        try socket.setRoutingID(Array("rogue-retry".utf8))
        try socket.connect(endpoint)
        func send(_ envelope: Envelope) throws {
            try socket.send(WireCodec.encodeToBytes(envelope).map { OutgoingFrame.bytes($0) })
        }
        try send(Envelope(runID: 0, step: 0, message: .hello(Hello(
            name: "rogue-retry", threads: 1, processID: 1, hostName: "rogue", coreType: "none"))))

        var runID: UInt64 = 0
        var length = 0
        var retries = 0
        let deadline = Date().addingTimeInterval(90)
        while running() && Date() < deadline {
            guard let frames = try socket.receive(timeoutMilliseconds: 20),
                  let envelope = try? WireCodec.decode(frames) else { continue }
            switch envelope.message {
            case .welcome(let welcome):
                runID = envelope.runID
                length = welcome.parameterCount
            case .assign(let assignment) where assignment.kind == .train && envelope.runID == runID:
                let batches = assignment.microBatches
                let results = batches.map {
                    MicroBatchResult(index: UInt32($0.index), lossSum: 0.5, correct: 0, samples: UInt32($0.samples.count))
                }
                let nodes = batches.map { TreeNode(level: 0, index: $0.index) }
                for value in [Float.nan, 0.5] {
                    let tensors = batches.map { _ in FloatPayload(count: length) { $0.update(repeating: value) } }
                    try send(Envelope(runID: runID, step: envelope.step, message: .gradients(Gradients(
                        epoch: assignment.epoch, results: results, nodes: nodes, tensors: tensors))))
                }
                retries += 1
            case .bye, .error:
                // Refused and declared dead: a rogue that stays away leaves the rest to the honest worker.
                return retries
            default:
                break
            }
        }
        return retries
    }
}
