import CNN
import Foundation

/// Runs the real executables (`cnn-coord`, `cnn-worker`, `cnn`) as child processes for
/// end-to-end tests: every run has a hard deadline, after which it is killed and reported.
public enum LocalCluster {
    /// The folder holding the built executables: the test bundle sits next to them.
    public static var binaries: URL {
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var url = URL(fileURLWithPath: own).deletingLastPathComponent()
        // On Linux the bundle is a plain executable in the build folder; elsewhere it may be nested.
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("cnn-coord").path), url.path != "/" {
            url.deleteLastPathComponent()
        }
        return url
    }

    /// One of the built executables by name; an absolute path is taken as it is.
    public static func executable(_ name: String) -> String {
        name.hasPrefix("/") ? name : binaries.appendingPathComponent(name).path
    }

    /// The environment for children: the BLAS kernel pinned to the one this process runs, so a
    /// child's arithmetic matches an in-process reference bit for bit.
    public static var environment: [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["OPENBLAS_CORETYPE"] = BLAS.coreName
        return environment
    }

    /// A finished (or killed) child process.
    public struct Outcome {
        public var status: Int32
        public var output: String
        public var error: String
        public var timedOut: Bool
        public var combined: String { output + error }
    }

    /// A running child whose output is collected into files (pipes could fill and block it).
    public final class Child: @unchecked Sendable {
        public let process = Process()
        private let outputURL: URL
        private let errorURL: URL

        public init(_ program: String, _ arguments: [String], environment: [String: String] = LocalCluster.environment) throws {
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cnn-child-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            outputURL = folder.appendingPathComponent("stdout")
            errorURL = folder.appendingPathComponent("stderr")
            _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
            _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
            process.executableURL = URL(fileURLWithPath: LocalCluster.executable(program))
            process.arguments = arguments
            process.environment = environment
            process.standardOutput = try FileHandle(forWritingTo: outputURL)
            process.standardError = try FileHandle(forWritingTo: errorURL)
            process.standardInput = FileHandle.nullDevice
            try process.run()
        }

        public var output: String { (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "" }
        public var error: String { (try? String(contentsOf: errorURL, encoding: .utf8)) ?? "" }

        /// Waits up to `seconds`; kills the child (and says so) when the deadline passes.
        public func wait(seconds: Double) -> Outcome {
            let deadline = Date().addingTimeInterval(seconds)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            var timedOut = false
            if process.isRunning {
                timedOut = true
                kill(process.processIdentifier, SIGKILL)
            }
            process.waitUntilExit()
            return Outcome(status: process.terminationStatus, output: output, error: error, timedOut: timedOut)
        }

        public func signal(_ number: Int32) {
            kill(process.processIdentifier, number)
        }
    }

    /// Runs a program to completion within `seconds`.
    public static func run(_ program: String, _ arguments: [String], seconds: Double = 120) throws -> Outcome {
        try Child(program, arguments).wait(seconds: seconds)
    }

    /// A fresh temporary folder.
    public static func temporaryDirectory(_ label: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("cnn-\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url.path
    }

    /// Writes `text` to `name` in `folder` and returns the path.
    public static func write(_ text: String, to name: String, in folder: String) throws -> String {
        let path = folder + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Writes `config.yaml` into `folder`: one dense layer over 64 synthetic 8x8 images, batch 32
    /// in micro-batches of 8, so that a real run takes a fraction of a second; `more` is appended
    /// (further sections). Returns its path.
    public static func writeTinyConfig(in folder: String, more: String = "") throws -> String {
        try write("""
            model:
              input: [1, 8, 8]
              layers:
                - flatten
                - dense: 10
            data:
              dataset: synthetic
              synthetic_train: 64
              synthetic_test: 32
            train:
              epochs: 1
              batch: 32
              micro_batch: 8
              seed: 3

            """ + more, to: "config.yaml", in: folder)
    }

    /// Whether the run directory's metrics.jsonl has a training line at or past `step`, waiting
    /// up to `seconds` for it.
    public static func waitForTrainingStep(_ step: Int, in run: String, seconds: Double = 60) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let text = (try? String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8)) ?? ""
            let reached = text.split(separator: "\n").contains { line in
                guard line.contains("\"loss\""), let range = line.range(of: "\"step\": ") else { return false }
                return Int(line[range.upperBound...].prefix { $0.isNumber }) ?? 0 >= step
            }
            if reached { return true }
            usleep(5_000)
        }
        return false
    }

    /// The child processes of `pid` (a coordinator's spawned workers).
    public static func childProcesses(of pid: Int32) -> [Int32] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").compactMap { Int32($0) }
    }
}
