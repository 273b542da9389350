import Checkpoint
import ConfigReading
import Foundation
import JSONWriting

/// A run's folder: `config.yaml` (as resolved), `metrics.jsonl`, `checkpoints/`.
public final class RunDirectory {
    public let path: String
    public let checkpoints: CheckpointStore
    private var metrics: FileHandle?

    public init(path: String, keep: Int) throws {
        self.path = path
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw ConfigError(file: path, line: nil, message: "cannot create the run directory (\(error.localizedDescription)); choose another --run-dir")
        }
        checkpoints = CheckpointStore(runDirectory: path, keep: keep)
    }

    public var metricsPath: String { path + "/metrics.jsonl" }

    public func writeConfig(_ config: TrainingConfig) throws {
        try config.yaml.write(toFile: path + "/config.yaml", atomically: true, encoding: .utf8)
    }

    /// Appends one JSON object as a line. Keys are written in the given order.
    public func appendMetrics(_ fields: [(String, MetricValue)]) {
        if metrics == nil {
            if !FileManager.default.fileExists(atPath: metricsPath) {
                _ = FileManager.default.createFile(atPath: metricsPath, contents: nil)
            }
            metrics = FileHandle(forWritingAtPath: metricsPath)
            metrics?.seekToEndOfFile()
        }
        let line = fields.reduce(JSONObject(layout: .spaced, numbers: .sixSignificantDigits)) { $1.1.added(to: $0, as: $1.0) }
        metrics?.write(Data((line.text + "\n").utf8))
    }

    /// Removes metrics lines past `step` (after a resume from an earlier checkpoint), so the file
    /// reads as one uninterrupted run.
    public func truncateMetrics(after step: Int) {
        guard let text = try? String(contentsOfFile: metricsPath, encoding: .utf8) else { return }
        let kept = text.split(separator: "\n").filter { line in
            guard let range = line.range(of: "\"step\": ") else { return true }
            let digits = line[range.upperBound...].prefix { $0.isNumber }
            return (Int(digits) ?? 0) <= step
        }
        try? (kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).write(toFile: metricsPath, atomically: true, encoding: .utf8)
    }
}

/// A value in a metrics line.
public enum MetricValue {
    case int(Int)
    case double(Double)
    case string(String)

    /// `object` with this value under `key` (Doubles as `%.6g`, non-finite ones as null).
    func added(to object: JSONObject, as key: String) -> JSONObject {
        switch self {
        case .int(let v): return object.int(key, v)
        case .double(let v): return object.double(key, v)
        case .string(let v): return object.string(key, v)
        }
    }
}
