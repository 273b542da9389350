import AllReduce
import Foundation
import Wire

/// What a sender asks of `MicroBatchEngine.compute` to pass its partial sums on slice by slice
/// while backward still runs (docs/scaling.md, overlap): backward goes from the last layer to the
/// first, so once the last micro-batch of every thread has passed a slice, that slice of every
/// partial sum is final, and can be on its way while the earlier layers compute.
public struct PartialSumStream: Sendable {
    /// Consecutive ranges of a leaf that are handed out together (the sharded layout's slices),
    /// in order, covering it.
    public let slices: [Range<Int>]
    /// Micro-batches of the step: the fixed tree's leaves.
    public let microBatchesInStep: Int
    /// Called when slices `ready` (indices into `slices`) of every partial sum are final, with the
    /// partial sums (the maximal tree nodes the computed micro-batches cover) and the buffers
    /// holding their values. Called on a computing thread, one call at a time; each call names
    /// slices below those of the one before, and together they name every slice once. The
    /// buffers are the ones the output's `partialSums` holds; parts not yet named are still
    /// being written.
    public let publish: @Sendable (_ ready: Range<Int>, _ values: [TreeNode: GradientBuffer]) -> Void

    public init(slices: [Range<Int>], microBatchesInStep: Int,
                publish: @escaping @Sendable (_ ready: Range<Int>, _ values: [TreeNode: GradientBuffer]) -> Void) {
        self.slices = slices
        self.microBatchesInStep = microBatchesInStep
        self.publish = publish
    }
}

/// The additions a new leaf sets off in one thread's run of micro-batches: while the last two
/// nodes held are siblings they merge, left + right, exactly the fixed tree's addition. Every
/// step works element by element, so the chain applied range by range gives the bits of one
/// pass over the whole leaf.
struct MergeChain {
    let leaf: GradientBuffer
    /// In order: `right` is added into `left`, which then holds their parent.
    let additions: [(right: GradientBuffer, left: GradientBuffer)]
    /// The nodes the thread holds once the chain is applied.
    let result: [(node: TreeNode, value: GradientBuffer)]

    init(held: [(node: TreeNode, value: GradientBuffer)], leaf node: TreeNode, value: GradientBuffer) {
        leaf = value
        var nodes = held + [(node, value)]
        var additions: [(right: GradientBuffer, left: GradientBuffer)] = []
        while nodes.count >= 2 {
            let left = nodes[nodes.count - 2], right = nodes[nodes.count - 1]
            guard left.node.level == right.node.level, left.node.index % 2 == 0,
                  right.node.index == left.node.index + 1 else { break }
            additions.append((right.value, left.value))
            nodes.removeLast(2)
            nodes.append((left.node.parent, left.value))
        }
        self.additions = additions
        result = nodes
    }

    /// Rounds the leaf, then makes each addition and rounds its sum, over `elements` only.
    func apply(over elements: Range<Int>, rounding: NodeRounding) {
        let start = elements.lowerBound, count = elements.count
        let rounding = rounding.restricted(to: elements)
        rounding.round(leaf.pointer + start, count: count)
        for (right, left) in additions {
            TreeAddition.add(right.pointer + start, into: left.pointer + start, count: count)
            rounding.round(left.pointer + start, count: count)
        }
    }
}

/// One `compute` call's streaming: which slices each thread has finished, and the partial sums'
/// buffers. A partial sum held whole by one thread is published from that thread's own buffer;
/// one whose micro-batches several threads computed is summed, slice by slice, into a buffer of
/// its own once every thread has finished the slice.
final class PartialSumStreamer: @unchecked Sendable {
    // Sendable: every field below `lock` is touched under it.
    let request: PartialSumStream
    private let partialSums: [TreeNode]
    private let leafLength: Int
    private let rounding: NodeRounding
    /// Whether what was computed may be sent (no sample failed to load).
    private let isSound: @Sendable () -> Bool
    private let takeBuffer: (Int) -> GradientBuffer

    private let lock = NSLock()
    /// Each thread's nodes once its last micro-batch is computed; nil until it begins it.
    private var held: [[(node: TreeNode, value: GradientBuffer)]?]
    /// Per thread, the first slice from which its nodes are final (`slices.count`: none yet).
    private var finalFrom: [Int]
    /// The first slice published (`slices.count`: none yet).
    private var published: Int
    private var values: [TreeNode: GradientBuffer]?

    /// The partial sums' buffers once every slice is published (whole then), else nil.
    var publishedValues: [TreeNode: GradientBuffer]? { lock.withLock { published == 0 ? values : nil } }

    init(_ request: PartialSumStream, covering microBatches: Set<Int>, threads: Int, leafLength: Int, rounding: NodeRounding,
         isSound: @escaping @Sendable () -> Bool, takeBuffer: @escaping (Int) -> GradientBuffer) {
        precondition(request.slices.first.map { $0.lowerBound == 0 } ?? true && (request.slices.last?.upperBound ?? 0) == leafLength
                     && zip(request.slices, request.slices.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound },
                     "streamed slices must cover the \(leafLength) values of a leaf in order")
        self.request = request
        partialSums = ReductionTree(leafCount: request.microBatchesInStep).maximalNodes(covering: microBatches)
        self.leafLength = leafLength
        self.rounding = rounding
        self.isSound = isSound
        self.takeBuffer = takeBuffer
        held = Array(repeating: nil, count: threads)
        finalFrom = Array(repeating: request.slices.count, count: threads)
        published = request.slices.count
    }

    /// Thread `thread` begins its last micro-batch, which `chain` adds to what it holds.
    func begin(thread: Int, chain: MergeChain) {
        lock.withLock { held[thread] = chain.result }
    }

    /// Thread `thread`'s last backward has made its gradients final from parameter `offset` on
    /// (the state observations after the parameters are final once forward is done): the chain
    /// is applied to the slices that became final, and what every thread has finished is published.
    func advance(thread: Int, finalFromOffset offset: Int, chain: MergeChain) {
        let slices = request.slices
        let first = slices.firstIndex { $0.lowerBound >= offset } ?? slices.count
        let before = lock.withLock { finalFrom[thread] }
        guard first < before else { return }
        chain.apply(over: slices[first].lowerBound..<slices[before - 1].upperBound, rounding: rounding)
        lock.withLock {
            finalFrom[thread] = first
            let everywhere = finalFrom.max()!
            guard everywhere < published, isSound() else { return }
            let values = self.values ?? partialSumBuffers()
            self.values = values
            let ready = everywhere..<published
            let elements = slices[ready.lowerBound].lowerBound..<slices[ready.upperBound - 1].upperBound
            var nodes = GradientSums()
            for (node, value) in held.flatMap({ $0! }) { nodes.nodes[node] = value }
            for node in partialSums where nodes.nodes[node] == nil {
                // Every micro-batch under the node was computed here, so its value exists.
                try! MicroBatchEngine.sum(node, of: nodes, microBatchesInStep: request.microBatchesInStep, elements: elements,
                                          rounding: rounding, into: values[node]!.pointer + elements.lowerBound)
            }
            published = everywhere
            request.publish(ready, values)
        }
    }

    /// Each partial sum's buffer: the thread's own where one thread holds it whole, else a new one.
    private func partialSumBuffers() -> [TreeNode: GradientBuffer] {
        var byNode: [TreeNode: GradientBuffer] = [:]
        for nodes in held { for (node, value) in nodes! { byNode[node] = value } }
        return Dictionary(uniqueKeysWithValues: partialSums.map { ($0, byNode[$0] ?? takeBuffer(leafLength)) })
    }
}
