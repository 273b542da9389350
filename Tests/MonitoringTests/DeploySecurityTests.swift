import Foundation
import TestSupport
import XCTest
import Yams

/// Every deployment in deploy/ is authenticated by default: each shipped coordinator command line
/// (systemd unit with its own defaults, compose file, Kubernetes Deployment) passes CURVE keys and
/// not `--insecure-bind`, each worker passes its keys, the key paths are the ones deploy/README.md
/// tells operators to create, and missing keys are refused with the fix. The Slurm script's
/// command lines are checked by running it (DeployTests and the refusal test here).
final class DeploySecurityTests: XCTestCase {
    static let deploy = DeployTests.deploy

    private static func text(_ relative: String) throws -> String {
        try String(contentsOfFile: deploy + "/" + relative, encoding: .utf8)
    }

    private static func yaml(_ relative: String) throws -> [[String: Any]] {
        try Yams.load_all(yaml: try text(relative)).compactMap { $0 as? [String: Any] }
    }

    /// Command lines as shipped, by file: (file, role, words).
    private static func commandLines() throws -> [(file: String, role: String, words: [String])] {
        var lines: [(String, String, [String])] = []
        lines.append(("systemd/cnn-coord.service", "coordinator", try SystemdUnit(path: deploy + "/systemd/cnn-coord.service").execStart()))
        lines.append(("systemd/cnn-worker@.service", "worker", try SystemdUnit(path: deploy + "/systemd/cnn-worker@.service").execStart()))
        let compose = try XCTUnwrap(try yaml("compose.yaml").first?["services"] as? [String: [String: Any]])
        lines.append(("compose.yaml", "coordinator", try XCTUnwrap(compose["coordinator"]?["command"] as? [String])))
        lines.append(("compose.yaml", "worker", try XCTUnwrap(compose["worker"]?["command"] as? [String])))
        for (file, kind, role) in [("kubernetes/coordinator.yaml", "Deployment", "coordinator"), ("kubernetes/workers.yaml", "Job", "worker")] {
            let container = try XCTUnwrap(try mainContainer(file, kind: kind))
            lines.append((file, role, (container["command"] as? [String] ?? []) + (container["args"] as? [String] ?? [])))
        }
        return lines
    }

    private static func podSpec(_ file: String, kind: String) throws -> [String: Any]? {
        let object = try yaml(file).first { $0["kind"] as? String == kind }
        return ((object?["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any]
    }

    private static func mainContainer(_ file: String, kind: String) throws -> [String: Any]? {
        (try podSpec(file, kind: kind)?["containers"] as? [[String: Any]])?.first
    }

    private static func value(after option: String, in words: [String]) -> String? {
        words.firstIndex(of: option).flatMap { $0 + 1 < words.count ? words[$0 + 1] : nil }
    }

    func testEveryShippedCoordinatorRequiresCurveKeysAndWorkersBringThem() throws {
        let lines = try Self.commandLines()
        XCTAssertEqual(lines.count, 6)
        for (file, role, words) in lines {
            XCTAssertFalse(words.contains("--insecure-bind"), "\(file): --insecure-bind is a default; it must be an explicit opt-out")
            let needed = role == "coordinator" ? ["--curve-secret-key", "--authorized-keys"] : ["--curve-key", "--server-public-key"]
            for option in needed {
                XCTAssertNotNil(Self.value(after: option, in: words), "\(file): the \(role) runs without \(option): \(words)")
            }
        }
        // --insecure-bind may be named only in comments (as the opt-out), never in what runs.
        for file in ["systemd/cnn-coord.service", "systemd/cnn-worker@.service", "compose.yaml", "kubernetes/coordinator.yaml",
                     "kubernetes/workers.yaml"] {
            for line in try Self.text(file).split(separator: "\n") where line.contains("--insecure-bind") {
                XCTAssertTrue(line.trimmingCharacters(in: .whitespaces).hasPrefix("#"), "\(file): \(line)")
            }
        }
    }

    func testSystemdOptOutIsByNameAndReplacesTheKeys() throws {
        // The documented opt-out, CNN_SECURITY=--insecure-bind in coord.env, gives exactly that option.
        let unit = try SystemdUnit(path: Self.deploy + "/systemd/cnn-coord.service")
        let optedOut = unit.execStart(overriding: ["CNN_SECURITY": "--insecure-bind"])
        XCTAssertTrue(optedOut.contains("--insecure-bind"))
        XCTAssertFalse(optedOut.contains("--curve-secret-key"))
        let text = try Self.text("systemd/cnn-coord.service")
        XCTAssertTrue(text.contains("CNN_SECURITY=--insecure-bind"), "the unit documents its opt-out")
        XCTAssertTrue(text.contains("RestartPreventExitStatus=2"), "a refusal for missing keys must not restart forever")
        let readme = try Self.text("README.md")
        XCTAssertTrue(readme.contains("CNN_SECURITY=--insecure-bind"), "deploy/README.md names the opt-out")
    }

    func testKeyPathsTheDeploymentsUseAreTheOnesTheDocsTellOperatorsToCreate() throws {
        let readme = try Self.text("README.md")
        for (file, _, words) in try Self.commandLines() {
            for option in ["--curve-secret-key", "--authorized-keys", "--curve-key", "--server-public-key"] {
                guard let path = Self.value(after: option, in: words) else { continue }
                XCTAssertTrue(readme.contains(path), "\(file) uses \(option) \(path), which deploy/README.md does not tell operators to create")
            }
        }
        // Kubernetes: the Secrets and their keys are the ones the README's kubectl commands create,
        // and each init container writes the files its main container is given.
        for (file, kind) in [("kubernetes/coordinator.yaml", "Deployment"), ("kubernetes/workers.yaml", "Job")] {
            let pod = try XCTUnwrap(try Self.podSpec(file, kind: kind))
            for volume in pod["volumes"] as? [[String: Any]] ?? [] {
                guard let secret = volume["secret"] as? [String: Any], let name = secret["secretName"] as? String else { continue }
                XCTAssertTrue(readme.contains("kubectl create secret generic \(name)"), "\(file): README does not create Secret \(name)")
                for item in secret["items"] as? [[String: Any]] ?? [] {
                    let key = try XCTUnwrap(item["key"] as? String)
                    XCTAssertTrue(readme.contains("--from-file=\(key)="), "\(file): README does not put \(key) into Secret \(name)")
                }
            }
            let initScript = ((pod["initContainers"] as? [[String: Any]])?.first?["args"] as? [String] ?? []).joined(separator: "\n")
            let container = try XCTUnwrap(try Self.mainContainer(file, kind: kind))
            let words = container["args"] as? [String] ?? []
            for option in ["--curve-secret-key", "--curve-key", "--server-public-key"] {
                guard let path = Self.value(after: option, in: words) else { continue }
                XCTAssertTrue(initScript.contains(path), "\(file): the init container does not write \(path)")
            }
        }
        // Slurm: the key folder and its files are the ones the README describes.
        let sbatch = try Self.text("slurm/cnn-train.sbatch")
        XCTAssertTrue(sbatch.contains("KEYS=${KEYS:-$HOME/.config/cnn/keys}"))
        XCTAssertTrue(readme.contains("~/.config/cnn/keys"))
    }

    func testMetricsAreNotPublishedBeyondThisHostByDefault() throws {
        // The metrics endpoint is plain HTTP without authentication.
        let coordinator = try SystemdUnit(path: Self.deploy + "/systemd/cnn-coord.service").execStart()
        XCTAssertEqual(Self.value(after: "--metrics-address", in: coordinator), "127.0.0.1")
        let compose = try XCTUnwrap(try Self.yaml("compose.yaml").first?["services"] as? [String: [String: Any]])
        for (name, service) in compose {
            for port in service["ports"] as? [Any] ?? [] {
                XCTAssertTrue("\(port)".hasPrefix("127.0.0.1:"), "compose.yaml: \(name) publishes \(port) on every interface")
            }
        }
    }

    func testCnnTrainRefusesMissingKeysWithTheFix() throws {
        let folder = try LocalCluster.temporaryDirectory("keys")
        var environment = LocalCluster.environment
        environment["CNN_COORD"] = LocalCluster.executable("cnn-coord")
        let train = Self.deploy + "/bin/cnn-train"
        let missingSecret = try Shell.run(train, ["--config", "x.yaml", "--curve-secret-key", folder + "/coordinator.key_secret",
                                                  "--authorized-keys", folder + "/workers"], environment: environment)
        XCTAssertEqual(missingSecret.status, 2)
        XCTAssertTrue(missingSecret.error.contains("cnn keygen --out \(folder) --name coordinator"), missingSecret.error)
        XCTAssertTrue(missingSecret.error.contains("--insecure-bind"), missingSecret.error)
        let keygen = try Shell.run(LocalCluster.executable("cnn"), ["keygen", "--out", folder, "--name", "coordinator"])
        XCTAssertEqual(keygen.status, 0, keygen.error)
        let missingFolder = try Shell.run(train, ["--config", "x.yaml", "--curve-secret-key", folder + "/coordinator.key_secret",
                                                  "--authorized-keys", folder + "/workers"], environment: environment)
        XCTAssertEqual(missingFolder.status, 2)
        XCTAssertTrue(missingFolder.error.contains("\(folder)/workers does not exist"), missingFolder.error)
    }

    func testSlurmScriptRefusesToStartWithoutKeys() throws {
        let folder = try LocalCluster.temporaryDirectory("slurm-keys")
        _ = try LocalCluster.write("#!/bin/bash\nprintf 'localhost\\n'\n", to: "scontrol", in: folder)
        _ = try LocalCluster.write("#!/bin/bash\necho \"$*\" >> \"\(folder)/srun.log\"\n", to: "srun", in: folder)
        for tool in ["scontrol", "srun"] { chmod(folder + "/" + tool, 0o755) }
        var environment = LocalCluster.environment
        environment["PATH"] = folder + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment["SLURM_JOB_NODELIST"] = "node1"
        environment["KEYS"] = folder + "/keys"
        environment["BIN"] = LocalCluster.binaries.path
        let result = try Shell.run("/bin/bash", [Self.deploy + "/slurm/cnn-train.sbatch"], environment: environment, directory: folder)
        XCTAssertEqual(result.status, 2, result.output + result.error)
        XCTAssertTrue(result.error.contains("cnn keygen --out \(folder)/keys --name coordinator"), result.error)
        XCTAssertTrue(result.error.contains("INSECURE_BIND=1"), result.error)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/srun.log"), "nothing may start without keys")
    }
}

/// A systemd unit's `Environment=` defaults and its `ExecStart=` expanded with them, as systemd
/// does: `${NAME}` stays one word, `$NAME` alone is split at whitespace.
struct SystemdUnit {
    var environment: [String: String] = [:]
    var execStartLine: String = ""

    init(path: String) throws {
        for line in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init) {
            if line.hasPrefix("Environment=") {
                var assignment = String(line.dropFirst("Environment=".count))
                if assignment.hasPrefix("\""), assignment.hasSuffix("\"") { assignment = String(assignment.dropFirst().dropLast()) }
                let parts = assignment.split(separator: "=", maxSplits: 1).map(String.init)
                environment[parts[0]] = parts.count > 1 ? parts[1] : ""
            } else if line.hasPrefix("ExecStart=") {
                execStartLine = String(line.dropFirst("ExecStart=".count))
            }
        }
    }

    /// The words ExecStart runs with the unit's defaults, `overriding` as an environment file would.
    func execStart(overriding: [String: String] = [:]) -> [String] {
        let values = environment.merging(overriding) { $1 }
        var words: [String] = []
        for word in execStartLine.split(separator: " ").map(String.init) {
            if word.hasPrefix("$"), !word.hasPrefix("${") {
                words += (values[String(word.dropFirst())] ?? "").split(separator: " ").map(String.init)
                continue
            }
            var expanded = word
            for (name, value) in values { expanded = expanded.replacingOccurrences(of: "${\(name)}", with: value) }
            words.append(expanded)
        }
        return words
    }
}
