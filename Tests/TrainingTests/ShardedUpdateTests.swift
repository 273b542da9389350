import AllReduce
import CNN
import TestSupport
import Training
import Wire
import XCTest

/// The arithmetic of the sharded reduction, before any message is sent: slices of the flat vector
/// reduced along the fixed tree by their owners, clipped with the norm from every slice's block
/// sums, and updated with each owner's part of the optimiser state, give the bits of the central
/// step, for any number of workers and any cut.
final class ShardedUpdateTests: XCTestCase {
    /// Parameters spanning four norm blocks (the dense layer), and batch norm's state.
    private func config(optimizer: String, extra: String = "") throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: """
            model:
              input: [1, 16, 16]
              layers:
                - conv: {filters: 8, kernel: 3, padding: 1}
                - batchnorm
                - relu
                - flatten
                - dense: 100
                - relu
                - dense: 10
            data: {dataset: synthetic, path: seed-1}
            train:
              epochs: 1
              batch: 12
              micro_batch: 2
              seed: 3
              optimizer: \(optimizer)
            \(extra)
            """, source: "sharded-fixture")
    }

    /// One step's micro-batch leaves: gradients, then state observations that are positive (a
    /// batch norm observation carries its sample count, which must be above zero to apply).
    private func leaves(step: Int, count: Int, state: ModelState) -> [[Float]] {
        (0..<count).map { m in
            let gradients = TestArrays.normal(count: state.parameterCount, seed: UInt64(step), stream: UInt64(m), scale: 0.05)
            let observations = TestArrays.uniform(count: state.network.stateCount, seed: UInt64(step), stream: UInt64(100 + m),
                                                  lower: 0.5, upper: 2)
            return gradients + observations
        }
    }

    /// What `workers` workers send for a step: each holds a contiguous run of micro-batches and
    /// sends the largest tree nodes inside it, as the real worker does.
    private func partialSums(of leaves: [[Float]], workers: Int) throws -> [(TreeNode, [Float])] {
        let tree = ReductionTree(leafCount: leaves.count)
        let length = leaves[0].count
        let pointers = leaves.map { leaf in
            let copy = UnsafeMutablePointer<Float>.allocate(capacity: length)
            copy.initialize(from: leaf, count: length)
            return UnsafePointer(copy)
        }
        defer { pointers.forEach { $0.deallocate() } }
        var sent: [(TreeNode, [Float])] = []
        for w in 0..<workers {
            let held = Set((leaves.count * w / workers)..<(leaves.count * (w + 1) / workers))
            for node in tree.maximalNodes(covering: held) {
                var value = [Float](repeating: 0, count: length)
                try value.withUnsafeMutableBufferPointer { output in
                    try tree.evaluate(node, length: length, into: output.baseAddress!) { $0.level == 0 ? pointers[$0.index] : nil }
                }
                sent.append((node, value))
            }
        }
        return sent
    }

    /// The central step: the whole vector's tree at one site, then `ModelState.apply`.
    private func centralStep(_ state: ModelState, _ sent: [(TreeNode, [Float])], microBatches: Int) throws {
        let reduction = TreeReduction()
        reduction.begin(microBatches: microBatches, length: state.leafLength)
        defer { reduction.end() }
        for (node, values) in sent {
            _ = try values.withUnsafeBufferPointer { try reduction.offer(node, values: $0.baseAddress!, owner: values as AnyObject) }
        }
        var mean = [Float](repeating: 0, count: state.leafLength)
        try mean.withUnsafeMutableBufferPointer { try reduction.mean(into: $0.baseAddress!) }
        mean.withUnsafeMutableBufferPointer { state.apply(meanGradient: $0.baseAddress!, stepsPerEpoch: 6) }
    }

    /// The sharded step: each slice's tree at its owner, block sums for the norm, each parameter
    /// slice updated with its own optimiser part, the state slice applied layer by layer.
    private func shardedStep(_ state: ModelState, owners: [ParameterSliceUpdate?], layout: ShardLayout,
                             _ sent: [(TreeNode, [Float])], microBatches: Int, learningRate: Float) throws {
        var means: [[Float]] = []
        for slice in layout.slices {
            let reduction = TreeReduction()
            reduction.begin(microBatches: microBatches, length: slice.count)
            let parts = sent.map { (node, values) in (node, Array(values[slice])) }
            for (node, values) in parts {
                _ = try values.withUnsafeBufferPointer { try reduction.offer(node, values: $0.baseAddress!, owner: values as AnyObject) }
            }
            var mean = [Float](repeating: 0, count: slice.count)
            try mean.withUnsafeMutableBufferPointer { try reduction.mean(into: $0.baseAddress!) }
            reduction.end()
            means.append(mean)
        }
        var norm: Double?
        if owners.compactMap({ $0 }).first?.clips == true {
            var sums: [Double] = []
            for (i, owner) in owners.enumerated() {
                guard let owner else { continue }
                sums += means[i].withUnsafeMutableBufferPointer { owner.blockSums(ofMeanGradient: $0.baseAddress!) }
            }
            norm = GradientClipping.norm(blockSums: sums)
        }
        for (i, slice) in layout.slices.enumerated() {
            if let owner = owners[i] {
                means[i].withUnsafeMutableBufferPointer {
                    let weights = state.network.parameters.pointer + slice.lowerBound
                    owner.apply(gradient: $0.baseAddress!, norm: norm, learningRate: learningRate, from: weights, into: weights)
                }
            } else {
                means[i].withUnsafeBufferPointer { state.network.applyObservations($0.baseAddress!) }
            }
        }
    }

    /// Whether two states hold the same bits in every parameter and state value (compared as
    /// memory: a float comparison would call -0 and 0 equal).
    private func sameBits(_ a: ModelState, _ b: ModelState) -> Bool {
        memcmp(a.network.parameters.pointer, b.network.parameters.pointer, a.parameterCount * 4) == 0
            && memcmp(a.network.state.pointer, b.network.state.pointer, a.network.stateCount * 4) == 0
    }

    private func assertShardedEqualsCentral(_ config: TrainingConfig, maximumSlices: Int, workers: [Int],
                                            file: StaticString = #filePath, line: UInt = #line) throws {
        let microBatches = config.train.batch / config.train.microBatch
        let central = try ModelState(config: config)
        let layout = ShardLayout(parameterCount: central.parameterCount, stateCount: central.network.stateCount,
                                 block: GradientClipping.normBlock, maximumSlices: maximumSlices)
        XCTAssertGreaterThan(layout.slices.count, 2, "the fixture must be cut into several slices", file: file, line: line)
        var sharded: [Int: (state: ModelState, owners: [ParameterSliceUpdate?])] = [:]
        for n in workers {
            let state = try ModelState(config: config)
            let owners = layout.slices.indices.map { i in
                layout.isStateSlice(i) ? nil
                    : ParameterSliceUpdate(config: config, range: layout.slices[i], trainableRanges: state.trainableRanges)
            }
            sharded[n] = (state, owners)
        }
        for step in 0..<3 {
            let stepLeaves = leaves(step: step, count: microBatches, state: central)
            let learningRate = central.learningRate(stepsPerEpoch: 6)
            try centralStep(central, try partialSums(of: stepLeaves, workers: 1), microBatches: microBatches)
            for n in workers {
                let (state, owners) = sharded[n]!
                try shardedStep(state, owners: owners, layout: layout, try partialSums(of: stepLeaves, workers: n),
                                microBatches: microBatches, learningRate: learningRate)
                XCTAssertTrue(sameBits(state, central), "step \(step), \(n) workers: weights differ", file: file, line: line)
            }
        }
        let centralState = central.optimizer.stateTensors
        for n in workers {
            let whole = ParameterSliceUpdate.wholeState(of: sharded[n]!.owners.compactMap { $0 })
            XCTAssertEqual(whole.map(\.name), centralState.map(\.name), file: file, line: line)
            XCTAssertEqual(whole.map { $0.values.map(\.bitPattern) }, centralState.map { $0.values.map(\.bitPattern) },
                           "\(n) workers: optimiser state differs", file: file, line: line)
        }
    }

    func testSGDWithMomentumAndDecayMatchesCentralForAnyWorkerCount() throws {
        let config = try config(optimizer: "{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.0001}")
        try assertShardedEqualsCentral(config, maximumSlices: 64, workers: [1, 2, 3, 4, 8])
    }

    func testAdamWithClippingAndFrozenLayerMatchesCentral() throws {
        // A tight limit, so that every step is clipped with the global norm.
        let config = try config(optimizer: "{name: adamw, lr: 0.001, weight_decay: 0.01}",
                                extra: "  clip_grad_norm: 0.5\n  freeze: [\"0\"]")
        try assertShardedEqualsCentral(config, maximumSlices: 64, workers: [1, 3, 5])
    }

    func testSlicesOfSeveralBlocksGiveTheSameBits() throws {
        let config = try config(optimizer: "{name: adam, lr: 0.001}", extra: "  clip_grad_norm: 0.5")
        try assertShardedEqualsCentral(config, maximumSlices: 2, workers: [2])
    }

    func testTheNormFromEverySlicesBlockSumsIsTheWholeVectorsNormToTheBit() {
        // Four and a half blocks of values spread over many magnitudes, so that the order of
        // additions shows in the last bits of the sum.
        let block = GradientClipping.normBlock
        let count = 4 * block + block / 2
        let values = TestArrays.normal(count: count, seed: 11, scale: 3).enumerated().map { $1 * Float(1 + $0 % 97) }
        let whole = values.withUnsafeBufferPointer { GradientClipping.globalNorm($0.baseAddress!, count: count) }
        for cut in [[0, count], [0, block, count], [0, 2 * block, 3 * block, count], Array(stride(from: 0, to: count, by: block)) + [count]] {
            var sums: [Double] = []
            for (start, end) in zip(cut, cut.dropFirst()) {
                sums += values.withUnsafeBufferPointer {
                    GradientClipping.blockSumsOfSquares($0.baseAddress! + start, offset: start, count: end - start)
                }
            }
            XCTAssertEqual(GradientClipping.norm(blockSums: sums).bitPattern, whole.bitPattern, "cut at \(cut)")
        }
    }

    func testRestoringASliceFromTheWholeStateTakesItsPart() throws {
        let config = try config(optimizer: "{name: adam, lr: 0.001}")
        let state = try ModelState(config: config)
        let layout = ShardLayout(parameterCount: state.parameterCount, stateCount: state.network.stateCount,
                                 block: GradientClipping.normBlock)
        let whole: [(name: String, values: [Float])] = [
            ("exp_avg", TestArrays.arange(state.parameterCount)), ("exp_avg_sq", TestArrays.arange(state.parameterCount)),
            ("step", [7]),
        ]
        let slices = try layout.slices.indices.filter { !layout.isStateSlice($0) }.map { i in
            let slice = ParameterSliceUpdate(config: config, range: layout.slices[i], trainableRanges: state.trainableRanges)
            try slice.restore(fromWhole: whole, parameterCount: state.parameterCount)
            return slice
        }
        XCTAssertEqual(slices[1].stateTensors[0].values.first, Float(slices[1].range.lowerBound))
        let back = ParameterSliceUpdate.wholeState(of: slices)
        XCTAssertEqual(back.map(\.values), whole.map(\.values))
    }
}
