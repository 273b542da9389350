import CNN
import Foundation
@testable import ModelExport
import ONNXSchema
import TestSupport
import Training
import XCTest

final class ONNXExportTests: XCTestCase {
    /// Runs each ONNX file on its input with onnxruntime and writes the output beside it.
    static let onnxRuntimeScript = """
        import sys, numpy as np, onnx, onnxruntime as ort
        for model_path, input_path, output_path, shape in zip(*[iter(sys.argv[1:])] * 4):
            model = onnx.load(model_path)
            onnx.checker.check_model(model, full_check=True)
            assert model.opset_import[0].version >= 13, model.opset_import
            assert not any(node.op_type == "Dropout" for node in model.graph.node)
            x = np.fromfile(input_path, dtype=np.float32).reshape([int(d) for d in shape.split(",")])
            session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
            (y,) = session.run(["logits"], {"input": x})
            y.astype(np.float32).tofile(output_path)
            print(model_path, y.shape)
        """

    /// One model with every layer kind of the engine (and a ceil-mode pool, a dilated grouped
    /// convolution, an identity branch, a batch norm and a PReLU on features).
    static let everyLayerKind = """
        model:
          input: [3, 12, 12]
          layers:
            - conv: {filters: 6, kernel: 3, padding: 1}
            - batchnorm
            - prelu: {per_channel: true}
            - conv: {filters: 6, kernel: 3, padding: 2, dilation: 2, groups: 3, bias: false}
            - leakyrelu: 0.1
            - separable: {filters: 8, kernel: 3, padding: 1}
            - elu: 0.5
            - lrn: {size: 3, alpha: 0.001, beta: 0.75, k: 2}
            - convtranspose: {filters: 4, kernel: 3, stride: 2, padding: 1, output_padding: 1}
            - avgpool: {size: 3, stride: 2, padding: 1}
            - residual: {layers: [conv: {filters: 8, kernel: 3, padding: 1}, batchnorm, relu], projection: auto, relu: true}
            - bottleneck: {filters: 2, stride: 2, expansion: 4}
            - concat: {branches: [[], [conv: {filters: 4, kernel: 1}, sigmoid], [maxpool: {size: 3, stride: 1, padding: 1}]]}
            - spatial_dropout: 0.2
            - maxpool: {size: 3, stride: 2, ceil_mode: true}
            - basic_block: {filters: 8, stride: 1}
            - l2pool: 3
            - tanh
            - flatten
            - dense: {units: 16, bias: false}
            - batchnorm
            - prelu: {per_channel: true}
            - dropout: 0.3
            - dense: 5
        """

    /// The sequence layers: a dilated grouped conv1d with padding, both 1-D pools, a batch norm and a
    /// locally connected layer (with its per-output bias).
    static let sequenceLayers = """
        model:
          input: [2, 20]
          layers:
            - conv1d: {filters: 4, kernel: 3, padding: 2, dilation: 2, groups: 2}
            - batchnorm
            - relu
            - maxpool1d: {size: 3, stride: 1, padding: 1}
            - locally_connected: {filters: 3, kernel: 3, stride: 2, padding: 1}
            - tanh
            - avgpool1d: {size: 2, padding: 1}
            - flatten
            - dense: 4
        """

    /// The volume layers: conv3d, max and average 3-D pools and a locally connected layer on volumes.
    static let volumeLayers = """
        model:
          input: [1, 4, 6, 6]
          layers:
            - conv3d: {filters: 3, kernel: 3, padding: 1}
            - relu
            - maxpool3d: 2
            - locally_connected: {filters: 2, kernel: [1, 2, 2], bias: false}
            - avgpool3d: {size: 1}
            - flatten
            - dense: 3
        """

    func testONNXRunByOnnxruntimeEqualsOurForwardForLeNetFashionMNISTResNet20AndGoogLeNet() throws {
        try ExportSupport.requirePython()
        let folder = try LocalCluster.temporaryDirectory("onnx")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let fashion = try String(contentsOf: ExportSupport.configsDirectory.appendingPathComponent("fashion-mnist.yaml"), encoding: .utf8)
        let models: [(name: String, yaml: String)] = [
            ("lenet5", "model: lenet5\n"), ("fashion-mnist", fashion), ("resnet20", "model: resnet20\n"),
            ("googlenet", "model: {zoo: googlenet, classes: 10}\n"), ("every-layer-kind", Self.everyLayerKind),
            ("sequence-layers", Self.sequenceLayers), ("volume-layers", Self.volumeLayers),
        ]
        let batch = 2
        var arguments: [String] = []
        var expected: [String: [Float]] = [:]
        for (index, model) in models.enumerated() {
            let state = try ExportSupport.model(model.yaml)
            let network = state.network
            ExportSupport.randomiseRunningStatistics(network, seed: UInt64(index))
            let input = ExportSupport.randomInput(count: batch * network.inputShape.count, seed: UInt64(index))
            expected[model.name] = ExportSupport.logits(network, input, batch: batch)
            let onnx = "\(folder)/\(model.name).onnx"
            try ONNXExport.data(of: network, producerVersion: "test").write(to: URL(fileURLWithPath: onnx))
            try ExportSupport.writeFloats(input, to: "\(folder)/\(model.name).input")
            let dimensions = network.inputShape.dimensions.map(String.init).joined(separator: ",")
            arguments += [onnx, "\(folder)/\(model.name).input", "\(folder)/\(model.name).output", "\(batch),\(dimensions)"]
        }
        let outcome = try PythonEnvironment.run(Self.onnxRuntimeScript, arguments: arguments)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        guard outcome.status == 0 else { return }
        for model in models {
            let ours = try XCTUnwrap(expected[model.name])
            let runtime = try ExportSupport.readFloats("\(folder)/\(model.name).output")
            XCTAssertEqual(runtime.count, ours.count, model.name)
            let error = ExportSupport.relativeError(runtime, ours)
            XCTAssertLessThanOrEqual(error, 1e-5, "\(model.name): onnxruntime differs from our forward by \(error) relative")
            print("\(model.name): onnxruntime vs our forward, max relative difference \(error)")
        }
    }

    func testGraphIsInferenceOnlyWithTheCheckpointsTensorNames() throws {
        let network = try ExportSupport.model("model: {zoo: resnet20}\n").network
        let model = try ONNXExport.model(of: network, producerVersion: "test")
        XCTAssertEqual(model.opsetImport.first?.version, 13)
        let operators = Set(model.graph.node.map(\.opType))
        XCTAssertTrue(operators.isSuperset(of: ["Conv", "BatchNormalization", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm"]),
                      "\(operators)")
        let names = Set(model.graph.initializer.map(\.name))
        let slots = network.parameterSlots.map(\.name) + network.stateSlots.map(\.name).filter { !$0.hasSuffix("num_batches_tracked") }
        XCTAssertEqual(names, Set(slots))
        XCTAssertEqual(model.graph.input.first?.name, "input")
        XCTAssertEqual(model.graph.output.first?.name, "logits")
    }

    /// A layer kind the exporter has never heard of (another engineer's new layer, say).
    final class Unknown: Layer {
        let inputShape = FeatureShape(channels: 2, height: 3, width: 3)
        var outputShape: FeatureShape { inputShape }
        var summary: String { "Conv3D(8, 3x3x3)" }
        func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> { fatalError() }
        func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> { fatalError() }
    }

    func testALayerKindTheExporterDoesNotKnowIsRefusedNamingTheLayerAndWhy() throws {
        var writer = LayerWriter(parameters: UnsafePointer(bitPattern: 8)!, state: UnsafePointer(bitPattern: 8)!)
        XCTAssertThrowsError(try writer.write(Unknown(), input: Value(name: "input", flat: false), path: "model.layers[4]", prefix: "4")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("model.layers[4] (Conv3D(8, 3x3x3)) cannot be exported to ONNX"), text)
            XCTAssertTrue(text.contains("does not know layer kind Unknown"), text)
        }
    }

    func testAnEvenLocalResponseNormIsRefusedBecauseONNXCentresItsWindowElsewhere() throws {
        let network = try ExportSupport.model("""
            model: {input: [4, 5, 5], layers: [conv: {filters: 6, kernel: 3}, {lrn: {size: 4}}, flatten, dense: 3]}
            """).network
        XCTAssertThrowsError(try ONNXExport.model(of: network, producerVersion: "test")) { error in
            XCTAssertTrue("\(error)".contains("model.layers[1] (LocalResponseNorm(4, alpha 0.0001, beta 0.75, k 1.0)) cannot be exported to ONNX: ONNX's LRN sums"), "\(error)")
        }
    }
}
