import Foundation

/// The contents of a run's `metrics.jsonl`: one object per logged training window and one per
/// evaluation, as the coordinator writes them.
public struct MetricsHistory: Sendable, Equatable {
    /// A logged training window.
    public struct TrainingPoint: Sendable, Equatable {
        public var step: Int
        /// 1-based, as in the file.
        public var epoch: Int
        /// Mean training loss over the window.
        public var loss: Double?
        /// Training accuracy over the window, 0...1.
        public var accuracy: Double?
        /// Top-5 training accuracy over the window, 0...1 (runs of more than five classes).
        public var topFiveAccuracy: Double?
        public var imagesPerSecond: Double?
        public var learningRate: Double?
        public var workers: Int?
    }

    /// An evaluation on the test set.
    public struct EvaluationPoint: Sendable, Equatable {
        public var step: Int
        public var epoch: Int
        public var testLoss: Double?
        /// 0...1.
        public var testAccuracy: Double?
        /// Top-5, 0...1 (runs of more than five classes).
        public var testTopFiveAccuracy: Double?
    }

    public var training: [TrainingPoint] = []
    public var evaluations: [EvaluationPoint] = []

    public init() {}

    /// Reads `RUN_DIR/metrics.jsonl` (or a metrics file given directly).
    ///
    /// - Throws: `MonitoringError` naming the file, and the line for malformed content.
    public static func load(path: String) throws -> MetricsHistory {
        var isDirectory: ObjCBool = false
        var file = path
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            file = (path as NSString).appendingPathComponent("metrics.jsonl")
        }
        guard FileManager.default.fileExists(atPath: file) else {
            throw MonitoringError("\(file): no such file; give a run directory (the --run-dir of cnn-coord) holding metrics.jsonl")
        }
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw MonitoringError("\(file): cannot be read as UTF-8 text; is it a metrics.jsonl written by cnn-coord?")
        }
        return try parse(text, source: file)
    }

    /// Parses JSON-lines text; `source` names it in errors.
    public static func parse(_ text: String, source: String) throws -> MetricsHistory {
        var history = MetricsHistory()
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty else { continue }
            let object: [String: Any]
            do {
                guard let parsed = try JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any] else {
                    throw MonitoringError("not an object")
                }
                object = parsed
            } catch {
                throw MonitoringError("\(source):\(index + 1): not a JSON object (\(trimmed.prefix(60))); "
                    + "each line of metrics.jsonl must be one object; remove or repair that line")
            }
            guard let step = integer(object["step"]) else {
                throw MonitoringError("\(source):\(index + 1): the line has no integer 'step'; each metrics line needs one")
            }
            let epoch = integer(object["epoch"]) ?? 0
            if object["test_accuracy"] != nil || object["test_loss"] != nil {
                history.evaluations.append(EvaluationPoint(
                    step: step, epoch: epoch, testLoss: number(object["test_loss"]), testAccuracy: number(object["test_accuracy"]),
                    testTopFiveAccuracy: number(object["test_top5_accuracy"])))
            } else {
                history.training.append(TrainingPoint(
                    step: step, epoch: epoch, loss: number(object["loss"]), accuracy: number(object["accuracy"]),
                    topFiveAccuracy: number(object["top5_accuracy"]), imagesPerSecond: number(object["images_per_second"]), learningRate: number(object["learning_rate"]),
                    workers: integer(object["workers"])))
            }
        }
        return history
    }

    private static func number(_ value: Any?) -> Double? {
        guard let value, !(value is NSNull) else { return nil }
        if let number = value as? NSNumber {
            let double = number.doubleValue
            return double.isFinite ? double : nil
        }
        return nil
    }

    private static func integer(_ value: Any?) -> Int? {
        guard let double = number(value), double == double.rounded() else { return nil }
        return Int(double)
    }
}
