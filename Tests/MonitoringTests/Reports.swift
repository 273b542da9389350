import CNN
import Foundation
import Monitoring
import Training

/// Synthetic coordinator reports with exactly known numbers, for observer unit tests.
enum Reports {
    static func start(epochs: Int = 2, stepsPerEpoch: Int = 100, firstStep: Int = 0, classes: Int = 0) -> RunStart {
        var config = TrainingConfig(model: ModelSpec(input: FeatureShape(channels: 1, height: 4, width: 4), layers: []))
        config.train.epochs = epochs
        return RunStart(config: config, endpoint: "tcp://127.0.0.1:5555", runDirectory: "/tmp/run", firstStep: firstStep,
                        stepsPerEpoch: stepsPerEpoch, totalSteps: epochs * stepsPerEpoch, classes: classes)
    }

    static func worker(_ id: UInt32, done: Int = 0, last: Double? = nil, alive: Bool = true) -> WorkerStatus {
        WorkerStatus(id: id, name: "node\(id)-\(100 + id)", host: "node\(id)", threads: 1, alive: alive,
                     microBatchesDone: done, lastStepSeconds: last)
    }

    /// Step `step` (1-based) starting at `start`, lasting `seconds`, with 64 images, loss 0.5 and
    /// 48 correct, the given phases and workers.
    static func step(_ step: Int, start: Double, seconds: Double, stepsPerEpoch: Int = 100, workers: [WorkerStatus] = [],
                     phases: [PhaseTiming] = [], sent: Int = 1000, received: Int = 2000) -> StepReport {
        StepReport(step: step, epoch: (step - 1) / stepsPerEpoch, stepInEpoch: (step - 1) % stepsPerEpoch + 1,
                   stepsPerEpoch: stepsPerEpoch, score: BatchScore(lossSum: 32, correct: 48, topFiveCorrect: 60, samples: 64), learningRate: 0.05,
                   start: start, seconds: seconds, workers: workers, phases: phases, bytesSent: sent, bytesReceived: received)
    }

    static func phase(_ name: String, _ worker: UInt32?, _ start: Double, _ duration: Double) -> PhaseTiming {
        PhaseTiming(name: name, workerID: worker, start: start, duration: duration)
    }

    static func summary(steps: Int, accuracy: Double? = 0.8) -> RunSummary {
        RunSummary(steps: steps, epochs: 1, testAccuracy: accuracy, imagesPerSecond: 1234, seconds: 12.5,
                   finalCheckpoint: "/tmp/run/checkpoints/step-1",
                   interrupted: false)
    }
}

/// Collects what a `TerminalScreen` writes.
final class ScreenRecorder: @unchecked Sendable {
    // Sendable: `lock` guards `writes`.
    private let lock = NSLock()
    private var writes: [(TerminalScreen.Stream, String)] = []

    func screen(width: Int = 120) -> TerminalScreen {
        TerminalScreen(width: { width }, write: { [self] stream, text in lock.withLock { writes.append((stream, text)) } })
    }

    var all: [(TerminalScreen.Stream, String)] { lock.withLock { writes } }
    var output: String { all.filter { $0.0 == .output }.map(\.1).joined() }
    var error: String { all.filter { $0.0 == .error }.map(\.1).joined() }
}

/// A monotonic clock the test moves by hand.
final class ManualClock {
    var now = 1000.0
    func read() -> Double { now }
}
