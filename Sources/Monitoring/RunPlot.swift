import Foundation

/// `cnn plot RUN_DIR`: the run's training loss, training and test accuracy, and throughput
/// against steps, as one SVG file a browser shows.
public enum RunPlot {
    /// Size of the drawing in pixels.
    static let width = 860.0
    static let panelHeight = 270.0

    /// The whole SVG document for a run's metrics.
    public static func svg(_ history: MetricsHistory, title: String) -> String {
        let rules = epochRules(history)
        let training = history.training
        let loss = LineChart(
            title: "Loss", xLabel: "step", yLabel: "cross-entropy",
            series: [
                .init(name: "training loss", color: "#1f77b4", points: training.compactMap { p in p.loss.map { (Double(p.step), $0) } }),
                .init(name: "test loss", color: "#ff7f0e",
                      points: history.evaluations.compactMap { p in p.testLoss.map { (Double(p.step), $0) } }, dashed: true, markers: true),
            ], xMinimum: 0, yMinimum: 0, rules: rules)
        let accuracyPoints = training.compactMap { p in p.accuracy.map { (Double(p.step), $0 * 100) } }
        let testPoints = history.evaluations.compactMap { p in p.testAccuracy.map { (Double(p.step), $0 * 100) } }
        // Top-5 (runs of more than five classes) dashed beside top-1, in the same colours.
        let topFivePoints = training.compactMap { p in p.topFiveAccuracy.map { (Double(p.step), $0 * 100) } }
        let testTopFivePoints = history.evaluations.compactMap { p in p.testTopFiveAccuracy.map { (Double(p.step), $0 * 100) } }
        let lowest = (accuracyPoints + testPoints).map(\.1).min() ?? 0
        var accuracySeries: [LineChart.Series] = [
            .init(name: "training accuracy", color: "#1f77b4", points: accuracyPoints),
            .init(name: "test accuracy", color: "#ff7f0e", points: testPoints, markers: true),
        ]
        if !topFivePoints.isEmpty { accuracySeries.append(.init(name: "training top-5", color: "#1f77b4", points: topFivePoints, dashed: true)) }
        if !testTopFivePoints.isEmpty {
            accuracySeries.append(.init(name: "test top-5", color: "#ff7f0e", points: testTopFivePoints, dashed: true, markers: true))
        }
        let accuracy = LineChart(
            title: "Accuracy", xLabel: "step", yLabel: "accuracy (%)",
            series: accuracySeries, xMinimum: 0, yMinimum: max(floor(lowest / 10) * 10, 0), yMaximum: 100, rules: rules)
        let throughput = LineChart(
            title: "Throughput", xLabel: "step", yLabel: "images per second",
            series: [
                .init(name: "training images/s", color: "#2ca02c",
                      points: training.compactMap { p in p.imagesPerSecond.map { (Double(p.step), $0) } }),
            ], xMinimum: 0, yMinimum: 0, rules: rules)

        let height = 40 + panelHeight * 3
        var out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        out += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" "
            + "viewBox=\"0 0 \(Int(width)) \(Int(height))\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
        out += "<title>\(LineChart.escape(title))</title>\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        out += "<text x=\"16\" y=\"26\" font-size=\"17\" font-weight=\"bold\" fill=\"#111\">\(LineChart.escape(title))</text>\n"
        out += "<text x=\"\(Int(width) - 16)\" y=\"26\" font-size=\"12\" fill=\"#555\" text-anchor=\"end\">\(LineChart.escape(caption(history)))</text>\n"
        for (index, chart) in [loss, accuracy, throughput].enumerated() {
            out += chart.svg(left: 0, top: 40 + Double(index) * panelHeight, width: width, height: panelHeight)
        }
        return out + "</svg>\n"
    }

    /// Reads `runDirectory/metrics.jsonl` and writes the SVG to `output` (default
    /// `runDirectory/training.svg`). Returns the path written.
    @discardableResult
    public static func write(runDirectory: String, output: String? = nil) throws -> String {
        let history = try MetricsHistory.load(path: runDirectory)
        guard !history.training.isEmpty || !history.evaluations.isEmpty else {
            throw MonitoringError("\(runDirectory)/metrics.jsonl holds no metrics yet; the coordinator writes a line every "
                + "train.log_every steps and after each evaluation: plot again later")
        }
        let path = output ?? (runDirectory as NSString).appendingPathComponent("training.svg")
        let title = "Training run " + URL(fileURLWithPath: runDirectory).standardizedFileURL.lastPathComponent
        do {
            try svg(history, title: title).write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw MonitoringError("cannot write \(path) (\(error.localizedDescription)); choose another --output")
        }
        return path
    }

    private static func epochRules(_ history: MetricsHistory) -> [(x: Double, label: String)] {
        var rules: [(x: Double, label: String)] = []
        var previous: (step: Int, epoch: Int)?
        for point in history.training {
            if let previous, point.epoch > previous.epoch {
                rules.append((x: Double(previous.step), label: "epoch \(point.epoch)"))
            }
            previous = (point.step, point.epoch)
        }
        return rules
    }

    private static func caption(_ history: MetricsHistory) -> String {
        var parts: [String] = []
        if let last = history.training.last { parts.append("\(last.step) steps") }
        if let test = history.evaluations.last?.testAccuracy { parts.append("final test accuracy \(Format.percent(test))") }
        let rates = history.training.compactMap(\.imagesPerSecond)
        if !rates.isEmpty { parts.append("median \(Int(rates.sorted()[rates.count / 2].rounded())) images/s") }
        return parts.joined(separator: " · ")
    }
}
