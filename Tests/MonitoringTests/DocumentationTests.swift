import Foundation
import TestSupport
import XCTest

/// The documentation is tested as it is written: every command shown in README.md and docs/*.md is
/// extracted from the text and, where one machine can run it, run; so an edited example is tested
/// as edited.
///
/// What counts as a command (in fenced code blocks only):
/// - in a transcript block, every line starting with `$ ` (with `\` continuation lines); the lines
///   after it, up to the next `$ `, are the output the document shows;
/// - in a block whose every line starts with a program (`cnn`, `cnn-coord`, `cnn-worker`,
///   `.build/release/...`, `./scripts/...`, after optional `NAME=value` settings), is a `#`
///   comment, or continues a line ending in `\`, every line.
/// A chain `a && b` is taken part by part.
///
/// Skipped by rule, and listed: a part naming a placeholder (a word in capitals such as FILE, DIR,
/// HOST, N); a part run by `sudo`, `systemctl`, `install`, `kubectl`, `docker`, `sbatch`...; a script
/// that runs `apt-get`; `swift build` and `swift test` (this test runs on their product); a worker
/// connecting to another host; a coordinator without `--spawn-workers` (it waits for workers from
/// elsewhere) unless the document shows it failing.
///
/// Run: in one scratch folder per document, in document order (so `cnn eval` finds the run made
/// above it), with `configs` and `scripts` linked in, the debug executables first on PATH and as
/// `.build/release`. Shortened by rule: a coordinator gets `--steps 3` appended (the last
/// `--steps` wins) and `--metrics-port 0`; `cnn bench` measures `--model lenet5 --threads 1
/// --repetitions 1 --seconds 0.05 --no-convolutions --no-memory`; a checkpoint
/// `.../checkpoints/step-N` that the shortened run did not write is its newest checkpoint; a
/// transcript showing `(stopped with kill -TERM)` gets SIGTERM once it has printed something.
///
/// Checked: the exit code (0, or not 0 when the document shows a line starting with `error:`); the
/// first word of the output; every output line the document shows (but `...` lines) has a
/// counterpart with the same text where numbers may differ (whitespace runs count as one space);
/// for `cnn predict`, whose ranked classes depend on the shortened training, the same text
/// before the first number and as many numbers. And every `--option`
/// of every command, run or skipped, is in its program's `--help`.
final class DocumentationTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    static var documents: [String] {
        let docs = (try? FileManager.default.contentsOfDirectory(atPath: repository + "/docs")) ?? []
        return ["README.md"] + docs.filter { $0.hasSuffix(".md") }.sorted().map { "docs/" + $0 }
    }

    // MARK: - Commands in the documents

    /// One command as a document shows it.
    struct DocumentedCommand {
        var document: String
        var line: Int
        var text: String
        /// The output a transcript shows; nil in a block of plain commands.
        var shownOutput: [String]?

        var place: String { "\(document):\(line)" }
    }

    static let programs = ["cnn", "cnn-coord", "cnn-worker"]

    /// The words of a command without its leading `NAME=value` settings.
    static func words(_ text: String) -> [String] {
        let all = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map { String($0) }
        return Array(all.drop(while: { $0.range(of: "^[A-Za-z_][A-Za-z0-9_]*=", options: .regularExpression) != nil }))
    }

    static func startsWithProgram(_ line: String) -> Bool {
        guard let first = words(line).first else { return false }
        return programs.contains(first) || first.hasPrefix(".build/release/") || first.hasPrefix("./scripts/")
    }

    static func withoutComment(_ line: String) -> String {
        guard let range = line.range(of: " #") ?? (line.hasPrefix("#") ? line.range(of: "#") : nil) else { return line }
        return String(line[..<range.lowerBound])
    }

    static func commands(in document: String) throws -> [DocumentedCommand] {
        let lines = try String(contentsOfFile: repository + "/" + document, encoding: .utf8).components(separatedBy: "\n")
        var result: [DocumentedCommand] = []
        var block: [(Int, String)]?
        for (index, line) in lines.enumerated() {
            if line.hasPrefix("```") {
                if let open = block { result += commands(inBlock: open, document: document) ; block = nil } else { block = [] }
            } else if block != nil {
                block!.append((index + 1, line))
            }
        }
        return result
    }

    static func commands(inBlock block: [(Int, String)], document: String) -> [DocumentedCommand] {
        var result: [DocumentedCommand] = []
        if block.contains(where: { $0.1.hasPrefix("$ ") }) {
            var index = 0
            while index < block.count {
                guard block[index].1.hasPrefix("$ ") else { index += 1; continue }
                let start = block[index].0
                var text = String(block[index].1.dropFirst(2))
                while text.hasSuffix("\\"), index + 1 < block.count {
                    index += 1
                    text = String(text.dropLast()) + " " + block[index].1.trimmingCharacters(in: .whitespaces)
                }
                index += 1
                var output: [String] = []
                while index < block.count, !block[index].1.hasPrefix("$ ") {
                    output.append(block[index].1)
                    index += 1
                }
                result.append(DocumentedCommand(document: document, line: start, text: text, shownOutput: output))
            }
            return result
        }
        var continued = false
        for (_, line) in block {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            let fits = trimmed.isEmpty || trimmed.hasPrefix("#") || continued || startsWithProgram(line)
            if !fits { return [] }
            continued = withoutComment(line).hasSuffix("\\")
        }
        var pending: (Int, String)?
        for (number, line) in block {
            let code = withoutComment(line).trimmingCharacters(in: .whitespaces)
            if code.isEmpty && pending == nil { continue }
            var current = pending ?? (number, "")
            current.1 += (current.1.isEmpty ? "" : " ") + code
            if current.1.hasSuffix("\\") {
                current.1.removeLast()
                current.1 = current.1.trimmingCharacters(in: .whitespaces)
                pending = current
            } else {
                pending = nil
                result.append(DocumentedCommand(document: document, line: current.0, text: current.1, shownOutput: nil))
            }
        }
        return result
    }

    // MARK: - Rules

    /// Why a part of a command cannot run on one machine, or nil.
    static func reasonToSkip(_ part: String, shownOutput: [String]?) -> String? {
        let placeholder = try! NSRegularExpression(pattern: "(?<![A-Za-z0-9_$-])[A-Z][A-Z0-9_]*(?![A-Za-z0-9_=-])")
        if let match = placeholder.firstMatch(in: part, range: NSRange(part.startIndex..., in: part)),
           let range = Range(match.range, in: part) {
            return "names a placeholder (\(part[range]))"
        }
        let words = words(part)
        guard let program = words.first else { return "empty" }
        if ["sudo", "systemctl", "journalctl", "install", "useradd", "runuser", "apt-get", "apt", "docker",
            "kubectl", "sbatch", "srun", "scontrol", "systemd-analyze"].contains(program) {
            return "needs root, systemd, Slurm, Kubernetes, Docker or apt-get"
        }
        if program == "swift" { return "builds or tests the package (this test runs on what `swift build` made)" }
        if program.hasPrefix("./scripts/") || program.hasPrefix("scripts/") {
            let script = repository + "/" + program.replacingOccurrences(of: "./", with: "")
            if let text = try? String(contentsOfFile: script, encoding: .utf8), text.contains("apt-get") {
                return "installs packages with apt-get"
            }
        }
        let name = (program as NSString).lastPathComponent
        if name == "cnn-worker", let connect = value(of: "--connect", in: words),
           !["tcp://127.0.0.1:", "tcp://localhost:", "tcp://[::1]:", "ipc://"].contains(where: connect.hasPrefix) {
            return "needs another host (connects to \(connect))"
        }
        if name == "cnn-coord", !words.contains("--spawn-workers"), !words.contains(where: { $0 == "--help" || $0 == "--version" }),
           !(shownOutput ?? []).contains(where: { $0.hasPrefix("error:") }) {
            return "waits for workers started elsewhere (no --spawn-workers)"
        }
        if ![("cnn"), ("cnn-coord"), ("cnn-worker")].contains(name), !program.hasPrefix("./scripts/") {
            return "not one of this package's programs"
        }
        return nil
    }

    static func value(of option: String, in words: [String]) -> String? {
        guard let index = words.lastIndex(of: option), index + 1 < words.count else { return nil }
        return words[index + 1]
    }

    /// The part as it runs here, shortened by the rules above.
    static func shortened(_ part: String, in folder: String) -> String {
        var tokens = part.split(separator: " ").map { String($0) }
        let name = (words(part).first.map { ($0 as NSString).lastPathComponent }) ?? ""
        if name == "cnn-coord", !tokens.contains("--help") {
            if let index = tokens.firstIndex(of: "--metrics-port"), index + 1 < tokens.count { tokens[index + 1] = "0" }
            tokens += ["--steps", "3"]
        }
        if name == "cnn", tokens.contains("bench") {
            var kept: [String] = []
            var index = 0
            while index < tokens.count {
                if ["--model", "--threads"].contains(tokens[index]) { index += 2; continue }
                kept.append(tokens[index])
                index += 1
            }
            tokens = kept + ["--model", "lenet5", "--threads", "1", "--repetitions", "1", "--seconds", "0.05",
                            "--no-convolutions", "--no-memory"]
        }
        tokens = tokens.map { word in
            guard let range = word.range(of: "checkpoints/step-[0-9]{8}$", options: .regularExpression) else { return word }
            let checkpoints = String(word[..<range.lowerBound]) + "checkpoints"
            if FileManager.default.fileExists(atPath: folder + "/" + word) { return word }
            let written = ((try? FileManager.default.contentsOfDirectory(atPath: folder + "/" + checkpoints)) ?? [])
                .filter { $0.hasPrefix("step-") }.sorted()
            return written.last.map { checkpoints + "/" + $0 } ?? word
        }
        return tokens.joined(separator: " ")
    }

    // MARK: - Output shape

    static func collapsed(_ line: String) -> String {
        line.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
    }

    static let number = try! NSRegularExpression(pattern: "[0-9]+(\\.[0-9]+)?")

    /// The text before the first number and the count of numbers, or the whole line without numbers.
    static func shape(_ line: String) -> (prefix: String, numbers: Int) {
        let text = collapsed(line)
        let matches = number.matches(in: text, range: NSRange(text.startIndex..., in: text))
        guard let first = matches.first, let range = Range(first.range, in: text) else { return (text, 0) }
        return (String(text[..<range.lowerBound]), matches.count)
    }

    /// The line with every number as `#` and whitespace runs as one space.
    static func skeleton(_ line: String) -> String {
        let text = collapsed(line)
        return number.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: "#")
    }

    /// The lines the document shows that the output lacks. `loosely`: only the text before the
    /// first number and the count of numbers must agree (for `cnn predict`, whose ranked classes
    /// depend on the training, which this test shortens).
    static func missingLines(shown: [String], actual: String, loosely: Bool) -> [String] {
        let actualLines = actual.components(separatedBy: "\n")
        let actualShapes = actualLines.map(shape)
        let actualSkeletons = Set(actualLines.map(skeleton))
        return shown.filter { line in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("...") || trimmed == "(stopped with kill -TERM)" { return false }
            if actualSkeletons.contains(skeleton(line)) { return false }
            let wanted = shape(line)
            return !(loosely && actualShapes.contains { $0.prefix == wanted.prefix && $0.numbers == wanted.numbers })
        }
    }

    // MARK: - Running

    struct Ran {
        var status: Int32
        var output: String
        var seconds: Double
    }

    static func run(_ command: String, in folder: String, stopWhenItPrints: Bool, seconds: Double = 90) throws -> Ran {
        let outputURL = URL(fileURLWithPath: folder + "/.command-output")
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        let handle = try FileHandle(forWritingTo: outputURL)
        defer { try? handle.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", command]
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        var environment = LocalCluster.environment
        environment["PATH"] = LocalCluster.binaries.path + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        process.environment = environment
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        let start = Date()
        try process.run()
        let deadline = start.addingTimeInterval(seconds)
        var stopped = false
        while process.isRunning && Date() < deadline {
            usleep(20_000)
            if stopWhenItPrints, !stopped, ((try? Data(contentsOf: outputURL))?.count ?? 0) > 0 {
                usleep(200_000)
                // bash execs the single program, so the signal reaches it.
                kill(process.processIdentifier, SIGTERM)
                stopped = true
            }
        }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let output = (try? String(contentsOf: outputURL, encoding: .utf8)) ?? ""
        return Ran(status: process.terminationStatus, output: output, seconds: Date().timeIntervalSince(start))
    }

    func testEveryDocumentedCommandRunsAsShown() throws {
        try Fixture.requireData()
        var ran: [String] = []
        var skipped: [String] = []
        var failures: [String] = []
        let started = Date()
        for document in Self.documents {
            let folder = try LocalCluster.temporaryDirectory("doc-" + document.replacingOccurrences(of: "/", with: "-"))
            defer { try? FileManager.default.removeItem(atPath: folder) }
            for link in ["configs", "scripts"] {
                try FileManager.default.createSymbolicLink(atPath: folder + "/" + link, withDestinationPath: Self.repository + "/" + link)
            }
            try FileManager.default.createDirectory(atPath: folder + "/.build", withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: folder + "/.build/release", withDestinationPath: LocalCluster.binaries.path)
            for command in try Self.commands(in: document) {
                for part in command.text.components(separatedBy: " && ") {
                    let part = part.trimmingCharacters(in: .whitespaces)
                    if let reason = Self.reasonToSkip(part, shownOutput: command.shownOutput) {
                        skipped.append("\(command.place): \(part)\n      skipped: \(reason)")
                        continue
                    }
                    let shown = command.shownOutput ?? []
                    let line = Self.shortened(part, in: folder)
                    let result = try Self.run(line, in: folder, stopWhenItPrints: shown.contains("(stopped with kill -TERM)"))
                    ran.append(String(format: "%@: %@  (%.1f s, exit %d)", command.place, line, result.seconds, result.status))
                    let expectFailure = shown.contains { $0.hasPrefix("error:") }
                    if expectFailure ? result.status == 0 : result.status != 0 {
                        failures.append("\(command.place): `\(line)` exited \(result.status); the document shows \(expectFailure ? "a failure" : "success")\n\(result.output)")
                        continue
                    }
                    if let firstShown = shown.first(where: { !$0.trimmingCharacters(in: .whitespaces).isEmpty }) {
                        let wanted = firstShown.split(separator: " ").first.map(String.init) ?? ""
                        let got = result.output.split(whereSeparator: { $0 == " " || $0 == "\n" }).first.map(String.init) ?? ""
                        if Self.shape(wanted).prefix != Self.shape(got).prefix {
                            failures.append("\(command.place): `\(line)` prints '\(got)' first; the document shows '\(wanted)'\n\(result.output)")
                        }
                    }
                    let missing = Self.missingLines(shown: shown, actual: result.output, loosely: Self.words(part).prefix(2) == ["cnn", "predict"])
                    if !missing.isEmpty {
                        failures.append("\(command.place): `\(line)` printed no line shaped like:\n  "
                            + missing.joined(separator: "\n  ") + "\nit printed:\n\(result.output)")
                    }
                }
            }
        }
        print("documented commands run (\(ran.count)):\n  " + ran.joined(separator: "\n  "))
        print("documented commands skipped (\(skipped.count)):\n  " + skipped.joined(separator: "\n  "))
        print(String(format: "documentation commands took %.1f s", Date().timeIntervalSince(started)))
        XCTAssertGreaterThanOrEqual(ran.count, 10, "the extraction found too few commands to run")
        XCTAssertTrue(failures.isEmpty, failures.joined(separator: "\n\n"))
    }

    /// Every `--option` a documented command gives its program is in that program's `--help`
    /// (skipped commands too: their options are checked even where they cannot run).
    func testEveryDocumentedOptionIsInTheProgramsHelp() throws {
        var helps: [String: String] = [:]
        var unknown: [String] = []
        var checked = 0
        for document in Self.documents {
            for command in try Self.commands(in: document) {
                for part in command.text.components(separatedBy: " && ") {
                    let words = Self.words(part)
                    guard let program = words.first.map({ ($0 as NSString).lastPathComponent }), Self.programs.contains(program) else { continue }
                    var arguments = ["--help"]
                    if program == "cnn", words.count > 1, !words[1].hasPrefix("-") { arguments = [words[1], "--help"] }
                    let key = ([program] + arguments).joined(separator: " ")
                    if helps[key] == nil { helps[key] = try LocalCluster.run(program, arguments, seconds: 30).combined }
                    for word in words where word.hasPrefix("--") {
                        let option = word.trimmingCharacters(in: CharacterSet(charactersIn: "[]|,")).components(separatedBy: "=")[0]
                        checked += 1
                        if !(helps[key] ?? "").contains(option) { unknown.append("\(command.place): \(key) has no \(option)") }
                    }
                }
            }
        }
        XCTAssertGreaterThan(checked, 20)
        XCTAssertTrue(unknown.isEmpty, unknown.joined(separator: "\n"))
    }

    // MARK: - Paths and modules

    /// Every repository path the documents name in backquotes or link to exists: a backquoted
    /// word with a `/` whose first part is an entry of the repository (or, in deploy/README.md,
    /// of deploy/; in docs/architecture.md, of Sources/), and every relative link target.
    func testEveryRepositoryPathTheDocumentsNameExists() throws {
        let fileManager = FileManager.default
        let ignored = ((try? String(contentsOfFile: Self.repository + "/.gitignore", encoding: .utf8)) ?? "")
            .components(separatedBy: "\n").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "/ ")) }
        func entries(_ folder: String) -> Set<String> {
            Set(((try? fileManager.contentsOfDirectory(atPath: folder)) ?? []).filter { !ignored.contains($0) && $0 != ".git" })
        }
        let backquoted = try NSRegularExpression(pattern: "`([^`\\s]+)`")
        let link = try NSRegularExpression(pattern: "\\]\\(([^)\\s#]+)\\)")
        var missing: [String] = []
        var checked = 0
        for document in Self.documents + ["deploy/README.md"] {
            let folder = (Self.repository + "/" + document as NSString).deletingLastPathComponent
            var bases = [Self.repository]
            if document == "deploy/README.md" { bases.append(folder) }
            if document == "docs/architecture.md" { bases.append(Self.repository + "/Sources") }
            let text = try String(contentsOfFile: Self.repository + "/" + document, encoding: .utf8)
            var inFence = false
            for (number, line) in text.components(separatedBy: "\n").enumerated() {
                if line.hasPrefix("```") { inFence.toggle(); continue }
                if inFence { continue }
                let range = NSRange(line.startIndex..., in: line)
                for match in backquoted.matches(in: line, range: range) {
                    let path = String(line[Range(match.range(at: 1), in: line)!]).trimmingCharacters(in: CharacterSet(charactersIn: ",.:;"))
                    guard path.contains("/"), !path.hasPrefix("/"), !path.contains("*"), !path.contains("://") else { continue }
                    let first = path.components(separatedBy: "/")[0]
                    let candidates = bases.filter { entries($0).contains(first) }
                    guard !candidates.isEmpty else { continue }
                    checked += 1
                    if !candidates.contains(where: { fileManager.fileExists(atPath: $0 + "/" + path) }) {
                        missing.append("\(document):\(number + 1): `\(path)`")
                    }
                }
                for match in link.matches(in: line, range: range) {
                    let target = String(line[Range(match.range(at: 1), in: line)!])
                    guard !target.contains("://"), !target.hasPrefix("mailto:") else { continue }
                    checked += 1
                    if !fileManager.fileExists(atPath: folder + "/" + target) {
                        missing.append("\(document):\(number + 1): link to \(target)")
                    }
                }
            }
        }
        XCTAssertGreaterThan(checked, 30)
        XCTAssertTrue(missing.isEmpty, "named in the documents but not in the repository:\n" + missing.joined(separator: "\n"))
    }

    /// The README's layout table names every module under Sources/.
    func testTheLayoutTableNamesEveryModule() throws {
        let readme = try String(contentsOfFile: Self.repository + "/README.md", encoding: .utf8)
        guard let start = readme.range(of: "## Layout"), let end = readme.range(of: "\n## ", range: start.upperBound..<readme.endIndex) else {
            return XCTFail("README.md has no Layout section")
        }
        let firstColumns = readme[start.upperBound..<end.lowerBound].components(separatedBy: "\n")
            .filter { $0.hasPrefix("| `") }
            .map { $0.dropFirst(2).components(separatedBy: "|")[0] }
            .joined(separator: " ")
        let modules = try FileManager.default.contentsOfDirectory(atPath: Self.repository + "/Sources").filter { !$0.hasPrefix(".") }
        let absent = modules.filter { !firstColumns.contains("`\($0)`") }.sorted()
        XCTAssertTrue(absent.isEmpty, "README.md's layout table lacks: \(absent.joined(separator: ", "))")
    }
}
