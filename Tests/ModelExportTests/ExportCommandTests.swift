import Checkpoint
import Foundation
import ONNXSchema
import TestSupport
import Training
import XCTest

/// `cnn export`, `cnn predict` and `cnn eval` on a plain safetensors weights file, as real processes.
final class ExportCommandTests: XCTestCase {
    static let config = """
        model: lenet5
        data: {dataset: synthetic, synthetic_train: 16, synthetic_test: 16}
        train: {seed: 3, batch: 8, micro_batch: 8, eval_batch: 8}
        """

    func testExportPredictAndEvalTakeAWeightsFileWithItsConfig() throws {
        let folder = try LocalCluster.temporaryDirectory("export-command")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let configPath = try LocalCluster.write(Self.config, to: "lenet5.yaml", in: folder)
        let state = try ExportSupport.model(Self.config)
        let weights = "\(folder)/weights.safetensors"
        try SafeTensors.write(state.modelTensors(), metadata: [:], to: weights)

        let export = try LocalCluster.run(
            LocalCluster.executable("cnn"),
            ["export", "--checkpoint", weights, "--config", configPath, "--onnx", "\(folder)/out.onnx", "--safetensors", "\(folder)/out.safetensors"])
        XCTAssertEqual(export.status, 0, export.combined)
        XCTAssertTrue(export.output.contains("ONNX opset 13, 61706 parameters, input [N, 1, 32, 32], output [N, 10]"), export.output)
        let model = try Onnx_ModelProto(serializedBytes: try Data(contentsOf: URL(fileURLWithPath: "\(folder)/out.onnx")))
        XCTAssertEqual(model.graph.initializer.count, 10)
        XCTAssertEqual(try SafeTensors.read(path: "\(folder)/out.safetensors").tensors, try SafeTensors.read(path: weights).tensors)

        // A 32x32 greyscale PGM of a diagonal gradient.
        var pgm = Data("P5\n32 32\n255\n".utf8)
        let pixels: [UInt8] = (0..<(32 * 32)).map { (index: Int) -> UInt8 in UInt8((index % 32 + index / 32) * 4) }
        pgm.append(contentsOf: pixels)
        try pgm.write(to: URL(fileURLWithPath: "\(folder)/image.pgm"))
        let predict = try LocalCluster.run(
            LocalCluster.executable("cnn"), ["predict", "--checkpoint", weights, "--config", configPath, "--json", "\(folder)/image.pgm"])
        XCTAssertEqual(predict.status, 0, predict.combined)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(predict.output.utf8)) as? [String: Any], predict.output)
        let probabilities = try XCTUnwrap(object["probabilities"] as? [[String: Any]])
        XCTAssertEqual(probabilities.map { $0["class"] as? Int }, (0..<10).map { $0 })
        let total = probabilities.compactMap { $0["probability"] as? Double }.reduce(0, +)
        XCTAssertEqual(total, 1, accuracy: 1e-9)
        XCTAssertEqual((object["top"] as? [Any])?.count, 5)

        let evaluate = try LocalCluster.run(LocalCluster.executable("cnn"), ["eval", "--checkpoint", weights, "--config", configPath])
        XCTAssertEqual(evaluate.status, 0, evaluate.combined)
        XCTAssertTrue(evaluate.output.contains("test accuracy"), evaluate.output)
    }

    func testAWeightsFileWithoutAConfigOrAnExportWithoutAnOutputIsBadUsage() throws {
        let folder = try LocalCluster.temporaryDirectory("export-usage")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let weights = "\(folder)/weights.safetensors"
        try SafeTensors.write(try ExportSupport.model(Self.config).modelTensors(), metadata: [:], to: weights)
        let noConfig = try LocalCluster.run(LocalCluster.executable("cnn"), ["export", "--checkpoint", weights, "--onnx", "\(folder)/x.onnx"])
        XCTAssertEqual(noConfig.status, 2, noConfig.combined)
        XCTAssertTrue(noConfig.error.contains("is a weights file, which does not say what the model is; pass the model's config with --config"),
                      noConfig.error)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(folder)/x.onnx"))
        let noOutput = try LocalCluster.run(LocalCluster.executable("cnn"), ["export", "--checkpoint", weights])
        XCTAssertEqual(noOutput.status, 2, noOutput.combined)
        XCTAssertTrue(noOutput.error.contains("--onnx OUT.onnx and/or --safetensors OUT.safetensors"), noOutput.error)
        // Weights of another model: the tensor that does not fit is named.
        let other = try LocalCluster.write("model: resnet20\n", to: "resnet20.yaml", in: folder)
        let wrong = try LocalCluster.run(
            LocalCluster.executable("cnn"), ["export", "--checkpoint", weights, "--config", other, "--onnx", "\(folder)/x.onnx"])
        XCTAssertEqual(wrong.status, 2, wrong.combined)
        XCTAssertTrue(wrong.error.contains("tensor '0.weight' has shape [6, 1, 5, 5], the model needs [16, 3, 3, 3]"), wrong.error)
    }
}
