import CNN
import Foundation
import ModelDescription
import Training
import XCTest

final class SummaryTests: XCTestCase {
    /// 1x4x4 -> conv 2@3x3 p1 -> ReLU -> max-pool 2 -> flatten -> dense 3, batch 8.
    private func tinyConfig(optimizer: String = "{name: sgd, lr: 0.1, momentum: 0.9}") throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: """
            model: "INPUT(1,4,4) => CONV(2,3,p=1) => RELU => POOL(2) => FC(3)"
            train: {batch: 8, micro_batch: 4, optimizer: \(optimizer)}
            """, source: "tiny.yaml")
    }

    func testFiguresOfATinyModelMatchAHandCount() throws {
        let summary = try ModelSummary(config: try tinyConfig())
        XCTAssertEqual(summary.layers.map(\.outputShape), [
            FeatureShape(channels: 2, height: 4, width: 4), FeatureShape(channels: 2, height: 4, width: 4),
            FeatureShape(channels: 2, height: 2, width: 2), .vector(8), .vector(3),
        ])
        // conv: 2 filters x 1 channel x 3x3 + 2 biases; dense: 3 x 8 + 3.
        XCTAssertEqual(summary.layers.map(\.parameters), [20, 0, 0, 0, 27])
        XCTAssertEqual(summary.parameters, 47)
        // conv: 2 FLOPs x 2 filters x 16 positions x 9 taps; dense: 2 x 3 x 8.
        XCTAssertEqual(summary.layers[0].forwardFLOPs, 576)
        XCTAssertEqual(summary.layers[4].forwardFLOPs, 48)
        // Parameters, gradients and one momentum value per parameter, 4 bytes each.
        XCTAssertEqual(summary.parameterBytes, 188)
        XCTAssertEqual(summary.fixedTrainingBytes, 3 * 188)
        let saved = 4 * (16 + summary.layers.reduce(0) { $0 + $1.savedFloatsPerSample })
        XCTAssertEqual(summary.activationBytesPerSample, saved)
        XCTAssertEqual(summary.trainingBytesPerSample, 3 * 188 + saved)
        XCTAssertEqual(summary.trainingBytes, 3 * 188 + 8 * saved)
        // Adam keeps two values per parameter.
        XCTAssertEqual(try ModelSummary(config: try tinyConfig(optimizer: "{name: adam, lr: 0.001}")).fixedTrainingBytes, 4 * 188)
    }

    func testTheTableListsEveryLayerAndTheTotals() throws {
        let summary = try ModelSummary(config: try tinyConfig())
        let table = summary.table
        let lines = table.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines[0].hasPrefix("#  layer"), table)
        for column in ["output (CxHxW)", "parameters", "forward FLOPs", "activations/sample", "activations/batch", "weights+grads+opt"] {
            XCTAssertTrue(lines[0].contains(column), column)
        }
        for layer in summary.layers {
            XCTAssertTrue(lines.contains { $0.hasPrefix("\(layer.index)  ") && $0.contains(layer.name) }, "no row for \(layer.name)")
        }
        XCTAssertTrue(lines.contains { $0.hasPrefix("   total") && $0.contains("47") && $0.contains("688") }, table)
        XCTAssertTrue(table.contains("total parameters: 47\n"), table)
        XCTAssertTrue(table.contains("per batch of 8"), table)
        XCTAssertTrue(table.contains("per micro-batch of 4"), table)
    }

    func testTheJSONCarriesTheSameFigures() throws {
        let summary = try ModelSummary(config: try tinyConfig())
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(summary.json.utf8)) as? [String: Any])
        XCTAssertEqual(object["input"] as? [Int], [1, 4, 4])
        XCTAssertEqual(object["batch"] as? Int, 8)
        XCTAssertEqual(object["micro_batch"] as? Int, 4)
        XCTAssertEqual(object["optimizer_state_per_parameter"] as? Int, 1)
        let layers = try XCTUnwrap(object["layers"] as? [[String: Any]])
        XCTAssertEqual(layers.count, 5)
        XCTAssertEqual(layers[0]["output"] as? [Int], [2, 4, 4])
        XCTAssertEqual(layers[0]["parameters"] as? Int, 20)
        XCTAssertEqual(layers[0]["forward_flops"] as? Int, 576)
        XCTAssertEqual(layers[4]["optimizer_bytes"] as? Int, 4 * 27)
        XCTAssertEqual(layers[4]["activation_bytes_per_batch"] as? Int, 8 * 4 * summary.layers[4].savedFloatsPerSample)
        let totals = try XCTUnwrap(object["totals"] as? [String: Any])
        XCTAssertEqual(totals["parameters"] as? Int, 47)
        XCTAssertEqual(totals["forward_flops_per_sample"] as? Int, 688)
        XCTAssertEqual(totals["training_bytes_per_batch"] as? Int, summary.trainingBytes)
        XCTAssertEqual(totals["training_bytes_per_sample"] as? Int, summary.trainingBytesPerSample)
    }

    func testVGG16SummarisesWithoutAllocatingItsWeights() throws {
        let config = try TrainingConfig.parse(yaml: "model: vgg16\ntrain: {batch: 8, micro_batch: 2}\n", source: "vgg.yaml")
        let summary = try ModelSummary(config: config)
        XCTAssertEqual(summary.parameters, 138_357_544)
        XCTAssertEqual(summary.layers[0].forwardFLOPs, 2 * 64 * 224 * 224 * 27)
        XCTAssertTrue(summary.table.contains("total parameters: 138,357,544"))
    }
}
