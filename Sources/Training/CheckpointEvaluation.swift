import CNN
import Checkpoint
import Data
import Foundation

/// `cnn eval`: a checkpoint's accuracy on the test set, per class, with the confusion matrix.
public struct CheckpointEvaluation: Sendable {
    public var accuracy: Double
    /// The share of samples whose true class is among the five highest scores (ILSVRC's
    /// figure); nil with five classes or fewer, where it is always 100%.
    public var topFiveAccuracy: Double?
    public var meanLoss: Double
    public var classNames: [String]
    /// confusion[truth][prediction]
    public var confusion: [[Int]]
    public var checkpointStep: Int

    /// Evaluates a checkpoint directory, or a safetensors weights file with `configPath` (see `TrainedModel`).
    public static func run(checkpoint path: String, configPath: String?) throws -> CheckpointEvaluation {
        let loaded = try TrainedModel.load(path, configPath: configPath)
        let config = loaded.config
        let state = loaded.state
        let data = try DataSource.load(config)
        let test = data.test
        let network = state.network
        let classes = network.outputShape.count
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
        var total = BatchScore()
        let images = FloatBuffer(), labels = IndexBuffer()
        for work in evaluationWork(testCount: test.count, microBatch: config.train.evalBatch) {
            let n = work.samples.count
            test.copyBatch(work.samples, images: images.reserve(n * test.sampleSize), labels: labels.reserve(n))
            let logits = network.forward(images.pointer, batch: n, context: .inference)
            total = total + SoftmaxCrossEntropy().evaluate(logits: logits, labels: labels.pointer, batch: n, classes: classes, gradient: nil)
            for i in 0..<n {
                let row = logits + i * classes
                var best = 0
                for j in 1..<classes where row[j] > row[best] { best = j }
                let truth = Int(labels.pointer[i])
                confusion[truth][best] += 1
            }
        }
        var names: [String]
        switch config.data.dataset {
        case "fashion-mnist": names = FashionMNIST.classNames
        case "cifar10": names = CIFAR10.classNames
        default: names = (0..<classes).map { "class \($0)" }
        }
        if let recorded = loaded.classNames ?? data.classNames { names = recorded }
        return CheckpointEvaluation(
            accuracy: total.accuracy,
            topFiveAccuracy: classes > 5 && test.count > 0 ? total.topFiveAccuracy : nil,
            meanLoss: total.meanLoss, classNames: names, confusion: confusion,
            checkpointStep: loaded.step ?? 0)
    }

    /// The true class's place among the scores, from 0: how many classes score strictly higher
    /// (a tie counts for the true class, as torch.topk's ordering may put it either way).
    public static func rank(of truth: Int, in scores: UnsafeBufferPointer<Float>) -> Int {
        BatchScore.rank(of: truth, in: scores.baseAddress!, classes: scores.count)
    }

    public var text: String {
        let topFive = topFiveAccuracy.map { ", top-5 \(String(format: "%.2f", $0 * 100))%" } ?? ""
        var lines = ["checkpoint at step \(checkpointStep): test accuracy \(String(format: "%.2f", accuracy * 100))% (top-1)\(topFive), "
            + "loss \(String(format: "%.4f", meanLoss))", "", "per class:"]
        let width = classNames.map(\.count).max() ?? 5
        for (index, row) in confusion.enumerated() {
            let count = row.reduce(0, +)
            let rate = count == 0 ? 0 : Double(row[index]) / Double(count)
            let name = index < classNames.count ? classNames[index] : "class \(index)"
            lines.append("  \(name.padding(toLength: width, withPad: " ", startingAt: 0))  \(String(format: "%6.2f", rate * 100))%  (\(row[index])/\(count))")
        }
        lines.append("")
        lines.append("confusion matrix (rows: true class, columns: predicted):")
        for row in confusion {
            lines.append("  " + row.map { String(format: "%5d", $0) }.joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }
}
