import CNN
import TestSupport
import XCTest

final class TrainingPiecesTests: XCTestCase {
    // MARK: Gradient clipping

    func testClippingScalesAGradientAboveTheMaximumToIt() {
        var gradient: [Float] = [3, 4]
        let norm = gradient.withUnsafeMutableBufferPointer { GradientClipping.clipGlobalNorm($0.baseAddress!, count: 2, maxNorm: 1) }
        XCTAssertEqual(norm, 5, "the norm before clipping is returned")
        // PyTorch's coefficient max / (norm + 1e-6).
        XCTAssertEqual(gradient[0], Float(3 / (5 + 1e-6)), accuracy: 1e-7)
        XCTAssertEqual(gradient[1], Float(4 / (5 + 1e-6)), accuracy: 1e-7)
    }

    func testClippingLeavesAGradientWithinTheMaximumUntouched() {
        let original = TestArrays.normal(count: 1000, seed: 1, scale: 0.01)
        var gradient = original
        let norm = gradient.withUnsafeMutableBufferPointer { GradientClipping.clipGlobalNorm($0.baseAddress!, count: 1000, maxNorm: 5) }
        XCTAssertEqual(gradient, original)
        let expected = original.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        XCTAssertEqual(Double(norm), expected, accuracy: 1e-6 * expected)
    }

    func testGlobalNormOfMillionsOfValuesIsAccurateInDouble() {
        // 3 million values of 1e-3 plus a tail that does not fill a vector: sum of squares 3.000007.
        let count = 3_000_007
        let values = [Float](repeating: 1e-3, count: count)
        let norm = values.withUnsafeBufferPointer { GradientClipping.globalNorm($0.baseAddress!, count: count) }
        let exact = (Double(Float(1e-3)) * Double(Float(1e-3)) * Double(count)).squareRoot()
        // Float partial sums lose several digits here; Double keeps the error near 1e-11.
        XCTAssertEqual(norm, exact, accuracy: 1e-9 * exact)
    }

    func testNonFiniteGradientIsReportedAndLeftAlone() {
        var gradient: [Float] = [1, .nan, 2]
        let norm = gradient.withUnsafeMutableBufferPointer { GradientClipping.clipGlobalNorm($0.baseAddress!, count: 3, maxNorm: 1) }
        XCTAssertTrue(norm.isNaN)
        XCTAssertEqual(gradient[0], 1)
        XCTAssertEqual(gradient[2], 2)
    }

    // MARK: Freezing

    private func transferNetwork() throws -> Network {
        try Network(ModelSpec(
            input: FeatureShape(channels: 2, height: 6, width: 6),
            layers: [
                .convolution(ConvolutionSpec(filters: 4, kernel: 3, padding: .same)), .relu,
                .basicBlock(filters: 4, stride: 2, projection: .auto), .globalAveragePool, .dense(units: 3, bias: true),
            ]))
    }

    private func slot(_ network: Network, _ name: String) throws -> Range<Int> {
        let slot = try XCTUnwrap(network.parameterSlots.first { $0.name == name }, "no slot \(name)")
        return slot.offset..<(slot.offset + slot.count)
    }

    func testFreezingALayerCoversExactlyItsTensors() throws {
        let network = try transferNetwork()
        XCTAssertEqual(try network.frozenParameterRanges(["0"]), [0..<(try slot(network, "0.bias").upperBound)])
        XCTAssertEqual(try network.frozenParameterRanges(["2.conv1"]), [try slot(network, "2.conv1.weight")])
        let block = try network.frozenParameterRanges(["2"])
        XCTAssertEqual(block, [(try slot(network, "2.conv1.weight").lowerBound)..<(try slot(network, "2.downsample.1.bias").upperBound)],
                       "a whole block is one contiguous range")
        XCTAssertEqual(try network.frozenParameterRanges(["4.weight"]), [try slot(network, "4.weight")])
    }

    func testFrozenRangesAreSortedAndMerged() throws {
        let network = try transferNetwork()
        let ranges = try network.frozenParameterRanges(["2.bn1", "0", "2.conv1", "4"])
        XCTAssertEqual(ranges, [
            0..<(try slot(network, "2.bn1.bias").upperBound),
            try slot(network, "4.weight").lowerBound..<network.parameterCount,
        ])
        let mask = try network.parameterMask(frozen: ["2.bn1", "0", "2.conv1", "4"])
        XCTAssertEqual(mask.count, network.parameterCount)
        XCTAssertEqual(mask.filter { !$0 }.count, ranges.reduce(0) { $0 + $1.count })
        XCTAssertTrue(mask[try slot(network, "2.conv2.weight").lowerBound], "conv2 still trains")
    }

    func testUnknownOrParameterlessNamesAreErrorsListingTheValidNames() throws {
        let network = try transferNetwork()
        XCTAssertEqual(Array(network.freezableNames.prefix(4)), ["0", "2", "2.conv1", "2.bn1"])
        for name in ["2.conv9", "1", "5", "2.conv"] {
            XCTAssertThrowsError(try network.frozenParameterRanges([name]), name) { error in
                let text = "\(error)"
                XCTAssertTrue(text.hasPrefix(name + ":") && text.contains("2.downsample.0") && text.contains("2.conv1"), text)
            }
        }
    }

    // MARK: Initialisers

    func testBatchNormStartsAtOnesAndZerosAndPReLUAtAQuarter() throws {
        let network = try Network(ModelSpec(
            input: FeatureShape(channels: 2, height: 3, width: 3),
            layers: [.batchNorm(BatchNormSpec()), .prelu(perChannel: true, initial: 0.25), .flatten, .dense(units: 2, bias: true)]))
        network.initialise(seed: 9)
        let values = Array(UnsafeBufferPointer(start: network.parameters.pointer, count: network.parameterCount))
        XCTAssertEqual(Array(values[0..<6]), [1, 1, 0, 0, 0.25, 0.25])
    }

    func testHeAndXavierInitialisersHaveTheirDocumentedSpread() {
        let count = 40_000
        // (initialiser, target standard deviation, bound of a uniform draw or nil for a normal one)
        let cases: [(Initialiser, Double, Double?)] = [
            (.heNormal(fanIn: 50), (2.0 / 50).squareRoot(), nil),
            (.heUniform(fanIn: 50), (6.0 / 50).squareRoot() / 3.0.squareRoot(), (6.0 / 50).squareRoot()),
            (.xavierNormal(fanIn: 30, fanOut: 70), (2.0 / 100).squareRoot(), nil),
            (.xavierUniform(fanIn: 30, fanOut: 70), (6.0 / 100).squareRoot() / 3.0.squareRoot(), (6.0 / 100).squareRoot()),
        ]
        for (initialiser, deviation, bound) in cases {
            var values = [Float](repeating: 0, count: count)
            values.withUnsafeMutableBufferPointer { initialiser.fill($0.baseAddress!, count: count, seed: 11, tensor: 3) }
            let mean = values.reduce(0.0) { $0 + Double($1) } / Double(count)
            let spread = (values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(count)).squareRoot()
            // About five standard errors at 40,000 draws.
            XCTAssertEqual(mean, 0, accuracy: 5 * deviation / Double(count).squareRoot(), "\(initialiser) mean")
            XCTAssertEqual(spread / deviation, 1, accuracy: 0.02, "\(initialiser) standard deviation")
            if let bound {
                XCTAssertTrue(values.allSatisfy { abs(Double($0)) <= bound }, "\(initialiser) stays within +-\(bound)")
            }
            var again = [Float](repeating: 0, count: count), otherTensor = again
            again.withUnsafeMutableBufferPointer { initialiser.fill($0.baseAddress!, count: count, seed: 11, tensor: 3) }
            otherTensor.withUnsafeMutableBufferPointer { initialiser.fill($0.baseAddress!, count: count, seed: 11, tensor: 4) }
            XCTAssertEqual(again, values, "\(initialiser) is a pure function of (seed, tensor, element)")
            XCTAssertNotEqual(otherTensor, values, "\(initialiser) differs between tensors")
        }
    }

    func testEveryInitialiserIsAPureFunctionOfTheSeed() throws {
        let spec = ModelSpec(
            input: FeatureShape(channels: 3, height: 6, width: 6),
            layers: [.transposedConvolution(TransposedConvolutionSpec(filters: 2, kernel: 2, stride: 2)),
                     .basicBlock(filters: 4, stride: 2, projection: .auto), .flatten, .dense(units: 2, bias: true)])
        let a = try Network(spec), b = try Network(spec)
        a.initialise(seed: 5)
        b.initialise(seed: 5)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: a.parameters.pointer, count: a.parameterCount)),
                       Array(UnsafeBufferPointer(start: b.parameters.pointer, count: b.parameterCount)))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: a.state.pointer, count: a.stateCount)),
                       Array(UnsafeBufferPointer(start: b.state.pointer, count: b.stateCount)))
    }

    // MARK: Buffers

    /// Every layer kind in one network: after a first pass at the largest batch, later passes at
    /// that batch or smaller reuse the same buffers (no layer allocates per sample or per pass).
    func testLayersReuseTheirBuffersAcrossPassesAndSmallerBatches() throws {
        let network = try Network(ModelSpec(
            input: FeatureShape(channels: 3, height: 8, width: 8),
            layers: [
                .convolution(ConvolutionSpec(filters: 4, kernel: 3, padding: .same)), .batchNorm(BatchNormSpec()), .prelu(perChannel: true, initial: 0.25),
                .localResponseNorm(LocalResponseNormSpec(size: 3)), .spatialDropout(probability: 0.2),
                .basicBlock(filters: 4, stride: 1, projection: .auto), .bottleneck(filters: 2, stride: 2, expansion: 4, projection: .auto),
                .concat(branches: [[.separableConvolution(SeparableConvolutionSpec(filters: 3, kernel: 3, padding: .same))],
                                   [.averagePool(size: 3, stride: 1, padding: 1)], [.l2Pool(size: 1, stride: 1), .elu(alpha: 1)]]),
                .transposedConvolution(TransposedConvolutionSpec(filters: 3, kernel: 2, stride: 2)), .leakyReLU(slope: 0.1),
                .residual(ResidualSpec(layers: [.convolution(ConvolutionSpec(filters: 3, kernel: 3, padding: .same)), .tanh])),
                .maxPool(size: 3, stride: 2, padding: 0), .globalAveragePool, .flatten, .dropout(probability: 0.5),
                .dense(units: 5, bias: true), .sigmoid,
            ]))
        network.initialise(seed: 3)
        func pass(batch: Int) -> [UnsafeMutablePointer<Float>] {
            let images = TestArrays.normal(count: batch * network.inputShape.count, seed: UInt64(batch))
            let context = PassContext(mode: .training, seed: 1, sampleIndices: Array(0..<batch))
            return images.withUnsafeBufferPointer { x in
                var activation = x.baseAddress!
                var outputs: [UnsafeMutablePointer<Float>] = []
                for layer in network.layers {
                    let out = layer.forward(activation, batch: batch, context: context)
                    outputs.append(out)
                    activation = UnsafePointer(out)
                }
                let gradient = [Float](repeating: 0.1, count: batch * network.outputShape.count)
                gradient.withUnsafeBufferPointer { g in
                    var dy = g.baseAddress!
                    for layer in network.layers.reversed() {
                        let dx = layer.backward(dy, batch: batch)
                        outputs.append(dx)
                        dy = UnsafePointer(dx)
                    }
                }
                return outputs
            }
        }
        _ = pass(batch: 6)
        let first = pass(batch: 6)
        XCTAssertEqual(pass(batch: 6), first, "a second pass at the same batch must reuse every buffer")
        let smaller = pass(batch: 1)
        // Layers that return their input unchanged (flatten) pass the caller's pointer; the rest keep theirs.
        let owned = first.indices.filter { first[$0] == smaller[$0] }.count
        XCTAssertGreaterThanOrEqual(owned, first.count - 2, "a smaller batch must fit in the buffers already reserved")
    }
}
