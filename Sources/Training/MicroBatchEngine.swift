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

/// One micro-batch's gradient leaf: the gradient of its mean loss (`parameterCount` floats), then
/// its state observations (`stateCount` floats). Backward writes straight into it, and the engine
/// hands the memory out again once nobody else holds the leaf, so steps allocate nothing.
public final class GradientLeaf: @unchecked Sendable {
    // Sendable: one replica's thread writes it during `compute`; afterwards its holder owns it.
    private let buffer: FloatBuffer
    /// Floats in the leaf.
    public let count: Int

    init(count: Int) {
        self.count = count
        buffer = FloatBuffer(count: count)
    }

    /// The leaf's memory; its holder may also overwrite it (to build a mean in place, say).
    public var pointer: UnsafeMutablePointer<Float> { buffer.pointer }

    /// A copy of the values.
    public var values: [Float] { Array(UnsafeBufferPointer(start: buffer.pointer, count: count)) }
}

/// What computing some micro-batches gives: a score per micro-batch and, in training, the
/// gradient of each micro-batch's mean loss (the leaves of the reduction tree).
public struct MicroBatchOutput {
    public var scores: [Int: BatchScore] = [:]
    public var leafGradients: [Int: GradientLeaf] = [:]
    /// Forward and backward wall-clock seconds of each micro-batch (for `--trace`).
    public var timings: [Int: PassTiming] = [:]
}

/// Computes micro-batches with T model replicas on T threads, each micro-batch wholly on one
/// thread. A micro-batch's gradient therefore never depends on T or on which worker ran it:
/// this is the engine half of the step contract. Used by workers and by the single-process
/// reference alike, so both run the very same code.
///
/// The replicas share one copy of the weights (they only read them) and back-propagate straight
/// into the leaves they return; a process in the same address space as the master weights can
/// let the replicas read those directly (`shareWeights(of:)`), so a step copies no weights at all.
public final class MicroBatchEngine: @unchecked Sendable {
    // Sendable: each replica is touched by exactly one thread during `compute`, and nothing else
    // runs while `compute` is in flight.
    public let config: TrainingConfig
    public let data: DataSource
    private let replicas: [Replica]
    public let parameterCount: Int
    public let stateCount: Int
    /// Floats per leaf and partial sum: parameter gradients, then state observations.
    public var leafLength: Int { parameterCount + stateCount }
    public var threads: Int { replicas.count }

    /// The engine's own copy of the weights (parameters, then state), filled by `load(weights:)`.
    private let loadedWeights: FloatBuffer
    /// Where the replicas read parameters and state now: `loadedWeights`, or a shared network's.
    private var parameters: UnsafeMutablePointer<Float>
    private var state: UnsafeMutablePointer<Float>
    /// Whatever holds the weights the replicas read when they are not `loadedWeights`, kept alive
    /// while they do.
    private var weightsOwner: AnyObject?
    /// Leaves handed out by earlier calls; one is reused once its holder has let go of it.
    private var leafPool: [GradientLeaf] = []

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
        parameterCount = replicas[0].network.parameterCount
        stateCount = replicas[0].network.stateCount
        loadedWeights = FloatBuffer(count: parameterCount + stateCount)
        parameters = loadedWeights.pointer
        state = loadedWeights.pointer + parameterCount
    }

    /// Loads weights: `parameterCount` parameters followed by `stateCount` state values, copied
    /// once for all replicas. Ends any sharing of weights held elsewhere.
    public func load(weights: UnsafePointer<Float>) {
        loadedWeights.pointer.update(from: weights, count: parameterCount + stateCount)
        parameters = loadedWeights.pointer
        state = loadedWeights.pointer + parameterCount
        weightsOwner = nil
    }

    /// Makes the replicas read the parameters and state `network` uses (its bound memory at the
    /// time of this call) in place, until the next `load(weights:)`: no copy per step. The network
    /// must be of this engine's model, and its weights must not change while `compute` runs
    /// (between calls they may: that is the optimiser's step).
    public func shareWeights(of network: Network) {
        precondition(network.parameterCount == parameterCount && network.stateCount == stateCount,
                     "shared weights of \(network.parameterCount) + \(network.stateCount) values; the engine's model has \(parameterCount) + \(stateCount)")
        weightsOwner = network
        parameters = network.boundParameters
        state = network.boundState
    }

    /// Makes the replicas read weights laid out as `load(weights:)` takes them (`parameterCount`
    /// parameters, then `stateCount` state values) where they lie, until the next `load(weights:)`
    /// or sharing: no copy. `owner` is kept alive meanwhile and must keep the memory valid (a
    /// received weights message, say); the values must not change while `compute` runs.
    public func shareWeights(_ weights: UnsafePointer<Float>, owner: AnyObject) {
        weightsOwner = owner
        // The layers are bound through mutable pointers but only ever read parameters and state.
        parameters = UnsafeMutablePointer(mutating: weights)
        state = UnsafeMutablePointer(mutating: weights + parameterCount)
    }

    /// Computes the given micro-batches: training ones with gradients, evaluation ones with scores only.
    public func compute(_ work: [MicroBatchWork], training: Bool, epoch: Int, step: Int) -> MicroBatchOutput {
        let threads = min(replicas.count, work.count)
        let leaves = training ? takeLeaves(work.count) : []
        let outputs = (0..<max(threads, 1)).map { _ in Box(MicroBatchOutput()) }
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            let replica = replicas[t]
            var mine = MicroBatchOutput()
            for item in stride(from: t, to: work.count, by: threads) {
                let micro = work[item]
                let leaf = training ? leaves[item] : nil
                mine.scores[micro.index] = run(micro, on: replica, into: leaf, epoch: epoch, step: step)
                mine.timings[micro.index] = replica.network.lastPassTiming
                if let leaf { mine.leafGradients[micro.index] = leaf }
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

    /// `count` leaves for this call: pooled ones nobody holds any more first, then new ones.
    private func takeLeaves(_ count: Int) -> [GradientLeaf] {
        var free: [GradientLeaf] = []
        for index in leafPool.indices where isKnownUniquelyReferenced(&leafPool[index]) {
            free.append(leafPool[index])
        }
        // Leaves still held elsewhere (an earlier output kept alive) belong to their holder now.
        leafPool = free
        while leafPool.count < count { leafPool.append(GradientLeaf(count: leafLength)) }
        return Array(leafPool[0..<count])
    }

    /// Computes one micro-batch on `replica`; in training, back-propagates into `leaf`.
    private func run(_ micro: MicroBatchWork, on replica: Replica, into leaf: GradientLeaf?, epoch: Int, step: Int) -> BatchScore {
        let training = leaf != nil
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
        // A leaf is the parameter gradient followed by the state observations (BatchNorm's batch
        // statistics), so both are averaged along the same tree; the pass writes them in place
        // (zeroing them first). An evaluation pass writes neither: it keeps the replica's own.
        let gradients = leaf?.pointer ?? network.gradients.pointer
        let observations = leaf.map { $0.pointer + parameterCount } ?? network.observations.pointer
        network.bind(parameters: parameters, gradients: gradients)
        network.bind(state: state, observations: observations)
        return network.computeGradients(images: images, labels: labels, batch: count, context: context)
    }

    /// The partial sums a participant holding `leafGradients` sends: one per maximal tree node.
    public static func partialSums(
        of leafGradients: [Int: GradientLeaf], microBatchesInStep: Int
    ) -> [TreeNodeID] {
        ReductionTree(leafCount: microBatchesInStep).maximalNodes(covering: Set(leafGradients.keys))
    }

    /// Writes the value of `node` (a sum of leaf gradients along the fixed tree) into `output`.
    public static func sum(
        _ node: TreeNodeID, of leafGradients: [Int: GradientLeaf], microBatchesInStep: Int, length: Int,
        into output: UnsafeMutablePointer<Float>
    ) throws {
        let tree = ReductionTree(leafCount: microBatchesInStep)
        try withExtendedLifetime(leafGradients) {
            try tree.evaluate(node, length: length, into: output) { id in
                guard id.level == 0, let leaf = leafGradients[id.index] else { return nil }
                return UnsafePointer(leaf.pointer)
            }
        }
    }
}

/// A mutable slot one thread fills and another reads after the threads join.
final class Box<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}
