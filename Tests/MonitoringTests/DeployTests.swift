import Foundation
import TestSupport
import Training
import XCTest
import Yams

/// The files in deploy/: every YAML parses and hangs together, every shell script passes
/// `bash -n`, the systemd units pass `systemd-analyze verify`, every cnn-coord and cnn-worker
/// option they use exists, and the Slurm script and the cnn-train wrapper really train.
final class DeployTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let deploy = repository.appendingPathComponent("deploy").resolvingSymlinksInPath().path

    private func files(withSuffixes suffixes: [String]) throws -> [String] {
        let enumerator = try XCTUnwrap(FileManager.default.enumerator(atPath: Self.deploy))
        return enumerator.compactMap { $0 as? String }.filter { name in suffixes.contains { name.hasSuffix($0) } }.sorted()
            .map { Self.deploy + "/" + $0 }
    }

    private func text(_ relative: String) throws -> String {
        try String(contentsOfFile: Self.deploy + "/" + relative, encoding: .utf8)
    }

    private static func documents(_ path: String) throws -> [[String: Any]] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try Yams.load_all(yaml: text).map { document in
            guard let mapping = document as? [String: Any] else { throw Exposition.Failure("\(path): a YAML document is not a mapping") }
            return mapping
        }
    }

    /// Long options a program's --help lists.
    private static let options: [String: Set<String>] = {
        var options: [String: Set<String>] = [:]
        for program in ["cnn-coord", "cnn-worker"] {
            let help = (try? LocalCluster.run(program, ["--help"], seconds: 30).combined) ?? ""
            let regex = try! NSRegularExpression(pattern: "--[a-z][a-z-]*")
            let range = NSRange(help.startIndex..., in: help)
            options[program] = Set(regex.matches(in: help, range: range).map { String(help[Range($0.range, in: help)!]) })
        }
        return options
    }()

    /// Checks that a command line's options exist; `cnn-train` passes its options to cnn-coord.
    private func checkOptions(_ words: [String], in file: String, line: UInt = #line) {
        guard let first = words.first else { return }
        var program = URL(fileURLWithPath: first).lastPathComponent
        var arguments = Array(words.dropFirst())
        if program == "tini", let index = arguments.firstIndex(of: "--") {
            program = URL(fileURLWithPath: arguments[index + 1]).lastPathComponent
            arguments = Array(arguments[(index + 2)...])
        }
        if program == "cnn-train" { program = "cnn-coord" }
        guard let known = Self.options[program] else { return }
        XCTAssertGreaterThan(known.count, 5, "could not read \(program) --help", line: line)
        for word in arguments where word.hasPrefix("--") {
            let option = String(word.split(separator: "=").first!)
            XCTAssertTrue(known.contains(option), "\(file): \(program) has no option \(option)", line: line)
        }
    }

    func testEveryYAMLFileParses() throws {
        let yamls = try files(withSuffixes: [".yaml", ".yml"])
        XCTAssertGreaterThanOrEqual(yamls.count, 5, "\(yamls)")
        for path in yamls {
            XCTAssertFalse(try Self.documents(path).isEmpty, "\(path) holds no document")
        }
    }

    func testKubernetesObjectsAreCompleteAndReferToEachOther() throws {
        var objects: [String: [String: Any]] = [:]
        for path in try files(withSuffixes: [".yaml"]) where path.contains("/kubernetes/") && !path.hasSuffix("kustomization.yaml") {
            for object in try Self.documents(path) {
                let kind = try XCTUnwrap(object["kind"] as? String, "\(path): an object without kind")
                XCTAssertNotNil(object["apiVersion"] as? String, "\(path): \(kind) without apiVersion")
                let name = try XCTUnwrap((object["metadata"] as? [String: Any])?["name"] as? String, "\(path): \(kind) without a name")
                objects["\(kind)/\(name)"] = object
            }
        }
        XCTAssertEqual(Set(objects.keys), ["ConfigMap/cnn-config", "PersistentVolumeClaim/cnn-runs", "Service/cnn-coord",
                                           "Deployment/cnn-coord", "Job/cnn-workers"])

        // The config in the ConfigMap is a config the trainer accepts.
        let configMap = try XCTUnwrap(objects["ConfigMap/cnn-config"]?["data"] as? [String: Any])
        let config = try TrainingConfig.parse(yaml: try XCTUnwrap(configMap["config.yaml"] as? String), source: "cnn-config")
        XCTAssertEqual(config.data.dataset, "fashion-mnist")

        // The Service selects the coordinator's pods and targets ports they declare.
        let service = try XCTUnwrap(objects["Service/cnn-coord"]?["spec"] as? [String: Any])
        let deployment = try XCTUnwrap(objects["Deployment/cnn-coord"]?["spec"] as? [String: Any])
        let template = try XCTUnwrap(deployment["template"] as? [String: Any])
        let podLabels = try XCTUnwrap((template["metadata"] as? [String: Any])?["labels"] as? [String: String])
        let selector = try XCTUnwrap(service["selector"] as? [String: String])
        XCTAssertTrue(selector.allSatisfy { podLabels[$0.key] == $0.value }, "the Service selects no coordinator pod")
        XCTAssertEqual((deployment["selector"] as? [String: Any])?["matchLabels"] as? [String: String], podLabels)
        let pod = try XCTUnwrap(template["spec"] as? [String: Any])
        let container = try XCTUnwrap((pod["containers"] as? [[String: Any]])?.first)
        let portNames = Set((container["ports"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String })
        for port in service["ports"] as? [[String: Any]] ?? [] {
            XCTAssertTrue(portNames.contains(port["targetPort"] as? String ?? ""), "Service port \(port) targets no container port")
        }
        // Volumes name the ConfigMap and the claim that exist, and the config is mounted where --config looks.
        let volumes = pod["volumes"] as? [[String: Any]] ?? []
        XCTAssertEqual((volumes.first { $0["configMap"] != nil }?["configMap"] as? [String: Any])?["name"] as? String, "cnn-config")
        XCTAssertEqual((volumes.first { $0["persistentVolumeClaim"] != nil }?["persistentVolumeClaim"] as? [String: Any])?["claimName"] as? String, "cnn-runs")
        let coordinatorWords = (container["command"] as? [String] ?? []) + (container["args"] as? [String] ?? [])
        checkOptions(coordinatorWords, in: "coordinator.yaml")
        let configPath = try XCTUnwrap(coordinatorWords.firstIndex(of: "--config").map { coordinatorWords[$0 + 1] })
        let mounts = container["volumeMounts"] as? [[String: Any]] ?? []
        XCTAssertTrue(mounts.contains { configPath.hasPrefix(($0["mountPath"] as? String ?? "?") + "/") && $0["name"] as? String == "config" })
        XCTAssertTrue(configPath.hasSuffix("/config.yaml"), "the ConfigMap key is config.yaml")

        // Workers connect to the Service's ZeroMQ port, and as many run as the coordinator waits for.
        let job = try XCTUnwrap(objects["Job/cnn-workers"]?["spec"] as? [String: Any])
        let workerPod = try XCTUnwrap((job["template"] as? [String: Any])?["spec"] as? [String: Any])
        XCTAssertEqual(workerPod["restartPolicy"] as? String, "OnFailure")
        let worker = try XCTUnwrap((workerPod["containers"] as? [[String: Any]])?.first)
        let workerWords = (worker["command"] as? [String] ?? []) + (worker["args"] as? [String] ?? [])
        checkOptions(workerWords, in: "workers.yaml")
        let zmqPort = try XCTUnwrap((service["ports"] as? [[String: Any]])?.first { $0["name"] as? String == "zmq" }?["port"] as? Int)
        XCTAssertTrue(workerWords.contains("tcp://cnn-coord:\(zmqPort)"), "\(workerWords)")
        let expected = try XCTUnwrap(coordinatorWords.firstIndex(of: "--workers").map { Int(coordinatorWords[$0 + 1]) } ?? nil)
        XCTAssertEqual(job["parallelism"] as? Int, expected)
        XCTAssertEqual(job["completions"] as? Int, expected)
    }

    func testKustomizeRendersTheManifestsWhereKubectlIsInstalled() throws {
        guard let kubectl = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"].first(where: FileManager.default.isExecutableFile) else {
            throw XCTSkip("kubectl is not installed; the manifests are still checked by testKubernetesObjectsAreCompleteAndReferToEachOther")
        }
        let result = try Shell.run(kubectl, ["kustomize", Self.deploy + "/kubernetes"])
        XCTAssertEqual(result.status, 0, result.error)
        let rendered = try Yams.load_all(yaml: result.output).compactMap { ($0 as? [String: Any])?["kind"] as? String }
        XCTAssertEqual(rendered.sorted(), ["ConfigMap", "Deployment", "Job", "PersistentVolumeClaim", "Service"])
    }

    func testComposeRunsACoordinatorAndWorkersThatFindIt() throws {
        let compose = try XCTUnwrap(try Self.documents(Self.deploy + "/compose.yaml").first)
        let services = try XCTUnwrap(compose["services"] as? [String: [String: Any]])
        let coordinator = try XCTUnwrap(services["coordinator"])
        let worker = try XCTUnwrap(services["worker"])
        let coordinatorWords = try XCTUnwrap(coordinator["command"] as? [String])
        let workerWords = try XCTUnwrap(worker["command"] as? [String])
        checkOptions(coordinatorWords, in: "compose.yaml")
        checkOptions(workerWords, in: "compose.yaml")
        XCTAssertTrue(workerWords.contains("tcp://coordinator:5555"))
        XCTAssertTrue(coordinatorWords.contains("tcp://0.0.0.0:5555"))
        let replicas = (worker["deploy"] as? [String: Any])?["replicas"] as? Int
        XCTAssertEqual(coordinatorWords.firstIndex(of: "--workers").map { Int(coordinatorWords[$0 + 1]) } ?? nil, replicas)
        // The config named is one the image carries (configs/ is copied to /etc/cnn).
        let config = try XCTUnwrap(coordinatorWords.firstIndex(of: "--config").map { coordinatorWords[$0 + 1] })
        XCTAssertTrue(config.hasPrefix("/etc/cnn/"))
        let shipped = Self.repository.appendingPathComponent("configs").appendingPathComponent(String(config.dropFirst("/etc/cnn/".count))).path
        XCTAssertNoThrow(try TrainingConfig.load(path: shipped))
        XCTAssertEqual((coordinator["build"] as? [String: Any])?["dockerfile"] as? String, "deploy/docker/Dockerfile")
    }

    func testDockerfileBuildsTheExecutablesAndRunsThemAsAnUnprivilegedUser() throws {
        let lines = try text("docker/Dockerfile").split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        let instructions = lines.filter { $0.first?.isUppercase == true }.map { String($0.split(separator: " ").first!) }
        let known: Set<String> = ["FROM", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "ENV", "ARG", "LABEL"]
        XCTAssertEqual(instructions.first, "FROM")
        XCTAssertTrue(Set(instructions).isSubset(of: known), "\(instructions)")
        let text = lines.joined(separator: "\n")
        XCTAssertTrue(text.contains("swift build -c release"))
        for product in ["cnn-coord", "cnn-worker", "cnn"] { XCTAssertTrue(text.contains("--product \(product)"), product) }
        XCTAssertTrue(text.contains("COPY deploy/bin/cnn-train"))
        XCTAssertTrue(text.contains("dataset-fashion-mnist"), "workers need the data set at data.path")
        // The packages of the libraries the executables link: testDockerfileInstallsEveryLinkedLibrary.
        let user = try XCTUnwrap(lines.last { $0.hasPrefix("USER ") })
        XCTAssertNotEqual(user, "USER root")
        // COPY sources exist in the repository.
        for line in lines where line.hasPrefix("COPY ") && !line.contains("--from") {
            let source = String(line.split(separator: " ")[1])
            XCTAssertTrue(FileManager.default.fileExists(atPath: Self.repository.appendingPathComponent(source).path), "COPY \(source): no such path")
        }
    }

    /// The libraries the package links: the `link "NAME"` lines of the module maps of
    /// Package.swift's `.systemLibrary` targets.
    static func linkedLibraries() throws -> Set<String> {
        let manifest = try String(contentsOf: repository.appendingPathComponent("Package.swift"), encoding: .utf8)
        let target = try NSRegularExpression(pattern: #"\.systemLibrary\(\s*name:\s*"([^"]+)"(?:\s*,\s*path:\s*"([^"]+)")?"#)
        var libraries: Set<String> = []
        for match in target.matches(in: manifest, range: NSRange(manifest.startIndex..., in: manifest)) {
            let name = String(manifest[Range(match.range(at: 1), in: manifest)!])
            let path = Range(match.range(at: 2), in: manifest).map { String(manifest[$0]) } ?? "Sources/\(name)"
            let map = try String(contentsOf: repository.appendingPathComponent(path).appendingPathComponent("module.modulemap"), encoding: .utf8)
            let link = try NSRegularExpression(pattern: #"^\s*link\s+"([^"]+)""#, options: .anchorsMatchLines)
            for line in link.matches(in: map, range: NSRange(map.startIndex..., in: map)) {
                libraries.insert(String(map[Range(line.range(at: 1), in: map)!]))
            }
        }
        return libraries
    }

    /// The packages each stage of the Dockerfile installs with apt-get, in stage order.
    static func dockerfileStagePackages() throws -> [Set<String>] {
        let text = try String(contentsOfFile: deploy + "/docker/Dockerfile", encoding: .utf8)
            .replacingOccurrences(of: "\\\n", with: " ")
        var stages: [Set<String>] = []
        for line in text.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) where !line.hasPrefix("#") {
            if line.hasPrefix("FROM ") { stages.append([]) }
            guard line.hasPrefix("RUN "), !stages.isEmpty else { continue }
            for command in line.components(separatedBy: "&&") where command.contains("apt-get install") {
                let words = command.components(separatedBy: "apt-get install")[1].split(separator: " ").map(String.init)
                stages[stages.count - 1].formUnion(words.filter { !$0.hasPrefix("-") })
            }
        }
        return stages
    }

    /// The Debian package owning a file, trying the path as given and resolved, with and without
    /// the /usr prefix (Debian's merged /usr makes /lib and /usr/lib the same folder, but dpkg
    /// knows each file under one of them only).
    static func owners(of path: String) throws -> [String] {
        let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        var candidates: [String] = []
        for candidate in [path, resolved] {
            candidates.append(candidate)
            candidates.append(candidate.hasPrefix("/usr/") ? String(candidate.dropFirst(4)) : "/usr" + candidate)
        }
        for candidate in candidates {
            let result = try Shell.run("/usr/bin/dpkg", ["-S", candidate])
            if result.status == 0 {
                return result.output.split(separator: "\n").compactMap { $0.split(separator: ":").first.map(String.init) }
            }
        }
        return []
    }

    /// A package and what it depends on (one level, every alternative), as installed here.
    static func packageAndDependencies(_ package: String) throws -> Set<String> {
        let result = try Shell.run("/usr/bin/dpkg-query", ["-W", "-f=${Depends}", package])
        let names = result.output.split(whereSeparator: { $0 == "," || $0 == "|" })
            .compactMap { $0.trimmingCharacters(in: .whitespaces).split(separator: " ").first?.split(separator: ":").first.map(String.init) }
        return Set(names).union([package])
    }

    // Docker cannot run on the machines these tests run on (no engine), so the image is never
    // built here: instead the Dockerfile is read and held against what the built executables link.
    func testDockerfileInstallsEveryLinkedLibrary() throws {
        let libraries = try Self.linkedLibraries()
        XCTAssertTrue(libraries.isSuperset(of: ["zmq", "openblas", "dnnl", "gomp", "z", "png16"]), "\(libraries)")
        let stages = try Self.dockerfileStagePackages()
        XCTAssertEqual(stages.count, 2, "a build stage and a runtime stage")
        let (build, runtime) = (stages[0], stages[1])

        // scripts/setup's -dev packages are what a build needs on a developer's machine; the image's
        // build stage needs them too.
        let setup = try String(contentsOf: Self.repository.appendingPathComponent("scripts/setup"), encoding: .utf8)
        let list = try XCTUnwrap(setup.split(separator: "\n").first { $0.hasPrefix("packages=(") })
        for package in list.dropFirst("packages=(".count).dropLast().split(separator: " ").map(String.init) where package.hasSuffix("-dev") {
            XCTAssertTrue(build.contains(package), "the Dockerfile's build stage does not install \(package) (scripts/setup does)")
        }

        // What the built executables need: besides the Swift runtime (linked statically into the
        // image's executables) and the C library, exactly the module maps' libraries.
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/readelf"), FileManager.default.isExecutableFile(atPath: "/usr/bin/dpkg") else {
            throw XCTSkip("readelf or dpkg is missing: the executables' libraries cannot be mapped to Debian packages here")
        }
        let release = try String(contentsOfFile: "/etc/os-release", encoding: .utf8)
        let dockerfile = try String(contentsOfFile: Self.deploy + "/docker/Dockerfile", encoding: .utf8)
        guard let codename = release.split(separator: "\n").first(where: { $0.hasPrefix("VERSION_CODENAME=") })?.split(separator: "=").last,
              dockerfile.contains("-\(codename) AS build"), dockerfile.contains("FROM debian:\(codename)") else {
            throw XCTSkip("this machine is not the Debian release the image is based on, so its package names may differ")
        }
        let system: Set<String> = ["libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libstdc++.so.6", "libgcc_s.so.1"]
        var needed: Set<String> = []
        for program in ["cnn-coord", "cnn-worker", "cnn"] {
            let dynamic = try Shell.run("/usr/bin/readelf", ["-d", LocalCluster.executable(program)])
            XCTAssertEqual(dynamic.status, 0, dynamic.error)
            for line in dynamic.output.split(separator: "\n") where line.contains("(NEEDED)") {
                guard let name = line.split(separator: "[").last?.split(separator: "]").first.map(String.init) else { continue }
                let swiftRuntime = name.hasPrefix("libswift") || name.hasPrefix("libFoundation") || name.hasPrefix("lib_Foundation")
                    || name.hasPrefix("libdispatch") || name.hasPrefix("libBlocksRuntime")
                if !swiftRuntime && !system.contains(name) { needed.insert(name) }
            }
        }
        XCTAssertEqual(Set(needed.map { String($0.dropFirst(3).split(separator: ".so").first!) }), libraries,
                       "the executables link \(needed.sorted()); the module maps name \(libraries.sorted())")

        // Where the loader finds each library here, and the package that ships it.
        let loader = try Shell.run("/usr/bin/ldd", [LocalCluster.executable("cnn-coord")])
        for soname in needed.sorted() {
            let line = try XCTUnwrap(loader.output.split(separator: "\n").first { $0.contains(soname + " => ") }, "ldd finds no \(soname)")
            let path = try XCTUnwrap(line.components(separatedBy: " => ").last?.split(separator: " ").first.map(String.init))
            let packages = try Self.owners(of: path)
            XCTAssertFalse(packages.isEmpty, "dpkg knows no package holding \(path)")
            XCTAssertTrue(packages.contains { runtime.contains($0) }, "the runtime stage installs none of \(packages) (for \(soname))")
        }
        // The linker's libNAME.so comes with the -dev package; the build stage installs it or a
        // package that depends on it (libopenblas-dev picks one of OpenBLAS's -dev variants).
        var built: Set<String> = []
        for package in build { built.formUnion(try Self.packageAndDependencies(package)) }
        for library in libraries.sorted() {
            let found = try Shell.run("/usr/bin/dpkg", ["-S", "*/lib\(library).so"])
            let packages = found.output.split(separator: "\n").compactMap { $0.split(separator: ":").first.map(String.init) }
            XCTAssertFalse(packages.isEmpty, "dpkg knows no package holding lib\(library).so")
            XCTAssertTrue(packages.contains { built.contains($0) }, "the build stage installs none of \(packages) (for -l\(library))")
        }
    }

    func testShellScriptsPassBashSyntaxCheck() throws {
        let scripts = try files(withSuffixes: [".sh", ".sbatch"]) + [Self.deploy + "/bin/cnn-train"]
        XCTAssertGreaterThanOrEqual(scripts.count, 2)
        for script in scripts {
            let result = try Shell.run("/bin/bash", ["-n", script])
            XCTAssertEqual(result.status, 0, "\(script): \(result.error)")
            XCTAssertTrue(FileManager.default.isExecutableFile(atPath: script), "\(script) is not executable")
        }
    }

    func testSystemdUnitsVerifyAndUseKnownOptions() throws {
        let units = try files(withSuffixes: [".service"])
        XCTAssertEqual(units.map { URL(fileURLWithPath: $0).lastPathComponent }, ["cnn-coord.service", "cnn-worker@.service"])
        for unit in units {
            let text = try String(contentsOfFile: unit, encoding: .utf8)
            XCTAssertTrue(text.contains("ExecStart="), unit)
            // With the unit's own defaults expanded ($CNN_SECURITY holds several options).
            checkOptions(try SystemdUnit(path: unit).execStart(), in: unit)
        }
        guard let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first(where: FileManager.default.isExecutableFile) else {
            throw XCTSkip("systemd-analyze is not installed; the units' options were still checked")
        }
        // Verify copies whose programs exist here: the built executables and the wrapper script.
        let folder = try LocalCluster.temporaryDirectory("units")
        var copies: [String] = []
        for unit in units {
            var text = try String(contentsOfFile: unit, encoding: .utf8)
            text = text.replacingOccurrences(of: "/usr/local/bin/cnn-train", with: Self.deploy + "/bin/cnn-train")
                .replacingOccurrences(of: "/usr/local/bin/", with: LocalCluster.binaries.path + "/")
            let name = URL(fileURLWithPath: unit).lastPathComponent.replacingOccurrences(of: "@.service", with: "@0.service")
            copies.append(try LocalCluster.write(text, to: name, in: folder))
        }
        let result = try Shell.run(analyze, ["verify"] + copies)
        let complaints = (result.output + result.error).split(separator: "\n").filter { line in
            // Messages about the host's own units (this may be a container without systemd running) are not ours.
            copies.contains { line.contains(URL(fileURLWithPath: $0).lastPathComponent) }
        }
        XCTAssertTrue(complaints.isEmpty, complaints.joined(separator: "\n"))
    }

    func testSlurmScriptTrainsWithTheCoordinatorOnTheFirstNodeAndAWorkerOnEach() throws {
        let (folder, config) = try Fixture.folder("slurm", config: Fixture.config(synthetic: true))
        let fakes = folder + "/bin"
        try FileManager.default.createDirectory(atPath: fakes, withIntermediateDirectories: true)
        // scontrol names two nodes, both this machine; srun records its options and runs the
        // command once per node asked for.
        _ = try LocalCluster.write("#!/bin/bash\n[ \"$1 $2\" = \"show hostnames\" ] || exit 1\nprintf 'localhost\\nlocalhost\\n'\n", to: "scontrol", in: fakes)
        _ = try LocalCluster.write("""
            #!/bin/bash
            nodes=1
            while [[ "$1" == --* ]]; do
                echo "srun $1" >> "\(folder)/srun.log"
                case "$1" in --nodes=*) nodes=${1#--nodes=} ;; esac
                shift
            done
            echo "srun runs $(basename "$1") on $nodes node(s)" >> "\(folder)/srun.log"
            echo "srun command: $*" >> "\(folder)/srun.log"
            pids=()
            for _ in $(seq "$nodes"); do "$@" & pids+=($!); done
            trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
            status=0
            for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
            exit $status
            """, to: "srun", in: fakes)
        for tool in ["scontrol", "srun"] { chmod(fakes + "/" + tool, 0o755) }
        // The keys the script requires, made as deploy/README.md says.
        let keys = folder + "/keys"
        for name in ["coordinator", "worker"] {
            let made = try Shell.run(LocalCluster.executable("cnn"), ["keygen", "--out", keys, "--name", name])
            XCTAssertEqual(made.status, 0, made.error)
        }
        try FileManager.default.createDirectory(atPath: keys + "/workers", withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        try FileManager.default.copyItem(atPath: keys + "/worker.key", toPath: keys + "/workers/worker.key")
        var environment = LocalCluster.environment
        environment["KEYS"] = keys
        environment["PATH"] = fakes + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment["SLURM_JOB_NODELIST"] = "node[1-2]"
        environment["SLURM_JOB_ID"] = "4242"
        environment["SLURM_CPUS_PER_TASK"] = "1"
        environment["CONFIG"] = config
        environment["PORT"] = "\(EndpointTests.freePort())"
        environment["RUN_DIR"] = folder + "/run"
        environment["BIN"] = LocalCluster.binaries.path
        environment["TRAIN"] = Self.deploy + "/bin/cnn-train"
        environment["EXTRA"] = "--steps 8 --quiet"
        let result = try Shell.run("/bin/bash", [Self.deploy + "/slurm/cnn-train.sbatch"], environment: environment, directory: folder, seconds: 180)
        XCTAssertEqual(result.status, 0, result.output + result.error)
        XCTAssertTrue(result.output.contains("coordinator on localhost:\(environment["PORT"]!), 2 worker(s)"), result.output)
        let log = try String(contentsOfFile: folder + "/srun.log", encoding: .utf8)
        XCTAssertTrue(log.contains("srun runs cnn-train on 1 node(s)"), log)
        XCTAssertTrue(log.contains("srun --nodelist=localhost"), log)
        XCTAssertTrue(log.contains("srun runs cnn-worker on 2 node(s)"), log)
        // Authenticated by default: the coordinator with its key and the authorised folder, the workers with theirs.
        XCTAssertTrue(log.contains("--curve-secret-key \(keys)/coordinator.key_secret --authorized-keys \(keys)/workers"), log)
        XCTAssertTrue(log.contains("--curve-key \(keys)/worker.key_secret --server-public-key \(keys)/coordinator.key"), log)
        XCTAssertFalse(log.contains("--insecure-bind"), log)
        let checkpoint = try XCTUnwrap(CheckpointStoreList.newest(folder + "/run"))
        XCTAssertTrue(checkpoint.hasSuffix("step-00000008"), checkpoint)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/run/.finished"))
    }

    func testCnnTrainResumesFromACheckpointAndDoesNotRepeatAFinishedRun() throws {
        let (folder, config) = try Fixture.folder("cnn-train", config: Fixture.config(synthetic: true))
        var environment = LocalCluster.environment
        environment["CNN_COORD"] = LocalCluster.executable("cnn-coord")
        let train = Self.deploy + "/bin/cnn-train"
        // The same options every time: they are part of the config a checkpoint must match.
        let arguments = ["--config", config, "--spawn-workers", "1", "--run-dir", folder + "/run", "--checkpoint-every", "2", "--steps", "80"]
        // Interrupted before the end: SIGTERM to the wrapper reaches cnn-coord, which checkpoints.
        let first = try Shell.start(train, arguments, environment: environment)
        XCTAssertTrue(Fixture.waitFor(seconds: 90) { CheckpointStoreList.newest(folder + "/run") != nil }, "no checkpoint was written")
        kill(first.processIdentifier, SIGTERM)
        first.waitUntilExit()
        XCTAssertEqual(first.terminationStatus, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/run/.finished"), "an interrupted run is not finished")
        // Started again, it resumes and finishes.
        let second = try Shell.run(train, arguments, environment: environment, seconds: 120)
        XCTAssertEqual(second.status, 0, second.output + second.error)
        XCTAssertTrue(second.output.contains("resuming"), second.output)
        XCTAssertTrue(second.error.contains("resumed from"), second.error)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/run/.finished"))
        // Once finished, it does not train again.
        let third = try Shell.run(train, arguments, environment: environment, seconds: 30)
        XCTAssertEqual(third.status, 0)
        XCTAssertTrue(third.output.contains("has finished"), third.output)
        XCTAssertFalse(third.error.contains("resumed from"), third.error)
    }
}

/// The newest checkpoint directory of a run, if any.
enum CheckpointStoreList {
    static func newest(_ run: String) -> String? {
        let folder = run + "/checkpoints"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasPrefix("step-") }.sorted().last
            .map { folder + "/" + $0 }
    }
}

/// Runs other programs (bash, kubectl, systemd-analyze, the deploy scripts) with a deadline.
enum Shell {
    struct Result {
        var status: Int32
        var output: String
        var error: String
    }

    static func start(_ program: String, _ arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
                      output: FileHandle? = nil, error: FileHandle? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.standardOutput = output ?? FileHandle.nullDevice
        process.standardError = error ?? FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return process
    }

    static func run(_ program: String, _ arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
                    seconds: Double = 60) throws -> Result {
        let folder = try LocalCluster.temporaryDirectory("shell")
        let outputPath = folder + "/out", errorPath = folder + "/err"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        let process = try start(program, arguments, environment: environment, directory: directory,
                                output: try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath)),
                                error: try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath)))
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      output: (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "",
                      error: (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "")
    }
}
