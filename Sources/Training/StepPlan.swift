import Data
import Wire

/// Which samples each micro-batch of each step uses: a pure function of the config and the epoch.
public struct EpochPlan: Sendable {
    public let epoch: Int
    public let order: [Int]
    public let batch: Int
    public let microBatch: Int

    public init(config: TrainingConfig, trainCount: Int, epoch: Int) {
        self.epoch = epoch
        order = DataOrder.epochOrder(count: trainCount, seed: config.train.seed, epoch: epoch, shuffle: config.data.shuffle)
        batch = config.train.batch
        microBatch = config.train.microBatch
    }

    /// Whole batches per epoch; the remainder (fewer than `batch` samples) is left out, as with
    /// PyTorch's `drop_last=True`, so every step averages the same number of samples.
    public var steps: Int { order.count / batch }
    public var microBatchesPerStep: Int { batch / microBatch }

    /// The micro-batches of step `step` (0-based within the epoch).
    public func work(step: Int) -> [MicroBatch] {
        (0..<microBatchesPerStep).map { j in
            let start = step * batch + j * microBatch
            return MicroBatch(index: j, samples: Array(order[start..<(start + microBatch)]))
        }
    }
}

/// The test set cut into evaluation micro-batches, in file order (the last may be shorter).
public func evaluationWork(testCount: Int, microBatch: Int) -> [MicroBatch] {
    stride(from: 0, to: testCount, by: microBatch).enumerated().map { index, start in
        MicroBatch(index: index, samples: Array(start..<min(start + microBatch, testCount)))
    }
}
