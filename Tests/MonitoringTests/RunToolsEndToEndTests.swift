import CNN
import Checkpoint
import Data
import Foundation
import Monitoring
import TestSupport
import Training
import XCTest

/// `cnn plot`, `cnn eval`, `cnn predict` and `cnn viz` on a real run made by the real executables.
final class RunToolsEndToEndTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    /// One 20-step run with two workers, shared by every test here.
    private static let run: Result<String, any Error> = Result {
        let (folder, config) = try Fixture.folder("tools")
        let runDirectory = folder + "/run"
        let outcome = try LocalCluster.run(
            "cnn-coord", ["--config", config, "--spawn-workers", "2", "--steps", "20", "--run-dir", runDirectory, "--quiet"], seconds: 180)
        guard outcome.status == 0, !outcome.timedOut else { throw Exposition.Failure("the training run failed:\n\(outcome.combined)") }
        return runDirectory
    }

    private func trainedRun() throws -> (run: String, checkpoint: String) {
        try Fixture.requireData()
        let run = try Self.run.get()
        let checkpoint = try XCTUnwrap(CheckpointStore(runDirectory: run, keep: 3).list().last)
        return (run, checkpoint)
    }

    private func metrics(_ run: String) throws -> MetricsHistory {
        try MetricsHistory.load(path: run)
    }

    func testPlotOfARealRunDrawsItsLossAccuracyAndThroughputCurves() throws {
        let (run, _) = try trainedRun()
        let outcome = try LocalCluster.run("cnn", ["plot", run], seconds: 60)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.output.contains("wrote \(run)/training.svg"), outcome.output)
        let shapes = try SVGShapes(String(contentsOfFile: run + "/training.svg", encoding: .utf8))
        XCTAssertEqual(shapes.polylines["training loss"]?.count, 4, "steps 5, 10, 15 and 20 are logged")
        XCTAssertEqual(shapes.polylines["training accuracy"]?.count, 4)
        XCTAssertEqual(shapes.polylines["training images/s"]?.count, 4)
        XCTAssertEqual(shapes.polylines["test accuracy"]?.count, 1)
        let loss = try XCTUnwrap(shapes.polylines["training loss"])
        XCTAssertLessThan(loss.first!.y, loss.last!.y, "the loss fell over 20 steps, so its curve ends lower on the page")
    }

    func testEvalOfTheFinalCheckpointMatchesTheTestAccuracyInTheMetricsLog() throws {
        let (run, checkpoint) = try trainedRun()
        let logged = try XCTUnwrap(metrics(run).evaluations.last?.testAccuracy)
        let outcome = try LocalCluster.run("cnn", ["eval", "--checkpoint", checkpoint], seconds: 120)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.output.contains("test accuracy \(String(format: "%.2f", logged * 100))%"),
                      "metrics.jsonl says \(logged):\n\(outcome.output)")
        // Exactly: the correct predictions per class add up to what the distributed evaluation counted.
        let correct = outcome.output.split(separator: "\n").compactMap { line -> Int? in
            guard let open = line.lastIndex(of: "("), let slash = line.lastIndex(of: "/") else { return nil }
            return Int(line[line.index(after: open)..<slash])
        }
        XCTAssertEqual(correct.count, 10, outcome.output)
        XCTAssertEqual(correct.reduce(0, +), Int((logged * 10_000).rounded()))
    }

    func testPredictGivesTheSameProbabilitiesForAnIDXSampleAndItsPGMAndPNGFiles() throws {
        let (_, checkpoint) = try trainedRun()
        let folder = try LocalCluster.temporaryDirectory("predict")
        let idx = try IDXFile.read(path: Fixture.testImages)
        let image = RasterImage(width: 28, height: 28, channels: 1, pixels: Array(idx.bytes[0..<784]))
        try Data(NetpbmCodec.encode(image)).write(to: URL(fileURLWithPath: folder + "/sample.pgm"))
        try PNGCodec.write(image, to: folder + "/sample.png")
        let outcome = try LocalCluster.run(
            "cnn", ["predict", "--checkpoint", checkpoint, Fixture.testImages + ":0", folder + "/sample.pgm", folder + "/sample.png"], seconds: 60)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        let blocks = outcome.output.components(separatedBy: "\n\n")
        XCTAssertEqual(blocks.count, 3, outcome.output)
        XCTAssertTrue(blocks[0].hasPrefix(Fixture.testImages + ":0: (true class: Ankle boot"), blocks[0])
        let rankings = blocks.map { $0.split(separator: "\n").dropFirst().map(String.init) }
        XCTAssertEqual(rankings[0].count, 5)
        XCTAssertEqual(rankings[0], rankings[1], "the PGM file must give what the IDX sample gives")
        XCTAssertEqual(rankings[0], rankings[2], "the PNG file must give what the IDX sample gives")

        // In-process, the probabilities are the softmax of the network's logits on the loader's own input.
        let model = try CheckpointModel(checkpoint: checkpoint, configPath: nil)
        let prediction = try Prediction.run(model, image: ImageReference(Fixture.testImages + ":0"), top: 10)
        let test = try FashionMNIST.load(.test, directory: Fixture.fashionDirectory)
        let logits = Array(test.pixels[0..<784]).withUnsafeBufferPointer {
            Array(UnsafeBufferPointer(start: model.network.forward($0.baseAddress!, batch: 1, context: .inference), count: 10))
        }
        let highest = Double(logits.max()!)
        let exponentials = logits.map { exp(Double($0) - highest) }
        XCTAssertEqual(prediction.probabilities, exponentials.map { $0 / exponentials.reduce(0, +) })
        XCTAssertEqual(prediction.candidates.map(\.probability), prediction.probabilities.sorted(by: >))
        XCTAssertEqual(prediction.trueClass, Int(test.labels[0]))
    }

    func testPredictRefusesAnImageOfTheWrongSizeSayingTheSizeNeeded() throws {
        let (_, checkpoint) = try trainedRun()
        let folder = try LocalCluster.temporaryDirectory("predict-size")
        try Data(NetpbmCodec.encode(RasterImage(width: 32, height: 30, channels: 1, pixels: [UInt8](repeating: 9, count: 960))))
            .write(to: URL(fileURLWithPath: folder + "/big.pgm"))
        let outcome = try LocalCluster.run("cnn", ["predict", "--checkpoint", checkpoint, folder + "/big.pgm"], seconds: 60)
        XCTAssertNotEqual(outcome.status, 0)
        XCTAssertTrue(outcome.error.contains("big.pgm is 32x30 but the model takes 28x28 images; resize it first"), outcome.error)
    }

    func testVizDrawsTheFiltersAndFeatureMapsAsPNGAndAsTitledSVG() throws {
        let (_, checkpoint) = try trainedRun()
        let folder = try LocalCluster.temporaryDirectory("viz")
        let png = try LocalCluster.run("cnn", ["viz", "--checkpoint", checkpoint, "--layer", "1", "-o", folder + "/relu.png"], seconds: 60)
        XCTAssertEqual(png.status, 0, png.combined)
        let picture = try PNGCodec.read(path: folder + "/relu.png", channels: 3)
        // Input 28*4 + 2 gaps; filters 8 across at 12 px; feature maps 8 across at 56 px + 9 gaps of 4.
        XCTAssertEqual(picture.width, 8 * 56 + 9 * 4)
        XCTAssertEqual(picture.height, (112 + 8) + 14 + (36 + 8) + 14 + (56 + 8))
        let svg = try LocalCluster.run(
            "cnn", ["viz", "--checkpoint", checkpoint, "--layer", "conv2", "--image", Fixture.testImages + ":3", "-o", folder + "/conv2.svg"],
            seconds: 60)
        XCTAssertEqual(svg.status, 0, svg.combined)
        let shapes = try SVGShapes(String(contentsOfFile: folder + "/conv2.svg", encoding: .utf8))
        XCTAssertEqual(shapes.images, 3)
        XCTAssertTrue(shapes.texts.contains { $0.contains("8 filters of 1x3x3") }, shapes.texts.joined(separator: "|"))
        XCTAssertTrue(shapes.texts.contains { $0.contains("layer 3 Conv2D(16, 3x3, p1): 16 feature maps of 14x14") }, shapes.texts.joined(separator: "|"))
        XCTAssertTrue(shapes.texts.contains { $0.contains("t10k-images-idx3-ubyte.gz:3") }, shapes.texts.joined(separator: "|"))
        let unknown = try LocalCluster.run("cnn", ["viz", "--checkpoint", checkpoint, "--layer", "fc9", "-o", folder + "/x.png"], seconds: 60)
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.error.contains("no layer 'fc9' in this model") && unknown.error.contains("0 Conv2D(8, 3x3, p1), 1 ReLU"), unknown.error)
    }
}
