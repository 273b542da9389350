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
        // The replicas read the master weights in place: the optimiser updates them between steps.
        engine.shareWeights(of: state.network)
        trainCount = data.train.count
    }

    /// Runs until the config's epochs or steps are done; returns the mean training loss of each step.
    @discardableResult
    public func train() throws -> [Double] {
        let stepsPerEpoch = EpochPlan(config: state.config, trainCount: trainCount, epoch: 0).steps
        var losses: [Double] = []
        let reduction = TreeReduction(rounding: engine.rounding)
        var plan = EpochPlan(config: state.config, trainCount: trainCount, epoch: state.epoch)
        while !state.isFinished(stepsPerEpoch: stepsPerEpoch) {
            // The epoch's order is drawn once per epoch, not once per step.
            if plan.epoch != state.epoch { plan = EpochPlan(config: state.config, trainCount: trainCount, epoch: state.epoch) }
            let work = plan.work(step: state.stepInEpoch)
            let output = engine.compute(work, training: true, epoch: state.epoch, step: state.step)
            let mean = try reduceInPlace(output, microBatches: work.count, length: state.leafLength, reduction: reduction)
            withExtendedLifetime(output) { state.apply(meanGradient: mean, stepsPerEpoch: stepsPerEpoch) }
            losses.append(work.indices.map { output.scores[$0]! }.reduce(BatchScore(), +).meanLoss)
        }
        return losses
    }
}

/// Reduces a step's gradients along the tree, building the mean in the memory of the node that
/// covers micro-batch 0 (the output's own, no longer needed), and returns it; valid while
/// `output` lives.
package func reduceInPlace(
    _ output: MicroBatchOutput, microBatches: Int, length: Int, reduction: TreeReduction
) throws -> UnsafeMutablePointer<Float> {
    let sums = output.leafGradients.nodes
    guard let first = sums.first(where: { $0.key.firstLeaf == 0 })?.value else {
        throw ReductionError(description: "no gradient for micro-batch 0")
    }
    reduction.begin(microBatches: microBatches, length: length)
    defer { reduction.end() }
    for (node, value) in sums {
        _ = try reduction.offer(node, values: value.pointer, owner: value)
    }
    try reduction.mean(into: first.pointer)
    return first.pointer
}
