import Foundation

/// A line chart drawn as SVG: axes with round-number ticks, a light grid, one polyline per series,
/// optional markers and labelled vertical rules (epoch boundaries), and a legend.
public struct LineChart: Sendable {
    /// One curve.
    public struct Series: Sendable {
        public var name: String
        /// A CSS colour.
        public var color: String
        /// Points in data coordinates; non-finite values are skipped.
        public var points: [(x: Double, y: Double)]
        public var dashed: Bool
        public var markers: Bool

        public init(name: String, color: String, points: [(x: Double, y: Double)], dashed: Bool = false, markers: Bool = false) {
            self.name = name
            self.color = color
            self.points = points
            self.dashed = dashed
            self.markers = markers
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    /// Fixed start of the x axis; nil fits the data.
    public var xMinimum: Double?
    /// Fixed ends of the y axis; nil fits the data.
    public var yMinimum: Double?
    public var yMaximum: Double?
    /// Vertical rules at given x, with a label (for example epoch boundaries).
    public var rules: [(x: Double, label: String)]

    public init(title: String, xLabel: String, yLabel: String, series: [Series], xMinimum: Double? = nil, yMinimum: Double? = nil,
                yMaximum: Double? = nil, rules: [(x: Double, label: String)] = []) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.xMinimum = xMinimum
        self.yMinimum = yMinimum
        self.yMaximum = yMaximum
        self.rules = rules
    }

    /// The chart as an SVG group placed at (left, top) in a `width` x `height` box.
    public func svg(left: Double, top: Double, width: Double, height: Double) -> String {
        let margin = (left: 64.0, right: 16.0, top: 28.0, bottom: 40.0)
        let plotLeft = left + margin.left, plotTop = top + margin.top
        let plotWidth = width - margin.left - margin.right, plotHeight = height - margin.top - margin.bottom
        var out = "<g class=\"chart\">\n"
        out += text(title, x: left + margin.left, y: top + 18, size: 15, weight: "bold")
        let finite = series.flatMap { $0.points.filter { $0.x.isFinite && $0.y.isFinite } }
        out += "<rect x=\"\(n(plotLeft))\" y=\"\(n(plotTop))\" width=\"\(n(plotWidth))\" height=\"\(n(plotHeight))\" fill=\"#fcfcfc\" stroke=\"#999\"/>\n"
        guard !finite.isEmpty else {
            out += text("no data yet", x: plotLeft + plotWidth / 2, y: plotTop + plotHeight / 2, size: 13, anchor: "middle", color: "#777")
            return out + "</g>\n"
        }
        var xLow = min(xMinimum ?? .infinity, finite.map(\.x).min()!), xHigh = finite.map(\.x).max()!
        if xHigh <= xLow { xLow -= 1; xHigh += 1 }
        var yLow = yMinimum ?? finite.map(\.y).min()!, yHigh = yMaximum ?? finite.map(\.y).max()!
        if yHigh <= yLow {
            let pad = max(abs(yLow) * 0.05, 1e-3)
            yLow -= pad
            yHigh += pad
        }
        let xTicks = LineChart.ticks(from: xLow, to: xHigh, count: 8)
        let yTicks = LineChart.ticks(from: yLow, to: yHigh, count: 5)
        // The axes run to the outermost ticks so that the curves never touch the frame unlabelled.
        if yMinimum == nil, let first = yTicks.first { yLow = min(yLow, first) }
        if yMaximum == nil, let last = yTicks.last { yHigh = max(yHigh, last) }
        func px(_ x: Double) -> Double { plotLeft + (x - xLow) / (xHigh - xLow) * plotWidth }
        func py(_ y: Double) -> Double { plotTop + plotHeight - (y - yLow) / (yHigh - yLow) * plotHeight }

        let yDigits = LineChart.decimals(for: yTicks)
        for tick in yTicks where tick >= yLow - 1e-12 && tick <= yHigh + 1e-12 {
            let y = py(tick)
            out += "<line x1=\"\(n(plotLeft))\" y1=\"\(n(y))\" x2=\"\(n(plotLeft + plotWidth))\" y2=\"\(n(y))\" stroke=\"#e4e4e4\"/>\n"
            out += text(String(format: "%.\(yDigits)f", tick), x: plotLeft - 6, y: y + 4, size: 11, anchor: "end", color: "#333")
        }
        let xDigits = LineChart.decimals(for: xTicks)
        for tick in xTicks where tick >= xLow - 1e-12 && tick <= xHigh + 1e-12 {
            let x = px(tick)
            out += "<line x1=\"\(n(x))\" y1=\"\(n(plotTop))\" x2=\"\(n(x))\" y2=\"\(n(plotTop + plotHeight))\" stroke=\"#eeeeee\"/>\n"
            out += text(String(format: "%.\(xDigits)f", tick), x: x, y: plotTop + plotHeight + 16, size: 11, anchor: "middle", color: "#333")
        }
        for rule in rules where rule.x > xLow && rule.x < xHigh {
            let x = px(rule.x)
            out += "<line x1=\"\(n(x))\" y1=\"\(n(plotTop))\" x2=\"\(n(x))\" y2=\"\(n(plotTop + plotHeight))\" stroke=\"#aaa\" stroke-dasharray=\"4 3\"/>\n"
            out += text(rule.label, x: x + 3, y: plotTop + 12, size: 10, color: "#888")
        }
        out += text(xLabel, x: plotLeft + plotWidth / 2, y: top + height - 6, size: 12, anchor: "middle", color: "#333")
        let yLabelX = left + 14, yLabelY = plotTop + plotHeight / 2
        out += "<text x=\"\(n(yLabelX))\" y=\"\(n(yLabelY))\" font-size=\"12\" fill=\"#333\" text-anchor=\"middle\" "
            + "transform=\"rotate(-90 \(n(yLabelX)) \(n(yLabelY)))\">\(LineChart.escape(yLabel))</text>\n"

        for line in series {
            let points = line.points.filter { $0.x.isFinite && $0.y.isFinite }
            guard !points.isEmpty else { continue }
            let coordinates = points.map { "\(n(px($0.x))),\(n(py($0.y)))" }.joined(separator: " ")
            let dash = line.dashed ? " stroke-dasharray=\"6 4\"" : ""
            out += "<polyline class=\"series\" data-name=\"\(LineChart.escape(line.name))\" points=\"\(coordinates)\" fill=\"none\" "
                + "stroke=\"\(line.color)\" stroke-width=\"2\" stroke-linejoin=\"round\"\(dash)/>\n"
            if line.markers || points.count == 1 {
                for point in points {
                    out += "<circle cx=\"\(n(px(point.x)))\" cy=\"\(n(py(point.y)))\" r=\"3.5\" fill=\"\(line.color)\"/>\n"
                }
            }
        }
        // Legend, top right inside the plot.
        var legendY = plotTop + 16
        let legendX = plotLeft + plotWidth - 170
        for line in series where !line.points.isEmpty {
            let dash = line.dashed ? " stroke-dasharray=\"6 4\"" : ""
            out += "<line x1=\"\(n(legendX))\" y1=\"\(n(legendY - 4))\" x2=\"\(n(legendX + 24))\" y2=\"\(n(legendY - 4))\" "
                + "stroke=\"\(line.color)\" stroke-width=\"2\"\(dash)/>\n"
            out += text(line.name, x: legendX + 30, y: legendY, size: 12, color: "#222")
            legendY += 16
        }
        return out + "</g>\n"
    }

    /// Round-number ticks (1, 2 or 5 times a power of ten apart) covering `from...to`.
    public static func ticks(from low: Double, to high: Double, count: Int) -> [Double] {
        guard low.isFinite, high.isFinite, high > low, count > 0 else { return [low] }
        let rough = (high - low) / Double(count)
        let magnitude = pow(10, floor(log10(rough)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
        // From the last tick at or below `low` to the first at or above `high`.
        let first = floor(low / step + 1e-9), last = ceil(high / step - 1e-9)
        var ticks: [Double] = []
        var index = first
        while index <= last, ticks.count < 100 {
            let value = index * step
            ticks.append(abs(value) < step * 1e-9 ? 0 : value)
            index += 1
        }
        return ticks
    }

    /// Digits after the point needed to tell the ticks apart.
    static func decimals(for ticks: [Double]) -> Int {
        guard ticks.count > 1 else { return 2 }
        let step = abs(ticks[1] - ticks[0])
        guard step > 0, step < 1 else { return 0 }
        return min(Int(ceil(-log10(step) - 1e-9)), 6)
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    private func text(_ content: String, x: Double, y: Double, size: Int, anchor: String = "start", weight: String = "normal",
                      color: String = "#111") -> String {
        "<text x=\"\(n(x))\" y=\"\(n(y))\" font-size=\"\(size)\" font-weight=\"\(weight)\" fill=\"\(color)\" "
            + "text-anchor=\"\(anchor)\">\(LineChart.escape(content))</text>\n"
    }

    private func n(_ value: Double) -> String {
        String(format: "%.1f", value)
    }
}
