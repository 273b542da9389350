import AllReduce
import CNN
import Data
import Foundation
import Training
import Wire
import XCTest

/// A streaming engine hands out each slice of its partial sums once backward has made it final,
/// last layers first; what it hands out, whenever it does, has the bits of the partial sums a
/// computation without streaming sends at its end.
final class PartialSumStreamTests: XCTestCase {
    /// `EngineReuseTests.model`: a residual block, a convolution with batch normalisation
    /// (observations in the leaves) and a dense layer, parameters spread over layers whose backward
    /// comes at different times, cut below into slices much finer than the norm blocks a run uses.
    private func config(wirePrecision: String = "fp32") throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: """
            \(EngineReuseTests.model)
            data: {dataset: synthetic, synthetic_train: 96, synthetic_test: 16}
            train: {epochs: 1, batch: 24, micro_batch: 4, seed: 5, optimizer: {name: sgd, lr: 0.05}}
            distributed: {wire_precision: \(wirePrecision)}
            """, source: "partial-sum-stream")
    }

    private func work(_ indices: [Int]) -> [MicroBatch] {
        indices.map { j in MicroBatch(index: j, samples: Array((j * 4)..<((j + 1) * 4))) }
    }

    /// What `publish` saw: the slices named, and a copy of those slices of every partial sum taken
    /// at that moment (later writes into the buffers would not change them).
    private final class Recorder: @unchecked Sendable {
        let lock = NSLock()
        var calls: [(ready: Range<Int>, values: [TreeNode: [UInt32]])] = []
    }

    private func streamedSums(_ config: TrainingConfig, threads: Int, indices: [Int], total: Int, slices: [Range<Int>],
                              weights: [Float]) throws -> (calls: [(ready: Range<Int>, values: [TreeNode: [UInt32]])], output: MicroBatchOutput) {
        let engine = try MicroBatchEngine(config: config, data: DataSource.load(config), threads: threads)
        weights.withUnsafeBufferPointer { engine.load(weights: $0.baseAddress!) }
        let recorder = Recorder()
        let stream = PartialSumStream(slices: slices, microBatchesInStep: total) { ready, values in
            let elements = slices[ready.lowerBound].lowerBound..<slices[ready.upperBound - 1].upperBound
            let copies = values.mapValues { buffer in UnsafeBufferPointer(start: buffer.pointer + elements.lowerBound, count: elements.count).map(\.bitPattern) }
            recorder.lock.withLock { recorder.calls.append((ready, copies)) }
        }
        let output = engine.compute(work(indices), training: true, epoch: 0, step: 3, streaming: stream)
        return (recorder.calls, output)
    }

    /// The partial sums a worker sends at the end without streaming, each whole.
    private func endSums(_ config: TrainingConfig, threads: Int, indices: [Int], total: Int, weights: [Float]) throws -> [TreeNode: [UInt32]] {
        let engine = try MicroBatchEngine(config: config, data: DataSource.load(config), threads: threads)
        weights.withUnsafeBufferPointer { engine.load(weights: $0.baseAddress!) }
        let output = engine.compute(work(indices), training: true, epoch: 0, step: 3)
        var sums: [TreeNode: [UInt32]] = [:]
        for node in MicroBatchEngine.partialSums(of: output.leafGradients, microBatchesInStep: total) {
            var values = [Float](repeating: .nan, count: engine.leafLength)
            try values.withUnsafeMutableBufferPointer {
                try MicroBatchEngine.sum(node, of: output.leafGradients, microBatchesInStep: total, length: engine.leafLength,
                                         rounding: engine.rounding, into: $0.baseAddress!)
            }
            sums[node] = values.map(\.bitPattern)
        }
        return sums
    }

    /// Where two bit patterns first differ, and how (nil when they are equal).
    private func firstDifference(_ got: [UInt32], _ expected: [UInt32]) -> String? {
        guard got.count == expected.count else { return "\(got.count) values, expected \(expected.count)" }
        return zip(got, expected).enumerated().first { $0.element.0 != $0.element.1 }.map { "element \($0.offset): \($0.element.0) not \($0.element.1)" }
    }

    func testEachSliceIsHandedOutOnceLastLayersFirstWithTheBitsOfTheSumsSentAtTheEnd() throws {
        for precision in ["fp32", "bf16"] {
            let config = try config(wirePrecision: precision)
            let master = try ModelState(config: config)
            var weights = [Float](repeating: 0, count: master.weightsCount)
            weights.withUnsafeMutableBufferPointer { master.copyWeights(into: $0.baseAddress!) }
            let layout = ShardLayout(parameterCount: master.parameterCount, stateCount: master.network.stateCount, block: 64)
            XCTAssertGreaterThan(layout.slices.count, 8)
            // One micro-batch; whole nodes on one thread; a node split over threads (summed into a
            // buffer of its own); a micro-batch of a step's odd tree; a thread per micro-batch.
            let cases: [(threads: Int, indices: [Int], total: Int)] = [
                (1, [2], 6), (1, [0, 1, 2, 3, 4, 5], 6), (2, [0, 1, 2, 3, 4, 5], 6), (3, [1, 2, 3, 5], 6), (1, [2], 3), (3, [0, 1, 2], 3),
            ]
            for (threads, indices, total) in cases {
                let label = "\(precision), \(threads) thread(s), micro-batches \(indices) of \(total)"
                let expected = try endSums(config, threads: threads, indices: indices, total: total, weights: weights)
                let (calls, output) = try streamedSums(config, threads: threads, indices: indices, total: total, slices: layout.slices, weights: weights)
                // Every slice once, each call below the one before: together the whole leaf.
                XCTAssertEqual(calls.map(\.ready.upperBound).first, layout.slices.count, label)
                XCTAssertEqual(calls.map(\.ready.lowerBound).last, 0, label)
                for (earlier, later) in zip(calls, calls.dropFirst()) { XCTAssertEqual(later.ready.upperBound, earlier.ready.lowerBound, label) }
                // The first call came while backward had the first layer still to do.
                XCTAssertGreaterThan(calls.count, 2, label)
                XCTAssertGreaterThan(calls.first?.ready.lowerBound ?? 0, 0, label)
                for call in calls {
                    XCTAssertEqual(Set(call.values.keys), Set(expected.keys), label)
                    let elements = layout.slices[call.ready.lowerBound].lowerBound..<layout.slices[call.ready.upperBound - 1].upperBound
                    for (node, bits) in call.values {
                        XCTAssertNil(firstDifference(bits, Array(expected[node]![elements])), "\(label): \(node), slices \(call.ready)")
                    }
                }
                // The output holds the same partial sums, whole.
                XCTAssertEqual(Set(output.partialSums?.keys ?? [:].keys), Set(expected.keys), label)
                for (node, buffer) in output.partialSums ?? [:] {
                    let bits = UnsafeBufferPointer(start: buffer.pointer, count: buffer.count).map(\.bitPattern)
                    XCTAssertNil(firstDifference(bits, expected[node] ?? []), "\(label): \(node)")
                }
            }
        }
    }
}
