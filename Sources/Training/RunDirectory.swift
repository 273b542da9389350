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
        let file = path + "/config.yaml"
        do {
            try config.yaml.write(toFile: file, atomically: true, encoding: .utf8)
        } catch {
            let underlying = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError
            let reason = underlying?.localizedDescription ?? error.localizedDescription
            throw RunDirectoryError(description: "cannot write \(file): \(reason); free space in \(path) (or give another --run-dir) and start again")
        }
    }

    /// Why metrics.jsonl could not be appended to (a full disk, say): the run should stop. After
    /// a failure nothing more is appended, so the file never has a gap in the middle.
    public private(set) var metricsFailure: String?

    /// Appends one JSON object as a line. Keys are written in the given order. A line that cannot
    /// be written whole is cut off again, and `metricsFailure` says why.
    public func appendMetrics(_ fields: [(String, MetricValue)]) {
        guard metricsFailure == nil else { return }
        if metrics == nil {
            if !FileManager.default.fileExists(atPath: metricsPath) {
                _ = FileManager.default.createFile(atPath: metricsPath, contents: nil)
            }
            metrics = FileHandle(forWritingAtPath: metricsPath)
            metrics?.seekToEndOfFile()
        }
        guard let metrics else {
            metricsFailure = "cannot open \(metricsPath) for writing"
            return
        }
        let line = fields.reduce(JSONObject(layout: .spaced, numbers: .sixSignificantDigits)) { $1.1.added(to: $0, as: $1.0) }
        let end = metrics.offsetInFile
        do {
            try metrics.write(contentsOf: Data((line.text + "\n").utf8))
        } catch {
            try? metrics.truncate(atOffset: end)
            metricsFailure = "cannot append to \(metricsPath): \(error.localizedDescription)"
        }
    }

    /// Removes metrics lines past `step` (after a resume from an earlier checkpoint), so the file
    /// reads as one uninterrupted run.
    public func truncateMetrics(after step: Int) {
        // The file is rewritten whole: a handle still open would append to the old one.
        try? metrics?.close()
        metrics = nil
        guard let text = try? String(contentsOfFile: metricsPath, encoding: .utf8) else { return }
        let kept = text.split(separator: "\n").filter { line in
            // A line cut short (a crash or a full disk in the middle of a write) goes too.
            guard line.hasPrefix("{"), line.hasSuffix("}") else { return false }
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
    /// Seconds since 1970, written to the millisecond (six significant digits would round them to
    /// a quarter of an hour).
    case wallTime(Double)

    /// `object` with this value under `key` (Doubles as `%.6g`, non-finite ones as null).
    func added(to object: JSONObject, as key: String) -> JSONObject {
        switch self {
        case .int(let v): return object.int(key, v)
        case .double(let v): return object.double(key, v)
        case .string(let v): return object.string(key, v)
        case .wallTime(let v): return object.raw(key, String(format: "%.3f", v))
        }
    }
}

/// A run directory that cannot be written.
public struct RunDirectoryError: Error, CustomStringConvertible {
    public var description: String
}
