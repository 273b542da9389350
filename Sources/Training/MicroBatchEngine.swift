import AllReduce
import CNN
import Data
import Dispatch
import Wire

/// The value of one node of the reduction tree: a micro-batch's gradient leaf (the gradient of
/// its mean loss, `parameterCount` floats, then its state observations, `stateCount` floats), or
/// the sum of the leaves of a whole aligned range. Backward writes straight into it, and the
/// engine hands the memory out again once nobody else holds it, so steps allocate nothing.
public final class GradientBuffer: @unchecked Sendable {
    // Sendable: one replica's thread writes it during `compute`; afterwards its holder owns it.
    private let buffer: FloatBuffer
    /// Floats in the buffer.
    public let count: Int

    init(count: Int) {
        self.count = count
        buffer = FloatBuffer(count: count)
    }

    /// The memory; its holder may also overwrite it (to build a mean in place, say).
    public var pointer: UnsafeMutablePointer<Float> { buffer.pointer }

    /// A copy of the values.
    public var values: [Float] { Array(UnsafeBufferPointer(start: buffer.pointer, count: count)) }
}

/// Gradient buffers handed out again once nobody else holds them, so steps allocate nothing.
final class GradientBufferPool {
    private var buffers: [GradientBuffer] = []

    /// Forgets buffers still held elsewhere (an earlier output kept alive): they are their
    /// holder's now.
    func releaseHeld() {
        var free: [GradientBuffer] = []
        for index in buffers.indices where isKnownUniquelyReferenced(&buffers[index]) { free.append(buffers[index]) }
        buffers = free
    }

    /// A buffer of `count` floats nobody else holds, pooled or new.
    func take(count: Int) -> GradientBuffer {
        for index in buffers.indices where buffers[index].count == count && isKnownUniquelyReferenced(&buffers[index]) {
            return buffers[index]
        }
        let buffer = GradientBuffer(count: count)
        buffers.append(buffer)
        return buffer
    }
}

/// The gradients of the training micro-batches one `compute` call was given, as values of nodes
/// of the fixed reduction tree. A thread that computes both halves of an aligned range adds them
/// as soon as both exist (left + right, exactly the tree's addition), so it holds a few buffers
/// however many micro-batches it computes; the rest of the tree is completed by `sum` or by the
/// coordinator. Which nodes appear depends on the thread count; their values never do.
public struct GradientSums {
    /// The value of each node held; the nodes are disjoint and each is whole (all its micro-batches
    /// were computed here).
    public var nodes: [TreeNode: GradientBuffer] = [:]

    public init() {}

    /// The micro-batches the nodes cover.
    public var microBatches: Set<Int> {
        Set(nodes.keys.flatMap(\.microBatches))
    }

    public var isEmpty: Bool { nodes.isEmpty }
}

/// What computing some micro-batches gives: a score per micro-batch and, in training, their
/// gradients (of each micro-batch's mean loss) as sums along the reduction tree.
public struct MicroBatchOutput {
    public var scores: [Int: BatchScore] = [:]
    public var leafGradients = GradientSums()
    /// Forward and backward wall-clock seconds of each micro-batch (for `--trace`).
    public var timings: [Int: PassTiming] = [:]
    /// When the call streamed every slice: the value of every partial sum (maximal tree node)
    /// the computed micro-batches cover, the buffers the stream published.
    public var partialSums: [TreeNode: GradientBuffer]?
}

/// Computes micro-batches with T model replicas on T threads, each micro-batch wholly on one
/// thread. A micro-batch's gradient therefore never depends on T or on which worker ran it:
/// this is the engine half of the step contract. Used by workers and by the single-process
/// reference alike, so both run the very same code.
///
/// The replicas share one copy of the weights (they only read them) and back-propagate straight
/// into the leaves they return; a process in the same address space as the master weights can
/// let the replicas read those directly (`shareWeights(of:)`), so a step copies no weights at all.
/// For the same reason they share what is computed from the weights alone: Winograd's
/// transformed filters (`filterTransforms`).
public final class MicroBatchEngine: @unchecked Sendable {
    // Sendable: each replica is touched by exactly one thread during `compute`, and nothing else
    // runs while `compute` is in flight.
    public let config: TrainingConfig
    public let data: DataSource
    private let replicas: [Replica]
    /// Winograd's transformed filters, computed once per `compute` for all replicas, as they all
    /// read the same weights.
    public let filterTransforms = SharedFilterTransforms()
    public let parameterCount: Int
    public let stateCount: Int
    /// Floats per leaf and partial sum: parameter gradients, then state observations.
    public var leafLength: Int { parameterCount + stateCount }
    public var threads: Int { replicas.count }
    /// The arithmetic of the replicas' products, from `train.precision` on this machine.
    public let precision: Precision
    /// How every node of the fixed tree is rounded once computed (`distributed.wire_precision`):
    /// leaves after their backward, sums after their addition. What the engine hands out is
    /// rounded already.
    public let rounding: NodeRounding

    /// The engine's own copy of the weights (parameters, then state), filled by `load(weights:)`.
    private let loadedWeights: FloatBuffer
    /// Where the replicas read parameters and state now: `loadedWeights`, or a shared network's.
    private var parameters: UnsafeMutablePointer<Float>
    private var state: UnsafeMutablePointer<Float>
    /// Whatever holds the weights the replicas read when they are not `loadedWeights`, kept alive
    /// while they do.
    private var weightsOwner: AnyObject?

    private final class Replica {
        let network: Network
        let images = FloatBuffer()
        let labels = IndexBuffer()
        /// Gradient buffers this replica handed out; one is reused once nobody else holds it.
        let buffers = GradientBufferPool()

        init(_ spec: ModelSpec) throws { network = try Network(spec) }
    }

    public init(config: TrainingConfig, data: DataSource, threads: Int) throws {
        precondition(threads >= 1, "an engine needs at least one thread")
        self.config = config
        self.data = data
        precision = try config.precision()
        replicas = try (0..<threads).map { _ in try Replica(config.model) }
        for replica in replicas {
            replica.network.share(filterTransforms: filterTransforms)
            replica.network.use(precision: precision)
        }
        parameterCount = replicas[0].network.parameterCount
        stateCount = replicas[0].network.stateCount
        rounding = config.nodeRounding(gradientCount: parameterCount)
        loadedWeights = FloatBuffer(count: parameterCount + stateCount)
        parameters = loadedWeights.pointer
        state = loadedWeights.pointer + parameterCount
    }

    /// Buffers of partial sums that several threads computed parts of, when streaming (taken
    /// under the streamer's lock).
    private let streamBuffers = GradientBufferPool()

    /// A network of the engine's model, for what needs its layout rather than its weights (the
    /// state slice's running statistics, naming a non-finite value); not to compute with.
    public var layoutNetwork: Network { replicas[0].network }

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

    /// Computes the given micro-batches: training ones with gradients, evaluation ones with scores
    /// only. A training call given `streaming` publishes its partial sums slice by slice during
    /// the last backward of each thread, to the same bits.
    public func compute(_ work: [MicroBatch], training: Bool, epoch: Int, step: Int, streaming: PartialSumStream? = nil) -> MicroBatchOutput {
        let threads = min(replicas.count, work.count)
        // Each thread takes a run of consecutive micro-batches, so that it can add up whole tree
        // nodes as it goes.
        let ordered = work.sorted { $0.index < $1.index }
        if training {
            replicas.forEach { $0.buffers.releaseHeld() }
            streamBuffers.releaseHeld()
        }
        // The weights may have changed since the last call (an optimiser step, new weights).
        filterTransforms.invalidate()
        announceLaterMicroBatches(ordered, threads: threads, training: training, epoch: epoch)
        let streamer = training && threads > 0 ? streaming.map { request in
            PartialSumStreamer(request, covering: Set(work.map(\.index)), threads: threads, leafLength: leafLength, rounding: rounding,
                               isSound: { [data] in data.train.failure == nil }, takeBuffer: { [streamBuffers] in streamBuffers.take(count: $0) })
        } : nil
        let outputs = (0..<max(threads, 1)).map { _ in Box(MicroBatchOutput()) }
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            let replica = replicas[t]
            let first = t * ordered.count / threads, end = (t + 1) * ordered.count / threads
            var mine = MicroBatchOutput()
            // Nodes computed so far, in micro-batch order; the last two merge when they are siblings.
            var held: [(node: TreeNode, value: GradientBuffer)] = []
            for micro in ordered[first..<end] {
                let buffer = training ? replica.buffers.take(count: leafLength) : nil
                let chain = buffer.map { MergeChain(held: held, leaf: TreeNode(level: 0, index: micro.index), value: $0) }
                let streamed = micro.index == ordered[end - 1].index ? streamer : nil
                if let streamed, let chain {
                    streamed.begin(thread: t, chain: chain)
                    replica.network.backwardProgress = { streamed.advance(thread: t, finalFromOffset: $0, chain: chain) }
                }
                mine.scores[micro.index] = run(micro, on: replica, into: buffer, epoch: epoch, step: step)
                mine.timings[micro.index] = replica.network.lastPassTiming
                replica.network.backwardProgress = nil
                guard let chain else { continue }
                if let streamed {
                    streamed.advance(thread: t, finalFromOffset: 0, chain: chain)
                } else {
                    chain.apply(over: 0..<leafLength, rounding: rounding)
                }
                held = chain.result
            }
            for (node, value) in held { mine.leafGradients.nodes[node] = value }
            outputs[t].value = mine
        }
        var merged = MicroBatchOutput()
        merged.partialSums = streamer?.publishedValues
        for output in outputs {
            merged.scores.merge(output.value.scores) { a, _ in a }
            merged.leafGradients.nodes.merge(output.value.leafGradients.nodes) { a, _ in a }
            merged.timings.merge(output.value.timings) { a, _ in a }
        }
        return merged
    }

    /// Tells the data set which micro-batches each thread takes after its first, soonest first, so
    /// a set read from files prepares them while the first ones compute. Changes no sample.
    private func announceLaterMicroBatches(_ ordered: [MicroBatch], threads: Int, training: Bool, epoch: Int) {
        guard threads > 0 else { return }
        let runs = (0..<threads).map { t in ordered[(t * ordered.count / threads)..<((t + 1) * ordered.count / threads)] }
        var later: [[Int]] = []
        for position in 1..<max(runs.map(\.count).max() ?? 1, 1) {
            for run in runs where position < run.count { later.append(run[run.startIndex + position].samples) }
        }
        (training ? data.train : data.test).prefetch(later, training: training, seed: config.train.seed, epoch: epoch)
    }

    /// Computes one micro-batch on `replica`; in training, back-propagates into `leaf`.
    private func run(_ micro: MicroBatch, on replica: Replica, into leaf: GradientBuffer?, epoch: Int, step: Int) -> BatchScore {
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
        of leafGradients: GradientSums, microBatchesInStep: Int
    ) -> [TreeNode] {
        ReductionTree(leafCount: microBatchesInStep).maximalNodes(covering: leafGradients.microBatches)
    }

    /// Writes the value of `node` (a sum of leaf gradients along the fixed tree, each sum
    /// rounded as `rounding` says) into `output`.
    public static func sum(
        _ node: TreeNode, of leafGradients: GradientSums, microBatchesInStep: Int, length: Int,
        rounding: NodeRounding = .none, into output: UnsafeMutablePointer<Float>
    ) throws {
        try sum(node, of: leafGradients, microBatchesInStep: microBatchesInStep, elements: 0..<length, rounding: rounding, into: output)
    }

    /// Writes elements `elements` of the value of `node` into `output` (`elements.count` floats).
    /// The tree adds element by element, so a sum built block by block has the same bits as one
    /// built whole; a sender uses this to hash each block of its payload while it is in cache.
    /// `rounding` is the whole node's: the block's part of it is rounded.
    public static func sum(
        _ node: TreeNode, of leafGradients: GradientSums, microBatchesInStep: Int, elements: Range<Int>,
        rounding: NodeRounding = .none, into output: UnsafeMutablePointer<Float>
    ) throws {
        let tree = ReductionTree(leafCount: microBatchesInStep)
        try withExtendedLifetime(leafGradients) {
            try tree.evaluate(node, length: elements.count, into: output, rounding: rounding.restricted(to: elements)) { id in
                leafGradients.nodes[id].map { UnsafePointer($0.pointer + elements.lowerBound) }
            }
        }
    }
}

/// A mutable slot one thread fills and another reads after the threads join.
final class Box<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}
