import CNN
import Dispatch
import Foundation
import TestSupport
import XCTest

/// Results written by concurrent workers; the lock makes the shared dictionary safe to touch
/// from several threads, which is why the unchecked Sendable is sound.
private final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var gradients: [Int: [[Float]]] = [:]
    private var failures: [String] = []

    func record(microBatch: Int, _ values: [Float]) {
        lock.lock()
        gradients[microBatch, default: []].append(values)
        lock.unlock()
    }

    func fail(_ message: String) {
        lock.lock()
        failures.append(message)
        lock.unlock()
    }

    var snapshot: (gradients: [Int: [[Float]]], failures: [String]) {
        lock.lock()
        defer { lock.unlock() }
        return (gradients, failures)
    }
}

final class DeterminismTests: XCTestCase {
    private static let seed: UInt64 = 2024
    private static let microBatch = 8

    override func setUp() {
        super.setUp()
        BLAS.useSingleThread()
    }

    private static func microBatchData(_ index: Int, spec: ModelSpec) -> (images: [Float], labels: [Int32]) {
        let images = TestArrays.normal(count: microBatch * spec.input.count, seed: seed, stream: UInt64(index))
        let labels = TestArrays.labels(count: microBatch, classes: 10, seed: seed, stream: UInt64(index))
        return (images, labels)
    }

    func testComputeGradientsTwiceGivesBitIdenticalGradients() throws {
        let network = try Network(TestModels.twoBlockCNN)
        network.initialise(seed: Self.seed)
        let (images, labels) = Self.microBatchData(0, spec: TestModels.twoBlockCNN)
        let context = PassContext(mode: .training, seed: Self.seed, sampleIndices: Array(0..<Self.microBatch))
        let first = gradients(of: network, images: images, labels: labels, context: context)
        let second = gradients(of: network, images: images, labels: labels, context: context)
        XCTAssertTrue(first.contains { $0 != 0 }, "a zero gradient would make this comparison vacuous")
        XCTAssertEqual(first.map(\.bitPattern), second.map(\.bitPattern))
    }

    func testConcurrentReplicasOnSeparateThreadsMatchASequentialRunBitForBit() throws {
        let spec = TestModels.twoBlockCNN
        let microBatches = 2

        // Sequential reference: one network computes every micro-batch in turn.
        let reference = try Network(spec)
        reference.initialise(seed: Self.seed)
        let expected = (0..<microBatches).map { index -> [Float] in
            let (images, labels) = Self.microBatchData(index, spec: spec)
            let context = PassContext(mode: .training, seed: Self.seed, sampleIndices: Array(0..<Self.microBatch))
            return gradients(of: reference, images: images, labels: labels, context: context)
        }
        XCTAssertNotEqual(expected[0], expected[1], "different micro-batches should give different gradients")

        // Four replicas on however many cores there are, each built on its own thread from the
        // same seed; replica r computes micro-batch r % 2 five times so the threads overlap.
        let box = ResultBox()
        let seed = Self.seed, microBatch = Self.microBatch
        DispatchQueue.concurrentPerform(iterations: 4) { replica in
            do {
                let network = try Network(spec)
                network.initialise(seed: seed)
                let index = replica % microBatches
                let (images, labels) = Self.microBatchData(index, spec: spec)
                let context = PassContext(mode: .training, seed: seed, sampleIndices: Array(0..<microBatch))
                for _ in 0..<5 {
                    box.record(microBatch: index, gradients(of: network, images: images, labels: labels, context: context))
                }
            } catch {
                box.fail("replica \(replica): \(error)")
            }
        }

        let (results, failures) = box.snapshot
        XCTAssertEqual(failures, [])
        for index in 0..<microBatches {
            let computed = results[index] ?? []
            XCTAssertEqual(computed.count, 10, "micro-batch \(index) should have been computed 10 times")
            for (run, values) in computed.enumerated() {
                let firstDifference = zip(values, expected[index]).enumerated().first { $0.element.0.bitPattern != $0.element.1.bitPattern }
                XCTAssertNil(
                    firstDifference.map { "parameter \($0.offset): \($0.element.0) vs sequential \($0.element.1)" },
                    "micro-batch \(index), concurrent run \(run) differs from the sequential run")
            }
        }
    }
}
