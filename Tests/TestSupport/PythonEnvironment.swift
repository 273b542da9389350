import Foundation

/// The Python of `scripts/python-env` (torch, torchvision, onnx, onnxruntime, Pillow, safetensors), made
/// once per clone in its build folder, for tests that compare with those libraries. Where it cannot be
/// made, `interpreter` says why, for the test to skip with that reason.
public enum PythonEnvironment {
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    /// The package's root: the first folder above the test binaries that holds `Package.swift`.
    public static var packageRoot: String {
        var url = LocalCluster.binaries
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path), url.path != "/" {
            url.deleteLastPathComponent()
        }
        return url.path
    }

    private static let made: Result<String, Unavailable> = {
        let script = packageRoot + "/scripts/python-env"
        guard FileManager.default.isExecutableFile(atPath: script) else {
            return .failure(Unavailable(description: "no \(script)"))
        }
        do {
            // Installing takes about a minute the first time (torch is large); later calls find it made.
            let outcome = try LocalCluster.run("/bin/bash", [script], seconds: 900)
            let path = outcome.output.trimmingCharacters(in: .whitespacesAndNewlines)
            guard outcome.status == 0, FileManager.default.isExecutableFile(atPath: path) else {
                let reason = outcome.error.split(separator: "\n").last.map(String.init) ?? "exit \(outcome.status)"
                return .failure(Unavailable(description: "scripts/python-env failed: \(reason)"))
            }
            return .success(path)
        } catch {
            return .failure(Unavailable(description: "could not run scripts/python-env: \(error)"))
        }
    }()

    /// The interpreter's path, or why there is none.
    public static func interpreter() -> Result<String, Unavailable> { made }

    /// Runs `source` with that interpreter and `arguments`; the outcome of the script itself.
    public static func run(_ source: String, arguments: [String] = [], seconds: Double = 300) throws -> LocalCluster.Outcome {
        let python = try made.get()
        let folder = try LocalCluster.temporaryDirectory("python")
        let script = try LocalCluster.write(source, to: "script.py", in: folder)
        let outcome = try LocalCluster.run(python, [script] + arguments, seconds: seconds)
        try? FileManager.default.removeItem(atPath: folder)
        return outcome
    }
}
