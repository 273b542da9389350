import AllReduce
import CNN
import Checkpoint
import Data
import Training
import Wire
import XCTest

/// `distributed.wire_precision: bf16`: every node of the fixed tree is rounded to bf16 once it is
/// computed (leaves after backward, sums after their addition), so what travels is bf16-exact and
/// the result still depends only on the tree. Held here, in memory, to a reference that rounds
/// every node by hand, and to the single-process reference trainer.
final class WireBFloat16Tests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    /// Leaves of `gradients` values of very different sizes followed by `state` values, not bf16-exact.
    private func leaves(_ count: Int, gradients: Int, state: Int, seed: UInt32) -> [[Float]] {
        var random = seed
        func next() -> Float {
            random = random &* 1_664_525 &+ 1_013_904_223
            return Float(Int32(bitPattern: random >> 1)) / Float(Int32.max)
        }
        return (0..<count).map { leaf in
            (0..<(gradients + state)).map { element in next() * Float(1 << ((element + leaf) % 17)) * 1e-3 + next() * 1e-7 }
        }
    }

    /// The fixed tree written out with every node rounded by hand: a leaf's gradients rounded,
    /// an inner node the rounded Float32 sum of its children, the state part never rounded, the
    /// root divided by the number of leaves (after its rounding).
    private func referenceMean(_ leaves: [[Float]], gradients: Int) -> [Float] {
        let root = referenceRoot(leaves, gradients: gradients)
        return leaves.count == 1 ? root : root.map { $0 / Float(leaves.count) }
    }

    private func referenceRoot(_ leaves: [[Float]], gradients: Int) -> [Float] {
        let tree = ReductionTree(leafCount: leaves.count)
        func round(_ values: [Float]) -> [Float] {
            values.enumerated().map { $0.offset < gradients ? BFloat16.rounded($0.element) : $0.element }
        }
        func value(_ node: TreeNode) -> [Float] {
            if node.level == 0 { return round(leaves[node.index]) }
            let left = value(node.leftChild)
            guard tree.contains(node.rightChild) else { return left }
            let right = value(node.rightChild)
            return round(zip(left, right).map { $0 + $1 })
        }
        return value(tree.root)
    }

    /// The mean as workers and an owner compute it: the micro-batches cut into contiguous runs,
    /// each run's maximal nodes summed by `ReductionTree.evaluate` with the rounding (a block of
    /// `block` elements at a time, as a worker fills its payload), those offered to a
    /// `TreeReduction` that rounds the same way. Leaves are rounded first, as the engine does.
    private func distributedMean(_ leaves: [[Float]], gradients: Int, runs: [Range<Int>], block: Int) throws -> [Float] {
        let length = leaves[0].count
        let rounding = NodeRounding.bfloat16(first: gradients)
        let tree = ReductionTree(leafCount: leaves.count)
        let rounded: [[Float]] = leaves.map { leaf in
            var copy = leaf
            copy.withUnsafeMutableBufferPointer { rounding.round($0.baseAddress!, count: length) }
            return copy
        }
        var partials: [(TreeNode, [Float])] = []
        for run in runs {
            for node in tree.maximalNodes(covering: Set(run)) {
                var values = [Float](repeating: 0, count: length)
                for start in stride(from: 0, to: length, by: block) {
                    let elements = start..<min(start + block, length)
                    try values.withUnsafeMutableBufferPointer { output in
                        try withExtendedLifetime(rounded) {
                            try tree.evaluate(node, length: elements.count, into: output.baseAddress! + start,
                                              rounding: rounding.restricted(to: elements)) { id in
                                id.level == 0 ? rounded[id.index].withUnsafeBufferPointer { $0.baseAddress! + start } : nil
                            }
                        }
                    }
                }
                partials.append((node, values))
            }
        }
        let reduction = TreeReduction(rounding: rounding)
        reduction.begin(microBatches: leaves.count, length: length)
        defer { reduction.end() }
        var mean = [Float](repeating: 0, count: length)
        try withExtendedLifetime(partials) {
            for (node, values) in partials {
                _ = try values.withUnsafeBufferPointer { try reduction.offer(node, values: $0.baseAddress!, owner: values as AnyObject) }
            }
            try mean.withUnsafeMutableBufferPointer { try reduction.mean(into: $0.baseAddress!) }
        }
        return mean
    }

    func testTheRoundedTreeEqualsAReferenceThatRoundsEveryNodeHoweverTheWorkIsCut() throws {
        let gradients = 5_003, state = 9
        for count in [1, 2, 3, 5, 8, 11] {
            let leaves = leaves(count, gradients: gradients, state: state, seed: UInt32(count))
            let expected = referenceMean(leaves, gradients: gradients)
            let cuts: [[Range<Int>]] = [[0..<count], (0..<count).map { $0..<($0 + 1) }, [0..<(count / 2), (count / 2)..<count]]
            for runs in cuts {
                for block in [64, 1000, gradients + state] {
                    let mean = try distributedMean(leaves, gradients: gradients, runs: runs.filter { !$0.isEmpty }, block: block)
                    XCTAssertEqual(mean.map(\.bitPattern), expected.map(\.bitPattern), "\(count) leaves cut \(runs), blocks of \(block)")
                }
            }
            // The root's gradients are bf16-exact before the division; the state is summed in
            // Float32 as it is without the rounding; and the rounding did change the gradients.
            let root = referenceRoot(leaves, gradients: gradients).prefix(gradients)
            XCTAssertTrue(root.allSatisfy { BFloat16.rounded($0) == $0 }, "\(count) leaves")
            let plain = try ReductionTree(leafCount: count).sumWithoutRounding(leaves)
            XCTAssertEqual(expected.suffix(state).map(\.bitPattern), plain.suffix(state).map(\.bitPattern))
            XCTAssertNotEqual(expected.prefix(gradients).map(\.bitPattern), plain.prefix(gradients).map(\.bitPattern))
        }
    }

    func testRoundingOnlyTheGradientsOfABlockOrSliceSeesWhereTheGradientsEnd() {
        let rounding = NodeRounding.bfloat16(first: 100)
        XCTAssertEqual(rounding.restricted(to: 0..<50).roundedCount, 50)
        XCTAssertEqual(rounding.restricted(to: 90..<120).roundedCount, 10)
        XCTAssertEqual(rounding.restricted(to: 100..<120).roundedCount, 0, "the state slice: nothing rounded")
        XCTAssertFalse(NodeRounding.none.rounds)
        var values: [Float] = [1.00390625, 1.01171875, 1.005, 3.14159]  // a tie to even (down), a tie (up), above, the state
        values.withUnsafeMutableBufferPointer { NodeRounding.bfloat16(first: 3).round($0.baseAddress!, count: 4) }
        XCTAssertEqual(values, [1, 1.015625, 1.0078125, 3.14159])
    }

    /// The engine rounds each leaf right after its backward (its gradients only, not batch
    /// norm's observations) and each sum it makes, so its nodes do not depend on its threads.
    func testTheEngineRoundsEveryLeafAndSumWhateverItsThreads() throws {
        let fp32 = try TrainingConfig.parse(yaml: ShardedTrainingTests.yaml().replacingOccurrences(of: "reduction: sharded", with: ""),
                                            source: "wire-bf16")
        var bf16 = fp32
        bf16.distributed.wirePrecision = .bf16
        let data = try DataSource.load(fp32)
        let work = EpochPlan(config: fp32, trainCount: data.train.count, epoch: 0).work(step: 0)
        let plain = try MicroBatchEngine(config: fp32, data: data, threads: 1)
        let state = try ModelState(config: fp32)
        plain.shareWeights(of: state.network)
        var rawLeaves: [[Float]] = []
        for micro in work {
            let output = plain.compute([micro], training: true, epoch: 0, step: 0)
            rawLeaves.append(try XCTUnwrap(output.leafGradients.nodes[TreeNode(level: 0, index: micro.index)]).values)
        }
        let gradients = plain.parameterCount
        for threads in [1, 3] {
            let engine = try MicroBatchEngine(config: bf16, data: data, threads: threads)
            engine.shareWeights(of: state.network)
            XCTAssertEqual(engine.rounding.roundedCount, gradients)
            // One micro-batch at a time: its leaf is the plain leaf with its gradients rounded.
            for (micro, raw) in zip(work, rawLeaves) where threads == 1 {
                let leaf = try XCTUnwrap(engine.compute([micro], training: true, epoch: 0, step: 0).leafGradients.nodes[TreeNode(level: 0, index: micro.index)])
                let expected = raw.enumerated().map { $0.offset < gradients ? BFloat16.rounded($0.element) : $0.element }
                XCTAssertEqual(leaf.values.map(\.bitPattern), expected.map(\.bitPattern), "micro-batch \(micro.index)")
            }
            // All of them: the root the engine's nodes give is the hand-rounded tree's.
            let output = engine.compute(work, training: true, epoch: 0, step: 0)
            let tree = ReductionTree(leafCount: work.count)
            var root = [Float](repeating: 0, count: engine.leafLength)
            try root.withUnsafeMutableBufferPointer {
                try MicroBatchEngine.sum(tree.root, of: output.leafGradients, microBatchesInStep: work.count, length: engine.leafLength,
                                         rounding: engine.rounding, into: $0.baseAddress!)
            }
            let expected = referenceRoot(rawLeaves, gradients: gradients)
            XCTAssertEqual(root.prefix(gradients).map(\.bitPattern), expected.prefix(gradients).map(\.bitPattern), "\(threads) threads")
        }
    }

    private func yaml(reduction: String, wirePrecision: String = "bf16") -> String {
        ShardedTrainingTests.yaml().replacingOccurrences(of: "reduction: sharded", with: "reduction: \(reduction)\n  wire_precision: \(wirePrecision)")
    }

    /// Coordinator and workers in memory, both strategies: the bits of the single-process
    /// reference, which rounds the same tree; and not the bits of a run without the rounding.
    func testBothStrategiesWithBFloat16OnTheWireMatchTheReferenceBitForBit() throws {
        var finals: [String: [String: [UInt32]]] = [:]
        for reduction in ["central", "sharded"] {
            let run = try InMemoryRun(yaml: yaml(reduction: reduction), steps: 4)
            XCTAssertEqual(run.config.distributed.wirePrecision, .bf16)
            let coordinator = try run.coordinator(logger: makeLogger(label: "coord", level: .warning), expectedWorkers: 3)
            for (index, threads) in [1, 2, 1].enumerated() { run.startWorker(name: "\(reduction)\(index)", threads: threads) }
            let summary = try coordinator.run()
            XCTAssertEqual(summary.steps, 4)
            try run.assertMatchesReference(summary)
            let model = try CheckpointStore.load(directory: summary.finalCheckpoint).model
            finals[reduction] = Dictionary(uniqueKeysWithValues: model.tensors.map { ($0.name, $0.values.map(\.bitPattern)) })
        }
        XCTAssertEqual(finals["central"], finals["sharded"])
        let fp32 = try InMemoryRun(yaml: yaml(reduction: "central", wirePrecision: "fp32"), steps: 4).config
        let reference = try ReferenceTrainer(config: fp32, data: DataSource.load(fp32))
        try reference.train()
        let weights = try XCTUnwrap(reference.state.modelTensors().first { $0.name.hasSuffix("weight") })
        XCTAssertNotEqual(finals["central"]?[weights.name], weights.values.map(\.bitPattern), "the rounding must change the weights")
    }

    func testTheConfigReadsWritesAndHashesTheWirePrecision() throws {
        let bf16 = try TrainingConfig.parse(yaml: yaml(reduction: "central"), source: "a.yaml")
        XCTAssertEqual(bf16.distributed.wirePrecision, .bf16)
        XCTAssertTrue(bf16.yaml.contains("  wire_precision: bf16"))
        XCTAssertEqual(try TrainingConfig.parse(yaml: bf16.yaml, source: "again"), bf16.withSource("again"))
        let fp32 = try TrainingConfig.parse(yaml: yaml(reduction: "central", wirePrecision: "fp32"), source: "b.yaml")
        XCTAssertEqual(fp32.distributed.wirePrecision, .fp32)
        XCTAssertFalse(fp32.yaml.contains("wire_precision"), "the default is not written, so earlier runs' configs read as before")
        // Like train.precision: a run may resume under the other wire precision.
        XCTAssertEqual(bf16.hash, fp32.hash)
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: yaml(reduction: "central", wirePrecision: "fp16"), source: "c.yaml")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("c.yaml") && text.contains("fp16") && text.contains("bf16"), text)
        }
    }
}

private extension TrainingConfig {
    func withSource(_ source: String) -> TrainingConfig {
        var copy = self
        copy.source = source
        return copy
    }
}

private extension ReductionTree {
    /// The tree's Float32 sum of `leaves` without any rounding.
    func sumWithoutRounding(_ leaves: [[Float]]) throws -> [Float] {
        var output = [Float](repeating: 0, count: leaves[0].count)
        try output.withUnsafeMutableBufferPointer { buffer in
            try withExtendedLifetime(leaves) {
                try evaluate(root, length: buffer.count, into: buffer.baseAddress!) { node in
                    node.level == 0 ? leaves[node.index].withUnsafeBufferPointer { $0.baseAddress! } : nil
                }
            }
        }
        return leaves.count == 1 ? output : output.map { $0 / Float(leaves.count) }
    }
}
