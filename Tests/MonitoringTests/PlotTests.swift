import Foundation
import Monitoring
import TestSupport
import XCTest

#if canImport(FoundationXML)
import FoundationXML
#endif

final class PlotTests: XCTestCase {
    static let metrics = """
        {"step": 5, "epoch": 1, "loss": 2.1, "accuracy": 0.2, "images_per_second": 900, "workers": 2, "learning_rate": 0.05}
        {"step": 10, "epoch": 1, "loss": 1.4, "accuracy": 0.5, "images_per_second": 1800, "workers": 2, "learning_rate": 0.05}
        {"step": 10, "epoch": 1, "test_loss": 1.2, "test_accuracy": 0.55, "workers": 2}
        {"step": 15, "epoch": 2, "loss": 0.9, "accuracy": 0.7, "images_per_second": null, "workers": 2, "learning_rate": 0.05}
        {"step": 20, "epoch": 2, "loss": 0.7, "accuracy": 0.78, "images_per_second": 1900, "workers": 2, "learning_rate": 0.05}
        {"step": 20, "epoch": 2, "test_loss": 0.8, "test_accuracy": 0.74, "workers": 2}

        """

    func testHistorySeparatesTrainingWindowsFromEvaluations() throws {
        let history = try MetricsHistory.parse(Self.metrics, source: "m.jsonl")
        XCTAssertEqual(history.training.map(\.step), [5, 10, 15, 20])
        XCTAssertEqual(history.training.map(\.loss), [2.1, 1.4, 0.9, 0.7])
        XCTAssertEqual(history.training[2].imagesPerSecond, nil, "null (a non-finite rate) is a missing value")
        XCTAssertEqual(history.evaluations.map(\.step), [10, 20])
        XCTAssertEqual(history.evaluations.map(\.testAccuracy), [0.55, 0.74])
    }

    func testTopFiveIsReadAndDrawnDashedBesideTopOne() throws {
        let metrics = """
            {"step": 5, "epoch": 1, "loss": 2.1, "accuracy": 0.2, "top5_accuracy": 0.6, "images_per_second": 900}
            {"step": 5, "epoch": 1, "test_loss": 1.2, "test_accuracy": 0.55, "test_top5_accuracy": 0.9, "workers": 2}
            """
        let history = try MetricsHistory.parse(metrics, source: "m.jsonl")
        XCTAssertEqual(history.training.map(\.topFiveAccuracy), [0.6])
        XCTAssertEqual(history.evaluations.map(\.testTopFiveAccuracy), [0.9])
        let svg = RunPlot.svg(history, title: "run")
        XCTAssertTrue(svg.contains("training top-5") && svg.contains("test top-5"), "no top-5 curves in the accuracy chart")
        XCTAssertFalse(RunPlot.svg(try MetricsHistory.parse(Self.metrics, source: "m.jsonl"), title: "run").contains("top-5"),
                       "a run without top-5 figures draws none")
    }

    func testMalformedLineIsRejectedWithFileAndLineNumber() {
        XCTAssertThrowsError(try MetricsHistory.parse("{\"step\": 1, \"loss\": 2}\n{\"step\": 2, \"loss\": \n", source: "run/metrics.jsonl")) { error in
            XCTAssertTrue("\(error)".hasPrefix("run/metrics.jsonl:2: not a JSON object"), "\(error)")
        }
        XCTAssertThrowsError(try MetricsHistory.parse("{\"loss\": 2}\n", source: "m")) { error in
            XCTAssertTrue("\(error)".contains("m:1: the line has no integer 'step'"), "\(error)")
        }
        XCTAssertThrowsError(try MetricsHistory.load(path: "/nonexistent/run")) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/run") && "\(error)".contains("--run-dir"), "\(error)")
        }
    }

    func testSVGIsWellFormedWithThreeChartsAndCurvesThroughEveryPoint() throws {
        let history = try MetricsHistory.parse(Self.metrics, source: "m")
        let svg = RunPlot.svg(history, title: "Training run demo")
        let shapes = try SVGShapes(svg)
        XCTAssertEqual(shapes.root, "svg")
        XCTAssertEqual(shapes.groups, 3)
        XCTAssertEqual(shapes.texts.filter { ["Loss", "Accuracy", "Throughput"].contains($0) }, ["Loss", "Accuracy", "Throughput"])
        let loss = try XCTUnwrap(shapes.polylines["training loss"])
        XCTAssertEqual(loss.count, 4)
        XCTAssertEqual(shapes.polylines["test accuracy"]?.count, 2)
        XCTAssertEqual(shapes.polylines["training images/s"]?.count, 3, "the missing rate is skipped, not drawn as zero")
        // Steps grow to the right, and a falling loss goes down the page (SVG y grows downwards).
        XCTAssertEqual(loss.map(\.x), loss.map(\.x).sorted())
        XCTAssertEqual(loss.map(\.y), loss.map(\.y).sorted())
        let accuracy = try XCTUnwrap(shapes.polylines["training accuracy"])
        XCTAssertEqual(accuracy.map(\.y), accuracy.map(\.y).sorted(by: >))
        XCTAssertTrue(shapes.texts.contains("epoch 2"), "the epoch boundary is marked")
        XCTAssertTrue(shapes.texts.contains { $0.contains("final test accuracy 74.00%") }, shapes.texts.joined(separator: "|"))
    }

    func testPlotWritesIntoTheRunDirectoryAndRefusesAnEmptyRun() throws {
        let folder = try LocalCluster.temporaryDirectory("plot")
        try Self.metrics.write(toFile: folder + "/metrics.jsonl", atomically: true, encoding: .utf8)
        let path = try RunPlot.write(runDirectory: folder)
        XCTAssertEqual(path, folder + "/training.svg")
        XCTAssertNoThrow(try SVGShapes(String(contentsOfFile: path, encoding: .utf8)))
        let empty = try LocalCluster.temporaryDirectory("plot-empty")
        try "".write(toFile: empty + "/metrics.jsonl", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunPlot.write(runDirectory: empty)) { error in
            XCTAssertTrue("\(error)".contains("holds no metrics yet"), "\(error)")
        }
    }

    func testTicksAreRoundNumbersCoveringTheRange() {
        XCTAssertEqual(LineChart.ticks(from: 0, to: 937, count: 8), [0, 200, 400, 600, 800, 1000])
        XCTAssertEqual(LineChart.ticks(from: 0.21, to: 2.37, count: 5), [0, 0.5, 1, 1.5, 2, 2.5])
        XCTAssertEqual(LineChart.ticks(from: 60, to: 100, count: 5), [60, 70, 80, 90, 100])
    }
}

/// What an SVG document holds, read with a real XML parser (so it must be well-formed).
final class SVGShapes: NSObject, XMLParserDelegate {
    var root = ""
    var groups = 0
    var texts: [String] = []
    var images = 0
    var polylines: [String: [(x: Double, y: Double)]] = [:]
    private var text: String?

    init(_ document: String) throws {
        super.init()
        let parser = XMLParser(data: Data(document.utf8))
        parser.delegate = self
        guard parser.parse() else {
            throw Exposition.Failure("not well-formed XML: \(parser.parserError.map { "\($0)" } ?? "unknown error")")
        }
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        if root.isEmpty { root = name }
        switch name {
        case "g": groups += 1
        case "text": text = ""
        case "image": images += 1
        case "polyline":
            let points = (attributes["points"] ?? "").split(separator: " ").compactMap { pair -> (x: Double, y: Double)? in
                let parts = pair.split(separator: ",")
                guard parts.count == 2, let x = Double(parts[0]), let y = Double(parts[1]) else { return nil }
                return (x, y)
            }
            polylines[attributes["data-name"] ?? "?"] = points
        default: break
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        text? += string
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        if name == "text", let text {
            texts.append(text)
            self.text = nil
        }
    }
}
