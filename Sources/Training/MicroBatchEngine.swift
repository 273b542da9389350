import AllReduce
import CNN
import Data
import Dispatch

/// One micro-batch of work: its number within the step and the data-set indices of its samples.
public struct MicroBatchWork: Sendable, Equatable {
    public var index: Int
    public var samples: [Int]

    public init(index: Int, samples: [Int]) {
        self.index = index
        self.samples = samples
    }
}

/// What computing some micro-batches gives: a score per micro-batch and, in training, the
/// gradient of each micro-batch's mean loss (the leaves of the reduction tree).
public struct MicroBatchOutput {
    public var scores: [Int: BatchScore] = [:]
    public var leafGradients: [Int: [Float]] = [:]
    /// Forward and backward wall-clock seconds of each micro-batch (for `--trace`).
    public var timings: [Int: PassTiming] = [:]
}

/// Computes micro-batches with T model replicas on T threads, each micro-batch wholly on one
/// thread. A micro-batch's gradient therefore never depends on T or on which worker ran it:
/// this is the engine half of the step contract. Used by workers and by the single-process
/// reference alike, so both run the very same code.
public final class MicroBatchEngine: @unchecked Sendable {
    // Sendable: each replica is touched by exactly one thread during `compute`, and nothing else
    // runs while `compute` is in flight.
    public let config: TrainingConfig
    public let data: DataSource
    private let replicas: [Replica]
    public var parameterCount: Int { replicas[0].network.parameterCount }
    public var stateCount: Int { replicas[0].network.stateCount }
    /// Floats per leaf and partial sum: parameter gradients, then state observations.
    public var leafLength: Int { parameterCount + stateCount }
    public var threads: Int { replicas.count }

    private final class Replica {
        let network: Network
        let images = FloatBuffer()
        let labels = IndexBuffer()
        init(_ spec: ModelSpec) throws { network = try Network(spec) }
    }

    public init(config: TrainingConfig, data: DataSource, threads: Int) throws {
        precondition(threads >= 1, "an engine needs at least one thread")
        self.config = config
        self.data = data
        replicas = try (0..<threads).map { _ in try Replica(config.model) }
    }

    /// Loads weights: `parameterCount` parameters followed by `stateCount` state values.
    public func load(weights: UnsafePointer<Float>) {
        for replica in replicas {
            replica.network.parameters.pointer.update(from: weights, count: parameterCount)
            replica.network.state.pointer.update(from: weights + parameterCount, count: stateCount)
        }
    }

    /// Computes the given micro-batches: training ones with gradients, evaluation ones with scores only.
    public func compute(_ work: [MicroBatchWork], training: Bool, epoch: Int, step: Int) -> MicroBatchOutput {
        let threads = min(replicas.count, work.count)
        let outputs = (0..<max(threads, 1)).map { _ in Box(MicroBatchOutput()) }
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            let replica = replicas[t]
            var mine = MicroBatchOutput()
            for item in stride(from: t, to: work.count, by: threads) {
                let micro = work[item]
                let (score, gradient) = run(micro, on: replica, training: training, epoch: epoch, step: step)
                mine.scores[micro.index] = score
                mine.timings[micro.index] = replica.network.lastPassTiming
                if let gradient { mine.leafGradients[micro.index] = gradient }
            }
            outputs[t].value = mine
        }
        var merged = MicroBatchOutput()
        for output in outputs {
            merged.scores.merge(output.value.scores) { a, _ in a }
            merged.leafGradients.merge(output.value.leafGradients) { a, _ in a }
            merged.timings.merge(output.value.timings) { a, _ in a }
        }
        return merged
    }

    private func run(_ micro: MicroBatchWork, on replica: Replica, training: Bool, epoch: Int, step: Int) -> (BatchScore, [Float]?) {
        let set = training ? data.train : data.test
        let count = micro.samples.count
        let images = replica.images.reserve(count * set.sampleSize)
        let labels = replica.labels.reserve(count)
        if training {
            set.copyBatch(micro.samples, images: images, labels: labels,
                          augmentation: config.data.augmentation, seed: config.train.seed, epoch: epoch)
        } else {
            set.copyBatch(micro.samples, images: images, labels: labels)
        }
        let context = PassContext(
            mode: training ? .training : .inference, seed: config.train.seed, epoch: epoch, step: step,
            sampleIndices: micro.samples)
        let network = replica.network
        let score = network.computeGradients(images: images, labels: labels, batch: count, context: context)
        guard training else { return (score, nil) }
        // A leaf is the parameter gradient followed by the state observations (BatchNorm's batch
        // statistics), so both are averaged along the same tree.
        var leaf = [Float](repeating: 0, count: network.parameterCount + network.stateCount)
        leaf.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress!.update(from: network.gradients.pointer, count: network.parameterCount)
            (buffer.baseAddress! + network.parameterCount).update(from: network.observations.pointer, count: network.stateCount)
        }
        return (score, leaf)
    }

    /// The partial sums a participant holding `leafGradients` sends: one per maximal tree node.
    public static func partialSums(
        of leafGradients: [Int: [Float]], microBatchesInStep: Int
    ) -> [TreeNodeID] {
        ReductionTree(leafCount: microBatchesInStep).maximalNodes(covering: Set(leafGradients.keys))
    }

    /// Writes the value of `node` (a sum of leaf gradients along the fixed tree) into `output`.
    public static func sum(
        _ node: TreeNodeID, of leafGradients: [Int: [Float]], microBatchesInStep: Int, length: Int,
        into output: UnsafeMutablePointer<Float>
    ) throws {
        let tree = ReductionTree(leafCount: microBatchesInStep)
        try withExtendedLifetime(leafGradients) {
            try tree.evaluate(node, length: length, into: output) { id in
                guard id.level == 0, let leaf = leafGradients[id.index] else { return nil }
                return leaf.withUnsafeBufferPointer { UnsafePointer($0.baseAddress!) }
            }
        }
    }
}

/// A mutable slot one thread fills and another reads after the threads join.
final class Box<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}
