import AllReduce
import CNN
import Data
import Training
import Wire
import XCTest

/// The engine reuses its leaf memory from step to step, lets replicas share weights and builds the
/// mean in place; none of that may change a bit of what training computes.
final class EngineReuseTests: XCTestCase {
    /// A residual block first (its convolutions skip their input gradient), batch normalisation
    /// (observations in the leaves) and dropout (randomness keyed by step).
    static let model = """
        model:
          input: [1, 12, 12]
          layers:
            - basic_block: {filters: 4, stride: 1, projection: auto}
            - conv: {filters: 6, kernel: 3, padding: 1}
            - batchnorm
            - relu
            - maxpool: 2
            - flatten
            - dropout: 0.3
            - dense: 5
        """

    /// The model above, a frozen layer and clipping.
    private func config(threads: Int = 1, extraTrain: String = "") throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: """
            \(Self.model)
            data: {dataset: synthetic, synthetic_train: 96, synthetic_test: 16, shuffle: true}
            train:
              epochs: 1
              batch: 24
              micro_batch: 4
              seed: 11
              optimizer: {name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.001}
              freeze: ["1"]
              clip_grad_norm: 0.5
            \(extraTrain)
            """, source: "engine-reuse")
    }

    private func bits(_ pointer: UnsafePointer<Float>, _ count: Int) -> [UInt32] {
        UnsafeBufferPointer(start: pointer, count: count).map(\.bitPattern)
    }

    private func work(_ indices: [Int], microBatch: Int = 4, offset: Int = 0) -> [MicroBatch] {
        indices.map { j in MicroBatch(index: j, samples: Array((offset + j * microBatch)..<(offset + (j + 1) * microBatch))) }
    }

    /// The plain algorithm, written out with nothing reused: a new network per micro-batch with a
    /// copy of the weights, its gradient and observations copied into a leaf, the leaves summed
    /// along the tree into a separate buffer and divided, then the optimiser.
    private func plainTraining(_ config: TrainingConfig) throws -> ModelState {
        let state = try ModelState(config: config)
        let data = try DataSource.load(config)
        let stepsPerEpoch = EpochPlan(config: config, trainCount: data.train.count, epoch: 0).steps
        while !state.isFinished(stepsPerEpoch: stepsPerEpoch) {
            let work = EpochPlan(config: config, trainCount: data.train.count, epoch: state.epoch).work(step: state.stepInEpoch)
            var leaves: [[Float]] = []
            for micro in work {
                let network = try Network(config.model)
                network.parameters.pointer.update(from: state.network.parameters.pointer, count: state.parameterCount)
                network.state.pointer.update(from: state.network.state.pointer, count: network.stateCount)
                var images = [Float](repeating: 0, count: micro.samples.count * data.train.sampleSize)
                var labels = [Int32](repeating: 0, count: micro.samples.count)
                images.withUnsafeMutableBufferPointer { x in
                    labels.withUnsafeMutableBufferPointer { y in
                        data.train.copyBatch(micro.samples, images: x.baseAddress!, labels: y.baseAddress!,
                                             augmentation: config.data.augmentation, seed: config.train.seed, epoch: state.epoch)
                        let context = PassContext(mode: .training, seed: config.train.seed, epoch: state.epoch, step: state.step,
                                                  sampleIndices: micro.samples)
                        network.computeGradients(images: x.baseAddress!, labels: y.baseAddress!, batch: micro.samples.count, context: context)
                    }
                }
                leaves.append(Array(UnsafeBufferPointer(start: network.gradients.pointer, count: network.parameterCount))
                    + Array(UnsafeBufferPointer(start: network.observations.pointer, count: network.stateCount)))
            }
            var mean = [Float](repeating: 0, count: state.leafLength)
            try mean.withUnsafeMutableBufferPointer { output in
                try withExtendedLifetime(leaves) {
                    try ReductionTree(leafCount: leaves.count).evaluate(
                        ReductionTree(leafCount: leaves.count).root, length: state.leafLength, into: output.baseAddress!
                    ) { node in
                        node.level == 0 ? leaves[node.index].withUnsafeBufferPointer { $0.baseAddress! } : nil
                    }
                }
                if leaves.count > 1 {
                    for i in output.indices { output[i] /= Float(leaves.count) }
                }
                state.apply(meanGradient: output.baseAddress!, stepsPerEpoch: stepsPerEpoch)
            }
        }
        return state
    }

    func testReferenceTrainerMatchesThePlainAlgorithmBitForBitAtOneAndThreeThreads() throws {
        let config = try config()
        let plain = try plainTraining(config)
        XCTAssertEqual(plain.step, 4)
        for threads in [1, 3] {
            let trainer = try ReferenceTrainer(config: config, data: DataSource.load(config), threads: threads)
            try trainer.train()
            XCTAssertEqual(bits(trainer.state.network.parameters.pointer, plain.parameterCount),
                           bits(plain.network.parameters.pointer, plain.parameterCount), "parameters at \(threads) threads")
            XCTAssertEqual(bits(trainer.state.network.state.pointer, plain.network.stateCount),
                           bits(plain.network.state.pointer, plain.network.stateCount), "running statistics at \(threads) threads")
        }
    }

    /// Convolutions that compute with Winograd, of both tile sizes, one in a residual block, so
    /// that the engine's replicas share their transformed filters, which must follow the weights
    /// from step to step.
    private func winogradConfig() throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: """
            model:
              input: [1, 8, 8]
              layers:
                - conv: {filters: 48, kernel: 3, padding: 1}
                - relu
                - conv: {filters: 48, kernel: 3, padding: 1}
                - relu
                - conv: {filters: 80, kernel: 3, padding: 1}
                - relu
                - basic_block: {filters: 80, stride: 1}
                - globalavgpool
                - flatten
                - dense: 5
            data: {dataset: synthetic, synthetic_train: 48, synthetic_test: 8, shuffle: true}
            train:
              epochs: 1
              batch: 12
              micro_batch: 3
              seed: 13
              optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
            """, source: "engine-winograd")
    }

    func testReplicasSharingTransformedFiltersMatchThePlainAlgorithmBitForBitAtOneAndTwoThreads() throws {
        let config = try winogradConfig()
        // C K / (C + K) of 24 and 30 choose F(2x2, 3x3) and 40 on whole tiles F(4x4, 3x3) with
        // either GEMM library's thresholds.
        let algorithms = try Network(config.model).layers.flatMap { layer -> [Conv2D.Algorithm] in
            if let convolution = layer as? Conv2D { return [convolution.algorithm] }
            if let block = layer as? Residual { return block.path.children.compactMap { ($0.layer as? Conv2D)?.algorithm } }
            return []
        }
        XCTAssertEqual(algorithms, [.im2col, .winograd, .winograd, .winograd4x4, .winograd4x4])
        // The replicas keep one U per Winograd layer between them: 16 or 36 positions per
        // (filter, channel) pair, 36 of them with 8 floats of slack.
        let engine = try MicroBatchEngine(config: config, data: DataSource.load(config), threads: 2)
        _ = engine.compute(work([0, 1], microBatch: 3), training: true, epoch: 0, step: 0)
        let transformFloats = 16 * 48 * 48 + 16 * 80 * 48 + 2 * (36 * 80 * 80 + 8)
        XCTAssertGreaterThanOrEqual(engine.filterTransforms.capacity, transformFloats)
        XCTAssertLessThan(engine.filterTransforms.capacity, 2 * transformFloats)
        let plain = try plainTraining(config)
        XCTAssertEqual(plain.step, 4)
        for threads in [1, 2] {
            let trainer = try ReferenceTrainer(config: config, data: DataSource.load(config), threads: threads)
            try trainer.train()
            let got = bits(trainer.state.network.parameters.pointer, plain.parameterCount)
            let expected = bits(plain.network.parameters.pointer, plain.parameterCount)
            XCTAssertTrue(got == expected,
                          "\(zip(got, expected).filter { $0 != $1 }.count) of \(got.count) parameters differ at \(threads) threads")
        }
    }

    /// Checks every node `got` holds against the same node added up from `leaves`, an output of
    /// an engine with a thread per micro-batch (which therefore holds single leaves only).
    private func assertNodes(_ got: MicroBatchOutput, match leaves: MicroBatchOutput, length: Int, _ label: String) throws {
        XCTAssertTrue(leaves.leafGradients.nodes.keys.allSatisfy { $0.level == 0 }, label)
        for (node, value) in got.leafGradients.nodes {
            XCTAssertEqual(value.count, length)
            var expected = [Float](repeating: .nan, count: length)
            try expected.withUnsafeMutableBufferPointer { output in
                // The smallest tree in which the node is whole.
                let tree = ReductionTree(leafCount: node.firstLeaf + (1 << node.level))
                try tree.evaluate(node, length: length, into: output.baseAddress!) { id in
                    id.level == 0 ? leaves.leafGradients.nodes[id].map { UnsafePointer($0.pointer) } : nil
                }
            }
            XCTAssertEqual(value.values.map(\.bitPattern), expected.map(\.bitPattern), "\(label): \(node)")
        }
    }

    private func loadedEngine(_ config: TrainingConfig, _ data: DataSource, threads: Int, weights: [Float]) throws -> MicroBatchEngine {
        let engine = try MicroBatchEngine(config: config, data: data, threads: threads)
        weights.withUnsafeBufferPointer { engine.load(weights: $0.baseAddress!) }
        return engine
    }

    func testAReusedEngineGivesTheSumsOfAFreshOneWhateverCameBefore() throws {
        let config = try config()
        let data = try DataSource.load(config)
        let reused = try MicroBatchEngine(config: config, data: data, threads: 2)
        let master = try ModelState(config: config)
        var weights = [Float](repeating: 0, count: master.weightsCount)
        weights.withUnsafeMutableBufferPointer { master.copyWeights(into: $0.baseAddress!) }
        // Steps of 6, 2, 3 and 1 micro-batches with different weights each, and an evaluation
        // in between: a buffer that kept anything of an earlier step would differ from a fresh one.
        let steps: [([Int], Bool)] = [([0, 1, 2, 3, 4, 5], true), ([1, 0], true), ([0, 1, 2], false), ([2, 0, 1], true), ([0], true)]
        for (step, (indices, training)) in steps.enumerated() {
            for i in weights.indices where i % 7 == step { weights[i] *= -1.5 }
            let items = work(indices, offset: training ? step * 8 : 0)
            weights.withUnsafeBufferPointer { reused.load(weights: $0.baseAddress!) }
            let fresh = try loadedEngine(config, data, threads: indices.count, weights: weights)
            let got = reused.compute(items, training: training, epoch: 0, step: step)
            let expected = fresh.compute(items, training: training, epoch: 0, step: step)
            XCTAssertEqual(got.leafGradients.microBatches, training ? Set(indices) : [], "step \(step)")
            XCTAssertEqual(got.scores, expected.scores, "step \(step)")
            try assertNodes(got, match: expected, length: reused.leafLength, "step \(step)")
        }
    }

    func testEachThreadAddsWholeRangesAsItGoesAndTheTreeGetsTheSameSums() throws {
        let config = try config()
        let data = try DataSource.load(config)
        let master = try ModelState(config: config)
        var weights = [Float](repeating: 0, count: master.weightsCount)
        weights.withUnsafeMutableBufferPointer { master.copyWeights(into: $0.baseAddress!) }
        let node = TreeNode.init(level:index:)
        let cases: [(threads: Int, indices: [Int], nodes: Set<TreeNode>)] = [
            (1, Array(0..<6), [node(2, 0), node(1, 2)]),
            (1, [4, 2, 3], [node(1, 1), node(0, 4)]),
            (2, Array(0..<4), [node(1, 0), node(1, 1)]),
            (2, Array(0..<6), [node(1, 0), node(0, 2), node(0, 3), node(1, 2)]),
        ]
        for (threads, indices, nodes) in cases {
            let label = "\(threads) thread(s), micro-batches \(indices)"
            let engine = try loadedEngine(config, data, threads: threads, weights: weights)
            let leaves = try loadedEngine(config, data, threads: indices.count, weights: weights)
            let got = engine.compute(work(indices), training: true, epoch: 0, step: 0)
            let expected = leaves.compute(work(indices), training: true, epoch: 0, step: 0)
            XCTAssertEqual(Set(got.leafGradients.nodes.keys), nodes, label)
            try assertNodes(got, match: expected, length: engine.leafLength, label)
            // What a worker would send: the same partial sums whichever nodes it held.
            let total = indices.max()! + 1
            let sent = MicroBatchEngine.partialSums(of: got.leafGradients, microBatchesInStep: total)
            XCTAssertEqual(sent, MicroBatchEngine.partialSums(of: expected.leafGradients, microBatchesInStep: total), label)
            for partial in sent {
                var a = [Float](repeating: .nan, count: engine.leafLength), b = a
                try a.withUnsafeMutableBufferPointer {
                    try MicroBatchEngine.sum(partial, of: got.leafGradients, microBatchesInStep: total, length: engine.leafLength, into: $0.baseAddress!)
                }
                try b.withUnsafeMutableBufferPointer {
                    try MicroBatchEngine.sum(partial, of: expected.leafGradients, microBatchesInStep: total, length: engine.leafLength, into: $0.baseAddress!)
                }
                XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(label): \(partial)")
            }
        }
    }

    func testBuffersOfAnOutputStillHeldAreNotReused() throws {
        let config = try config()
        let engine = try MicroBatchEngine(config: config, data: try DataSource.load(config), threads: 1)
        let master = try ModelState(config: config)
        engine.shareWeights(of: master.network)
        let first = engine.compute(work([0, 1, 2]), training: true, epoch: 0, step: 0)
        let kept = first.leafGradients.nodes.mapValues { $0.values.map(\.bitPattern) }
        for round in 1...2 {
            let later = engine.compute(work([0, 1, 2], offset: 40), training: true, epoch: 0, step: round)
            for (node, value) in later.leafGradients.nodes {
                XCTAssertFalse(first.leafGradients.nodes.values.contains { $0 === value }, "\(node) reused a held buffer")
            }
        }
        XCTAssertEqual(first.leafGradients.nodes.mapValues { $0.values.map(\.bitPattern) }, kept)
    }

    func testSharedWeightsGiveTheSameSumsAsLoadedOnesAndFollowUpdates() throws {
        let config = try config()
        let data = try DataSource.load(config)
        let master = try ModelState(config: config)
        let shared = try MicroBatchEngine(config: config, data: data, threads: 2)
        let pointed = try MicroBatchEngine(config: config, data: data, threads: 1)
        shared.shareWeights(of: master.network)
        for step in 0..<2 {
            var weights = [Float](repeating: 0, count: master.weightsCount)
            weights.withUnsafeMutableBufferPointer { master.copyWeights(into: $0.baseAddress!) }
            let loaded = try loadedEngine(config, data, threads: 3, weights: weights)
            // Weights read where they lie, as a worker could read a received message.
            let message = FloatBuffer(count: master.weightsCount)
            master.copyWeights(into: message.pointer)
            pointed.shareWeights(message.pointer, owner: message)
            let items = work([0, 1, 2])
            let expected = loaded.compute(items, training: true, epoch: 0, step: step)
            try assertNodes(shared.compute(items, training: true, epoch: 0, step: step), match: expected,
                            length: loaded.leafLength, "shared network, step \(step)")
            try assertNodes(pointed.compute(items, training: true, epoch: 0, step: step), match: expected,
                            length: loaded.leafLength, "shared memory, step \(step)")
            // The master weights move; the sharing engine must see the move at the next step.
            for i in 0..<master.parameterCount { master.network.parameters.pointer[i] *= 0.5 }
        }
    }
}
