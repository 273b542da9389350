import CNN
import TestSupport
import XCTest

/// Every layer kind built from its `LayerSpec` on randomly drawn shapes and options (odd sizes,
/// strides above 1, padding, dilation, groups, batch 1 and more), its input gradient and every
/// parameter gradient checked against central differences.
final class RandomisedGradientTests: XCTestCase {
    private struct Draw {
        let seed: UInt64
        func callAsFunction(_ stream: UInt64, _ range: ClosedRange<Int>) -> Int {
            TestArrays.integer(in: range, seed: seed, stream: stream)
        }
    }

    /// A random layer of the kind `kind` picks, with options drawn from `draw`.
    private func randomSpec(kind: Int, _ draw: Draw) -> LayerSpec {
        let probability = Double(draw(20, 1...8)) / 10
        switch kind {
        case 0: return .batchNorm(BatchNormSpec(momentum: draw(21, 0...1) == 0 ? 0.1 : nil, affine: draw(22, 0...3) > 0))
        case 1: return .prelu(perChannel: draw(21, 0...1) == 1, initial: Double(draw(22, 1...5)) / 10)
        case 2: return .leakyReLU(slope: Double(draw(21, 1...30)) / 100)
        case 3: return .elu(alpha: Double(draw(21, 1...20)) / 10)
        case 4: return draw(21, 0...1) == 0 ? .sigmoid : .tanh
        case 5: return draw(21, 0...1) == 0 ? .dropout(probability: probability) : .spatialDropout(probability: probability)
        case 6: return .localResponseNorm(LocalResponseNormSpec(size: draw(21, 1...5), alpha: 0.5, beta: draw(22, 0...1) == 0 ? 0.75 : 0.6, k: 1))
        case 7: return .averagePool(size: draw(21, 1...3), stride: draw(22, 1...2), padding: draw(23, 0...1) == 0 ? 0 : 1)
        case 8: return .l2Pool(size: draw(21, 1...3), stride: draw(22, 1...2))
        case 9: return .globalAveragePool
        case 10:
            // Padding crops the output; a 1x1 kernel cropped can leave no input reaching any output.
            let kernel = draw(22, 1...3)
            var spec = TransposedConvolutionSpec(filters: draw(21, 1...3), kernel: kernel, stride: draw(23, 1...2), padding: kernel > 1 ? draw(24, 0...1) : 0)
            spec.dilation = draw(25, 1...2)
            return .transposedConvolution(spec)
        case 11:
            return .separableConvolution(SeparableConvolutionSpec(
                filters: draw(21, 1...3), kernel: 3, stride: draw(22, 1...2), padding: .explicit(draw(23, 0...2)),
                dilation: draw(24, 1...2), depthMultiplier: draw(25, 1...2), bias: draw(26, 0...1) == 1))
        case 12:
            // The residual plumbing of basic blocks (conv, BN, projection with stride) with tanh in place
            // of ReLU: ReLU's kink would be crossed by some finite-difference step on random shapes.
            // BasicBlock and Bottleneck themselves are checked on fixed shapes in BlockTests.
            let filters = draw(21, 1...3), stride = draw(22, 1...2)
            return .residual(ResidualSpec(
                layers: [.convolution(ConvolutionSpec(filters: filters, kernel: 3, stride: stride, padding: .explicit(1), bias: false)),
                         .batchNorm(BatchNormSpec()), .tanh,
                         .convolution(ConvolutionSpec(filters: filters, kernel: 3, padding: .explicit(1), bias: false)), .batchNorm(BatchNormSpec())],
                projection: draw(23, 0...1) == 0 ? .auto : .always))
        case 13:
            return .residual(ResidualSpec(
                layers: [.convolution(ConvolutionSpec(filters: draw(21, 1...2), kernel: 1)), .elu(alpha: 1),
                         .convolution(ConvolutionSpec(filters: draw(22, 1...4), kernel: 3, stride: draw(23, 1...2), padding: .same))],
                projection: .auto))
        case 14:
            return .residual(ResidualSpec(
                layers: [.convolution(ConvolutionSpec(filters: draw(21, 1...3), kernel: 3, stride: draw(22, 1...2), padding: .explicit(1))), .tanh],
                projection: .auto))
        default:
            return .concat(branches: [
                [.convolution(ConvolutionSpec(filters: draw(21, 1...2), kernel: 1))],
                [.convolution(ConvolutionSpec(filters: draw(22, 1...2), kernel: 3, padding: .same)), .sigmoid],
                [.averagePool(size: 3, stride: 1, padding: 1)],
            ])
        }
    }

    func testEveryLayerKindOnRandomisedShapesMatchesNumericalGradient() throws {
        var checkedPerKind = [Int](repeating: 0, count: 16)
        for seed in UInt64(500)..<UInt64(660) {
            let draw = Draw(seed: seed)
            let kind = Int(seed % 16)
            // A projection from one channel is a single weight per output channel followed by batch
            // norm, which cancels its scale: its true gradient is zero, and the check proves nothing.
            let residual = (12...14).contains(kind)
            let shape = FeatureShape(channels: draw(1, residual ? 2...4 : 1...4), height: draw(2, 1...7), width: draw(3, 1...7))
            let batch = draw(4, 1...3)
            let spec = randomSpec(kind: kind, draw)
            // Batch statistics of a single value per channel are degenerate (PyTorch refuses them too).
            if case .batchNorm = spec, batch * shape.height * shape.width < 2 { continue }
            if kind == 12, batch * shape.height * shape.width < 8 { continue }
            guard let layer = try? spec.makeLayer(input: shape, name: "model.layers[\(kind)]") else { continue }
            // Distinct values keep every kink (ReLU-like layers, pooling ties) out of the finite-difference steps.
            let input = TestArrays.distinct(count: batch * shape.count, seed: seed, spacing: 0.07)
            let context = PassContext(mode: .training, seed: seed, step: 3, sampleIndices: (0..<batch).map { $0 * 5 + 1 })
            // Through batch statistics of a few values, Float rounding reaches a few percent of the
            // smallest gradient elements; judge those against 5% of the tensor's largest.
            let options = GradientCheckOptions(elementFloor: residual ? 0.05 : 0.01, allowsZeroGradient: kind == 5)
            assertGradientsMatch(layer, batch: batch, input: input, seed: seed, context: context, options: options,
                                 "seed \(seed), \(spec) on")
            checkedPerKind[kind] += 1
        }
        for (kind, count) in checkedPerKind.enumerated() {
            XCTAssertGreaterThanOrEqual(count, 4, "kind \(kind) was checked on too few random shapes")
        }
    }
}
