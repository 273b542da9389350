import AllReduce
import CNN
import Wire

/// A worker's results for the task in progress, checked against the task and the model before
/// anything of them is used: which micro-batches they cover, their scores, their gradient
/// partial sums, and where the first non-finite value is, if any.
struct CheckedResults {
    var microBatches: Set<Int> = []
    var scores: [Int: BatchScore] = [:]
    var partialSums: [(node: TreeNode, values: FloatPayload)] = []
    /// The tree nodes whose partial sums the worker holds (sharded: they went to the owners).
    var nodes: [TreeNode] = []
    /// Where the first NaN or infinity is (a gradient element or a loss); nil when all is finite.
    var nonFinite: String?
}

/// Why results are refused: the worker sent something no honest worker sends.
struct ResultRefusal: Error, Equatable {
    var reason: String
}

enum ResultCheck {
    /// Checks `message` as a training task's results for `work`: a score per micro-batch and one
    /// partial sum per tree node, each `leafLength` floats of the model laid out as `network`'s
    /// leaves, the nodes covering exactly the scored micro-batches. What was assigned to whom is
    /// the scheduler's to check. The tensors must have travelled in the run's `encoding`: a node
    /// sent in Float32 on a bf16 wire was not rounded as the tree says.
    static func check(_ message: Gradients, work: [MicroBatch], network: Network,
                      encoding: TensorEncoding = .float32) throws(ResultRefusal) -> CheckedResults {
        var checked = try scores(message.results, work: work)
        guard message.encoding == encoding else {
            throw ResultRefusal(reason: "gradients sent as \(message.encoding), but this run's distributed.wire_precision sends them as \(encoding)")
        }
        guard message.tensors.count == message.nodes.count else {
            throw ResultRefusal(reason: "\(message.nodes.count) tree nodes but \(message.tensors.count) tensors")
        }
        let tree = ReductionTree(leafCount: work.count)
        let leafLength = network.parameterCount + network.stateCount
        var nodeLeaves = Set<Int>()
        for (node, tensor) in zip(message.nodes, message.tensors) {
            guard tree.contains(node) else { throw ResultRefusal(reason: "tree node \(node) is outside the tree of \(work.count) micro-batches") }
            guard tensor.count == leafLength else {
                throw ResultRefusal(reason: "a gradient of \(tensor.count) values; the model needs \(leafLength) "
                    + "(\(network.parameterCount) parameters and \(network.stateCount) state values)")
            }
            if checked.nonFinite == nil, let finding = tensor.withUnsafeBufferPointer({ NonFiniteFinding.locate(in: $0, network: network) }) {
                checked.nonFinite = finding.description
            }
            nodeLeaves.formUnion(tree.leaves(of: node))
            checked.partialSums.append((node, tensor))
        }
        guard nodeLeaves == checked.microBatches else {
            throw ResultRefusal(reason: "scores for micro-batches \(checked.microBatches.sorted()) but gradients for \(nodeLeaves.sorted())")
        }
        return checked
    }

    /// Checks `message` as a training task's results under the sharded reduction: a score per
    /// micro-batch and tree nodes covering exactly the scored micro-batches (the gradients went
    /// to the slice owners; the worker reports where it found them not finite).
    static func check(_ message: Computed, work: [MicroBatch]) throws(ResultRefusal) -> CheckedResults {
        var checked = try scores(message.results, work: work)
        let tree = ReductionTree(leafCount: work.count)
        var nodeLeaves = Set<Int>()
        for node in message.nodes {
            guard tree.contains(node) else { throw ResultRefusal(reason: "tree node \(node) is outside the tree of \(work.count) micro-batches") }
            nodeLeaves.formUnion(tree.leaves(of: node))
        }
        guard nodeLeaves == checked.microBatches else {
            throw ResultRefusal(reason: "scores for micro-batches \(checked.microBatches.sorted()) but partial sums of \(nodeLeaves.sorted())")
        }
        checked.nodes = message.nodes
        if checked.nonFinite == nil && !message.nonFinite.isEmpty { checked.nonFinite = message.nonFinite }
        return checked
    }

    /// Checks `message` as an evaluation task's results for `work`: scores only.
    static func check(_ message: Evaluation, work: [MicroBatch]) throws(ResultRefusal) -> CheckedResults {
        try scores(message.results, work: work)
    }

    /// The scores of `results`, each for a micro-batch of `work` and possible for its size.
    private static func scores(_ results: [MicroBatchResult], work: [MicroBatch]) throws(ResultRefusal) -> CheckedResults {
        var checked = CheckedResults()
        for result in results {
            let index = Int(result.index)
            guard work.indices.contains(index) else {
                throw ResultRefusal(reason: "result for micro-batch \(index); the task has \(work.count)")
            }
            guard Int(result.samples) == work[index].samples.count, result.correct <= result.samples else {
                throw ResultRefusal(reason: "impossible score for micro-batch \(index)")
            }
            checked.microBatches.insert(index)
            checked.scores[index] = BatchScore(lossSum: result.lossSum, correct: Int(result.correct),
                                               topFiveCorrect: Int(result.topFiveCorrect), samples: Int(result.samples))
            if checked.nonFinite == nil && !result.lossSum.isFinite { checked.nonFinite = "the loss of micro-batch \(index) is not finite" }
        }
        return checked
    }
}
