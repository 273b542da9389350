import CNN
import Foundation
import Training

extension TrainingConfig {
    /// Makes a fully convolutional model take `height` x `width` images; a model with dense layers
    /// is an error saying how to convert it.
    mutating func resizeInput(height: Int, width: Int, checkpoint: String) throws {
        guard height > 0, width > 0 else { throw MonitoringError("--input-size must be two positive numbers, found \(height) \(width)") }
        guard model.input.spatialRank == 2 else {
            throw MonitoringError("--input-size is for image models; this one takes \(model.input)")
        }
        if model.layers.contains(where: { if case .dense = $0 { return true }; if case .flatten = $0 { return true }; return false }) {
            throw MonitoringError("the model has dense layers, so it takes only \(model.input.height)x\(model.input.width) images; "
                + "convert it first with `cnn convert --fully-convolutional \(checkpoint) --out DIR` and predict with DIR's checkpoint")
        }
        model.input.height = height
        model.input.width = width
    }
}

/// A fully convolutional model's prediction on an image larger than it was trained on: the class
/// scores at every window position (a grid), and their average.
public struct GridPrediction: Sendable {
    public var source: String
    public var rows: Int
    public var columns: Int
    /// Softmax of each cell's scores, [rows * columns][classes], row by row.
    public var cells: [[Double]]
    /// The mean of the cells' probabilities, [classes].
    public var averaged: [Double]

    /// The most probable class of each cell, row by row.
    public var topClasses: [Int] { cells.map { Self.best($0) } }

    public static func run(_ model: CheckpointModel, image: ImageReference) throws -> GridPrediction {
        let input = try model.input(for: image)
        let output = model.network.outputShape
        let (classes, plane) = (output.channels, output.height * output.width)
        let scores = input.withUnsafeBufferPointer { buffer in
            Array(UnsafeBufferPointer(start: model.network.forward(buffer.baseAddress!, batch: 1, context: .inference), count: output.count))
        }
        // scores [K, rows, columns]: cell p's scores are scores[k * plane + p].
        let cells = (0..<plane).map { p in Prediction.softmax((0..<classes).map { scores[$0 * plane + p] }) }
        let averaged = (0..<classes).map { k in cells.reduce(0) { $0 + $1[k] } / Double(plane) }
        return GridPrediction(source: image.description, rows: output.height, columns: output.width, cells: cells, averaged: averaged)
    }

    static func best(_ probabilities: [Double]) -> Int {
        probabilities.indices.max { probabilities[$0] != probabilities[$1] ? probabilities[$0] < probabilities[$1] : $0 > $1 } ?? 0
    }

    public func text(classNames: [String], top: Int) -> String {
        func name(_ k: Int) -> String { k < classNames.count ? classNames[k] : "class \(k)" }
        var lines = ["\(source): \(rows)x\(columns) grid of window positions; most probable class at each (class index):"]
        let width = max(2, String(cells.first.map(\.count) ?? 1).count)
        let tops = topClasses
        for r in 0..<rows {
            lines.append("  " + (0..<columns).map { String(repeating: " ", count: max(0, width - String(tops[r * columns + $0]).count)) + String(tops[r * columns + $0]) }.joined(separator: " "))
        }
        lines.append("averaged over the \(rows * columns) positions:")
        let ranked = averaged.indices.sorted { averaged[$0] != averaged[$1] ? averaged[$0] > averaged[$1] : $0 < $1 }
        for (rank, k) in ranked.prefix(max(top, 1)).enumerated() {
            lines.append("  \(rank + 1). \(name(k))  \(String(format: "%.4f", averaged[k]))")
        }
        return lines.joined(separator: "\n")
    }
}
