import CNN
import ConfigReading
import Training
import XCTest

/// Every layer kind as a config writes it: parsed from the short forms users write, rendered back
/// into the resolved YAML workers receive, and parsed again to the same model.
final class LayerConfigTests: XCTestCase {
    private func model(_ layers: String, input: String = "[3, 8, 8]") throws -> ModelSpec {
        try TrainingConfig.parse(yaml: "model:\n  input: \(input)\n  layers:\n\(layers)", source: "test.yaml").model
    }

    /// A buildable model that uses every layer kind, each with options away from their defaults.
    private let everyKind = ModelSpec(
        input: FeatureShape(channels: 3, height: 16, width: 16),
        layers: [
            .convolution(ConvolutionSpec(filters: 6, kernel: 3, padding: .same, bias: false)),
            .batchNorm(BatchNormSpec(epsilon: 1e-3, momentum: 0.2)),
            .prelu(perChannel: true, initial: 0.1),
            .separableConvolution(SeparableConvolutionSpec(filters: 8, kernel: 3, padding: .same, depthMultiplier: 2, bias: false)),
            .batchNorm(BatchNormSpec(momentum: nil, affine: false)),
            .leakyReLU(slope: 0.02),
            .localResponseNorm(LocalResponseNormSpec(size: 5, alpha: 1e-4, beta: 0.75, k: 2)),
            .spatialDropout(probability: 0.1),
            .maxPool(size: 3, stride: 2, padding: 1),
            .residual(ResidualSpec(
                layers: [.convolution(ConvolutionSpec(filters: 8, kernel: 3, padding: .explicit(1))), .elu(alpha: 0.5),
                         .convolution(ConvolutionSpec(filters: 8, kernel: 3, padding: .explicit(1)))],
                projection: .always, reluAfterSum: true)),
            .basicBlock(filters: 12, stride: 2, projection: .auto),
            .bottleneck(filters: 3, stride: 1, expansion: 4, projection: .never),
            .concat(branches: [
                [.convolution(ConvolutionSpec(filters: 4, kernel: 1))],
                [.averagePool(size: 3, stride: 1, padding: 1), .convolution(ConvolutionSpec(filters: 2, kernel: 1, padding: .valid))],
                [.l2Pool(size: 1, stride: 1), .sigmoid],
                [],
            ]),
            .transposedConvolution(TransposedConvolutionSpec(filters: 6, kernel: 2, stride: 2, outputPadding: 1)),
            .tanh,
            .convolution({
                var spec = ConvolutionSpec(filters: 4, kernel: 3, padding: .valid, dilation: 2, groups: 2)
                spec.kernelWidth = 1
                return spec
            }()),
            .averagePool(size: 2, stride: nil, padding: 0),
            .globalAveragePool,
            .flatten,
            .dense(units: 7, bias: false),
            .dropout(probability: 0.25),
            .relu,
            .dense(units: 10, bias: true),
        ])

    func testEveryLayerKindSurvivesRenderingAndParsing() throws {
        let network = try Network(everyKind)
        XCTAssertEqual(network.outputShape, .vector(10), "the model under test must be buildable")
        let yaml = TrainingConfig(model: everyKind).yaml
        let parsed = try TrainingConfig.parse(yaml: yaml, source: "resolved.yaml").model
        XCTAssertEqual(parsed.layers.count, everyKind.layers.count, yaml)
        for (index, (written, read)) in zip(everyKind.layers, parsed.layers).enumerated() {
            XCTAssertEqual(read, written, "layer \(index) changed in the round trip; YAML:\n\(yaml)")
        }
        XCTAssertEqual(parsed, everyKind)
        XCTAssertEqual(TrainingConfig(model: parsed).yaml, yaml, "rendering is stable")
    }

    func testShortFormsReadAsTheirDefaults() throws {
        let layers = try model("""
                - batchnorm
                - prelu
                - leakyrelu: 0.01
                - elu: 1.0
                - spatial_dropout: 0.2
                - lrn: {size: 5, alpha: 1e-4, beta: 0.75, k: 2}
                - basic_block: 4
                - avgpool
                - bottleneck: {filters: 2, stride: 2}
                - l2pool
                - residual: {layers: [conv: {filters: 8, kernel: 1}, batchnorm], projection: auto}
                - concat: {branches: [[conv: {filters: 2, kernel: 1}], [avgpool: {size: 3, stride: 1, padding: 1}]]}
                - sigmoid
                - tanh
                - globalavgpool
                - dropout: 0.5
                - dense: 10
            """).layers
        XCTAssertEqual(layers, [
            .batchNorm(BatchNormSpec(epsilon: 1e-5, momentum: 0.1, affine: true)),
            .prelu(perChannel: false, initial: 0.25),
            .leakyReLU(slope: 0.01),
            .elu(alpha: 1),
            .spatialDropout(probability: 0.2),
            .localResponseNorm(LocalResponseNormSpec(size: 5, alpha: 1e-4, beta: 0.75, k: 2)),
            .basicBlock(filters: 4, stride: 1, projection: .auto),
            .averagePool(size: 2, stride: nil, padding: 0),
            .bottleneck(filters: 2, stride: 2, expansion: 4, projection: .auto),
            .l2Pool(size: 2, stride: nil),
            .residual(ResidualSpec(layers: [.convolution(ConvolutionSpec(filters: 8, kernel: 1)), .batchNorm(BatchNormSpec())])),
            .concat(branches: [[.convolution(ConvolutionSpec(filters: 2, kernel: 1))], [.averagePool(size: 3, stride: 1, padding: 1)]]),
            .sigmoid, .tanh, .globalAveragePool, .dropout(probability: 0.5), .dense(units: 10, bias: true),
        ])
    }

    func testProjectionAcceptsAutoTrueAndFalseAndMomentumCumulative() throws {
        let layers = try model("""
                - residual: {layers: [relu], projection: true}
                - residual: {layers: [relu], projection: false, relu: true}
                - basic_block: {filters: 3, projection: false}
                - batchnorm: {momentum: cumulative}
                - conv: {filters: 2, kernel: [3, 1], padding: valid}
                - convtranspose: {filters: 2, kernel: [2, 3], stride: 2}
            """).layers
        XCTAssertEqual(layers[0], .residual(ResidualSpec(layers: [.relu], projection: .always)))
        XCTAssertEqual(layers[1], .residual(ResidualSpec(layers: [.relu], projection: .never, reluAfterSum: true)))
        XCTAssertEqual(layers[2], .basicBlock(filters: 3, stride: 1, projection: .never))
        XCTAssertEqual(layers[3], .batchNorm(BatchNormSpec(momentum: nil)))
        guard case .convolution(let convolution) = layers[4], case .transposedConvolution(let transposed) = layers[5] else {
            return XCTFail("\(layers)")
        }
        XCTAssertEqual([convolution.kernelHeight, convolution.kernelWidth, transposed.kernelHeight, transposed.kernelWidth], [3, 1, 2, 3])
    }

    // MARK: Errors

    private func assertConfigError(
        _ layers: String, mentions needles: [String], file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try model(layers), file: file, line: line) { error in
            let text = "\(error)"
            XCTAssertTrue(error is ConfigError, "\(type(of: error)): \(text)", file: file, line: line)
            for needle in needles {
                XCTAssertTrue(text.contains(needle), "the error should mention \(needle): \(text)", file: file, line: line)
            }
        }
    }

    func testMisspelledKindsSuggestTheClosest() {
        assertConfigError("    - batchnrom\n", mentions: ["test.yaml:4", "model.layers[0]", "'batchnorm'"])
        assertConfigError("    - spatial_dropot: 0.2\n", mentions: ["'spatial_dropout'"])
    }

    func testErrorsInsideBlocksGiveTheNestedPathAndLine() {
        assertConfigError("""
                - relu
                - residual:
                    layers:
                      - conv: {filters: 4, kernel: 1}
                      - dropout: 1.5
            """, mentions: ["test.yaml:8", "model.layers[1].residual.layers[1]", "below 1"])
        assertConfigError("    - concat: {branches: [[relu], [sigmoid: 2]]}\n",
                          mentions: ["model.layers[0].concat.branches[1][0]", "takes no options"])
        assertConfigError("    - residual: {layers: []}\n", mentions: ["model.layers[0].residual.layers", "empty"])
    }

    func testBadOptionValuesAreRejectedWithTheFix() {
        assertConfigError("    - batchnorm: {momentum: fast}\n", mentions: ["momentum", "cumulative"])
        assertConfigError("    - basic_block: {filters: 4, projection: maybe}\n", mentions: ["projection", "auto"])
        assertConfigError("    - bottleneck: {filters: 4, strde: 2}\n", mentions: ["'strde'", "'stride'"])
        assertConfigError("    - lrn: {alpha: 1e-4}\n", mentions: ["needs 'size'"])
        assertConfigError("    - relu: {inplace: true}\n", mentions: ["relu takes no options"])
    }

    func testImpossibleBlocksAreModelErrorsNamingTheLayer() {
        assertConfigError("    - concat: {branches: [[relu], [maxpool: 2]]}\n", mentions: ["model.layers[0]", "8x8, 4x4"])
        assertConfigError("    - basic_block: {filters: 8, stride: 2, projection: false}\n", mentions: ["model.layers[0]", "projection"])
    }
}
