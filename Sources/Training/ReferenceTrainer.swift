import AllReduce
import CNN

/// The single-process reference: the same micro-batches, the same engine, the same tree and the
/// same optimiser as a distributed run, called directly. A distributed run must match it bit
/// for bit (DESIGN.md, step contract); tests hold both to that.
public final class ReferenceTrainer {
    public let state: ModelState
    private let engine: MicroBatchEngine
    private let trainCount: Int

    public init(config: TrainingConfig, data: DataSource, threads: Int = 1) throws {
        state = try ModelState(config: config)
        engine = try MicroBatchEngine(config: config, data: data, threads: threads)
        trainCount = data.train.count
    }

    /// Runs until the config's epochs or steps are done; returns the mean training loss of each step.
    @discardableResult
    public func train() throws -> [Double] {
        let stepsPerEpoch = EpochPlan(config: state.config, trainCount: trainCount, epoch: 0).steps
        var losses: [Double] = []
        let weights = FloatBuffer(count: state.weightsCount)
        let mean = FloatBuffer(count: state.leafLength)
        let reduction = TreeReduction()
        while !state.isFinished(stepsPerEpoch: stepsPerEpoch) {
            let plan = EpochPlan(config: state.config, trainCount: trainCount, epoch: state.epoch)
            let work = plan.work(step: state.stepInEpoch)
            state.copyWeights(into: weights.pointer)
            engine.load(weights: weights.pointer)
            let output = engine.compute(work, training: true, epoch: state.epoch, step: state.step)
            reduction.begin(microBatches: work.count, length: state.leafLength)
            try withExtendedLifetime(output) {
                for (index, leaf) in output.leafGradients {
                    let pointer = leaf.withUnsafeBufferPointer { $0.baseAddress! }
                    _ = try reduction.offer(TreeNodeID(level: 0, index: index), values: pointer, owner: Box(leaf))
                }
                try reduction.mean(into: mean.pointer)
            }
            reduction.end()
            state.apply(meanGradient: mean.pointer, stepsPerEpoch: stepsPerEpoch)
            losses.append(work.indices.map { output.scores[$0]! }.reduce(BatchScore(), +).meanLoss)
        }
        return losses
    }
}
