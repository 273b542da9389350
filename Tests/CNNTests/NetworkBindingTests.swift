import CNN
import TestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Networks bound to memory they do not own, the input gradient nobody uses, and buffers that
/// cost nothing until written.
final class NetworkBindingTests: XCTestCase {
    private let batch = 3

    private func images(for network: Network, seed: UInt64) -> [Float] {
        TestArrays.normal(count: batch * network.inputShape.count, seed: seed)
    }

    private let labels: [Int32] = [1, 0, 3]

    func testNetworksSharingParametersGiveTheGradientsOfOwnCopiesInTheBoundMemory() throws {
        let spec = ModelSpec(
            input: FeatureShape(channels: 2, height: 8, width: 8),
            layers: [
                .convolution(ConvolutionSpec(filters: 4, kernel: 3, padding: .explicit(1))),
                .batchNorm(BatchNormSpec()), .relu, .maxPool(size: 2, stride: nil, padding: 0),
                .flatten, .dense(units: 4, bias: true),
            ])
        let owner = try Network(spec)
        owner.initialise(seed: 12)
        let copy = try Network(spec)
        copy.parameters.pointer.update(from: owner.parameters.pointer, count: owner.parameterCount)
        copy.state.pointer.update(from: owner.state.pointer, count: owner.stateCount)
        let context = PassContext(mode: .training, seed: 3, sampleIndices: [0, 1, 2])
        let x = images(for: owner, seed: 4)
        let expected = gradients(of: copy, images: x, labels: labels, context: context)
        let expectedObservations = Array(UnsafeBufferPointer(start: copy.observations.pointer, count: copy.stateCount))

        let borrower = try Network(spec)
        // Stale values in the bound memory must not survive into the result.
        let leaf = [Float](repeating: 9, count: owner.parameterCount + owner.stateCount)
        var result = leaf
        try result.withUnsafeMutableBufferPointer { memory in
            let base = try XCTUnwrap(memory.baseAddress)
            borrower.bind(parameters: owner.parameters.pointer, gradients: base)
            borrower.bind(state: owner.state.pointer, observations: base + owner.parameterCount)
            XCTAssertEqual(borrower.boundGradients, base)
            XCTAssertEqual(borrower.boundParameters, owner.parameters.pointer)
            _ = gradients(of: borrower, images: x, labels: labels, context: context)
        }
        XCTAssertEqual(Array(result[..<owner.parameterCount]).map(\.bitPattern), expected.map(\.bitPattern))
        XCTAssertEqual(Array(result[owner.parameterCount...]).map(\.bitPattern), expectedObservations.map(\.bitPattern))
        XCTAssertTrue((0..<borrower.parameterCount).allSatisfy { borrower.gradients.pointer[$0] == 0 },
                      "the borrower's own gradients must stay untouched")

        borrower.bindOwnBuffers()
        XCTAssertEqual(borrower.boundGradients, borrower.gradients.pointer)
        borrower.loadParameters(from: owner.parameters.pointer)
        borrower.state.pointer.update(from: owner.state.pointer, count: owner.stateCount)
        XCTAssertEqual(gradients(of: borrower, images: x, labels: labels, context: context).map(\.bitPattern), expected.map(\.bitPattern))
    }

    private func convolutions(in layer: Layer) -> [Conv2D] {
        switch layer {
        case let convolution as Conv2D: return [convolution]
        case let sequential as Sequential: return sequential.children.flatMap { convolutions(in: $0.layer) }
        case let residual as Residual: return convolutions(in: residual.path) + (residual.projection.map { convolutions(in: $0) } ?? [])
        default: return []
        }
    }

    func testOnlyTheConvolutionsSeeingTheInputSkipTheirInputGradientAndNoParameterGradientChanges() throws {
        let plain = try Network(TestModels.twoBlockCNN)
        XCTAssertEqual(plain.layers.flatMap { convolutions(in: $0) }.map(\.computesInputGradient), [false, true])

        let spec = ModelSpec(
            input: FeatureShape(channels: 2, height: 6, width: 6),
            layers: [
                .basicBlock(filters: 3, stride: 1, projection: .auto),
                .basicBlock(filters: 3, stride: 1, projection: .auto),
                .globalAveragePool, .dense(units: 4, bias: true),
            ])
        let blocks = try Network(spec)
        blocks.initialise(seed: 9)
        // Block 0's first 3x3 convolution sees the input (its 1x1 projection has no such switch);
        // its second convolution and block 1's do not.
        XCTAssertEqual(convolutions(in: blocks.layers[0]).map(\.computesInputGradient), [false, true])
        XCTAssertTrue(convolutions(in: blocks.layers[1]).allSatisfy(\.computesInputGradient))

        let everything = try Network(spec)
        everything.initialise(seed: 9)
        for convolution in everything.layers.flatMap({ convolutions(in: $0) }) { convolution.computesInputGradient = true }
        let context = PassContext(mode: .training, seed: 1, sampleIndices: [0, 1, 2])
        let x = images(for: blocks, seed: 8)
        XCTAssertEqual(gradients(of: blocks, images: x, labels: labels, context: context).map(\.bitPattern),
                       gradients(of: everything, images: x, labels: labels, context: context).map(\.bitPattern))
    }

    func testBuffersReadZeroWhenMadeAndWhenGrown() {
        for count in [5, 1000, 300_000, 2_000_000] {
            let buffer = FloatBuffer(count: count)
            XCTAssertGreaterThanOrEqual(buffer.capacity, count)
            XCTAssertEqual(Int(bitPattern: buffer.pointer) % 64, 0)
            XCTAssertTrue((0..<count).allSatisfy { buffer.pointer[$0] == 0 }, "\(count) floats")
            buffer.pointer.update(repeating: 3, count: count)
            let larger = buffer.capacity + count
            let grown = buffer.reserve(larger)
            XCTAssertGreaterThanOrEqual(buffer.capacity, larger)
            XCTAssertTrue((0..<larger).allSatisfy { grown[$0] == 0 }, "grown from \(count) floats")
        }
        let indices = IndexBuffer(count: 600_000)
        XCTAssertTrue((0..<600_000).allSatisfy { indices.pointer[$0] == 0 })
    }

    #if os(Linux)
    /// Resident bytes of this process, from /proc/self/statm (pages).
    private func residentBytes() throws -> Int {
        let fields = try String(contentsOfFile: "/proc/self/statm", encoding: .utf8).split(separator: " ")
        return try XCTUnwrap(Int(fields[1])) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    func testALargeBufferCostsResidentMemoryOnlyWhereWritten() throws {
        let before = try residentBytes()
        let count = 64 << 20 // 256 MiB of floats
        let buffer = FloatBuffer(count: count)
        let untouched = try residentBytes() - before
        XCTAssertLessThan(untouched, 16 << 20, "an unwritten 256 MiB buffer made \(untouched) bytes resident")
        buffer.pointer.update(repeating: 1, count: count / 2)
        let written = try residentBytes() - before
        XCTAssertGreaterThan(written, 100 << 20, "writing 128 MiB made only \(written) bytes resident")
        withExtendedLifetime(buffer) {}
    }
    #endif
}
