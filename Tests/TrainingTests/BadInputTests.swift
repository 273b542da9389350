import Foundation
import PeerSecurity
import TestSupport
import Training
import Wire
import XCTest

/// Every bad config, argument or file a user can give the programs: exit code 2, one paragraph
/// that names the problem and the fix, never a crash or a stack trace.
final class BadInputTests: XCTestCase {
    /// One bad input: which program, its arguments, and words the error must contain (the
    /// problem and the fix).
    private struct Case {
        var name: String
        var program: String
        var arguments: [String]
        var mentions: [String]
    }

    private var folder = ""

    override func setUpWithError() throws {
        folder = try LocalCluster.temporaryDirectory("bad")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// A small valid Fashion-MNIST config; `edit` makes it bad. The join timeout is short, so a
    /// case that wrongly gets as far as waiting for workers fails in seconds.
    private func config(_ name: String, _ edit: (String) -> String = { $0 }) throws -> String {
        let text = """
            model:
              input: [1, 28, 28]
              layers:
                - conv: {filters: 4, kernel: 3, padding: 1}
                - relu
                - maxpool: 2
                - flatten
                - dense: 10
            data:
              dataset: fashion-mnist
              path: /usr/share/datasets/fashion-mnist
            train:
              epochs: 1
              batch: 32
              micro_batch: 8
              optimizer: {name: sgd, lr: 0.05}
              eval_batch: 1000
            distributed:
              join_timeout: 2
            """
        let edited = edit(text)
        return try LocalCluster.write(edited, to: name + ".yaml", in: folder)
    }

    private func replacing(_ old: String, _ new: String) -> (String) -> String {
        { text in
            precondition(text.contains(old), "the base config lacks '\(old)'")
            return text.replacingOccurrences(of: old, with: new)
        }
    }

    /// The error paragraph: from the last line starting "error:" (or ArgumentParser's "Error:").
    private func errorParagraph(_ standardError: String) -> String? {
        let lines = standardError.components(separatedBy: "\n")
        guard let start = lines.lastIndex(where: { $0.lowercased().hasPrefix("error:") }) else { return nil }
        return lines[start...].joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func testEveryBadConfigArgumentAndFileExitsWithCodeTwoAndOneParagraphNamingTheProblemAndTheFix() throws {
        let started = Date()
        let good = try config("good")

        // A run with valid checkpoints (a sharded run also writes one at its start), and a copy
        // of it whose model files are all damaged.
        let trained = folder + "/trained"
        let training = try LocalCluster.run("cnn-coord", ["--config", good, "--spawn-workers", "1", "--steps", "1", "--run-dir", trained, "--quiet"],
                                            seconds: 60)
        XCTAssertEqual(training.status, 0, "the setup run failed: \(training.combined)")
        let checkpoints = try FileManager.default.contentsOfDirectory(atPath: trained + "/checkpoints").filter { $0.hasPrefix("step-") }.sorted()
        let checkpoint = try XCTUnwrap(checkpoints.last)
        let damaged = folder + "/damaged"
        try FileManager.default.copyItem(atPath: trained, toPath: damaged)
        for name in checkpoints {
            try Data("garbage".utf8).write(to: URL(fileURLWithPath: damaged + "/checkpoints/" + name + "/model.safetensors"))
        }
        let weights = trained + "/checkpoints/" + checkpoint + "/model.safetensors"
        let junk = try LocalCluster.write("not a tensor file", to: "junk.safetensors", in: folder)

        // A port somebody else holds.
        let context = try ZMQContext()
        let holder = try ZMQSocket(context: context, kind: .router)
        try holder.setLinger(milliseconds: 0)
        let taken = try holder.bind("tcp://127.0.0.1:0")
        defer {
            holder.close()
            context.close()
        }

        // Keys: a secret key file anyone may read, and an authorised folder.
        let keys = folder + "/keys"
        let pair = try KeyFiles.generate(directory: keys, name: "coordinator")
        let workerPair = try KeyFiles.generate(directory: keys, name: "worker")
        let loose = folder + "/loose.key_secret"
        try FileManager.default.copyItem(atPath: pair.secretKeyPath, toPath: loose)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: loose)
        let authorised = folder + "/authorised"
        try FileManager.default.createDirectory(atPath: authorised, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: workerPair.publicKeyPath, toPath: authorised + "/worker.key")

        // A free port, so no case depends on 5555 being idle; cases that test --bind give theirs last (the last wins).
        let run = ["--run-dir", folder + "/run", "--workers", "1", "--bind", "tcp://127.0.0.1:0"]
        let cases: [Case] = [
            Case(name: "unknown key", program: "cnn-coord",
                 arguments: ["--config", try config("unknown", replacing("{filters: 4,", "{filter: 4,"))] + run,
                 mentions: ["unknown key 'filter'", "did you mean 'filters'"]),
            Case(name: "negative size", program: "cnn-coord",
                 arguments: ["--config", try config("negative", replacing("batch: 32", "batch: -32"))] + run,
                 mentions: ["train.batch", "at least 1", "-32"]),
            Case(name: "impossible shape (AlexNet at 224)", program: "cnn-coord",
                 arguments: ["--config", try config("alexnet", replacing("input: [1, 28, 28]\n  layers:\n    - conv: {filters: 4, kernel: 3, padding: 1}",
                                                                         "input: [3, 224, 224]\n  layers:\n    - conv: {filters: 96, kernel: 11, stride: 4}"))] + run,
                 mentions: ["model.layers[0]", "224", "227"]),
            Case(name: "batch not divisible by micro-batch", program: "cnn-coord",
                 arguments: ["--config", try config("divisible", replacing("micro_batch: 8", "micro_batch: 5"))] + run,
                 mentions: ["train.batch (32) must be a multiple of train.micro_batch (5)", "micro_batch: 4"]),
            Case(name: "micro-batch larger than the batch", program: "cnn-coord",
                 arguments: ["--config", try config("larger", replacing("micro_batch: 8", "micro_batch: 64"))] + run,
                 mentions: ["train.micro_batch (64)", "train.batch (32)"]),
            Case(name: "missing data set", program: "cnn-coord",
                 arguments: ["--config", try config("nodata", replacing("/usr/share/datasets/fashion-mnist", folder + "/nowhere"))] + run,
                 mentions: [folder + "/nowhere", "apt-get install dataset-fashion-mnist"]),
            Case(name: "model input not matching the data set", program: "cnn-coord",
                 arguments: ["--config", try config("input", replacing("input: [1, 28, 28]", "input: [3, 32, 32]"))] + run,
                 mentions: ["[3, 32, 32]", "set model.input to [1, 28, 28]"]),
            Case(name: "dense with 0 units", program: "cnn-coord",
                 arguments: ["--config", try config("dense", replacing("dense: 10", "dense: 0"))] + run,
                 mentions: ["dense", "at least 1, found 0"]),
            Case(name: "unknown optimizer", program: "cnn-coord",
                 arguments: ["--config", try config("optimizer", replacing("name: sgd", "name: sgdd"))] + run,
                 mentions: ["train.optimizer.name", "did you mean 'sgd'"]),
            Case(name: "negative learning rate", program: "cnn-coord",
                 arguments: ["--config", try config("lr", replacing("lr: 0.05", "lr: -0.1"))] + run,
                 mentions: ["train.optimizer.lr", "greater than 0", "-0.1"]),
            Case(name: "wrong value type", program: "cnn-coord",
                 arguments: ["--config", try config("type", replacing("epochs: 1", "epochs: many"))] + run,
                 mentions: ["train.epochs must be a whole number", "'many'"]),
            Case(name: "invalid YAML", program: "cnn-coord",
                 arguments: ["--config", try config("yaml", replacing("input: [1, 28, 28]", "input: [1, 28, 28"))] + run,
                 mentions: ["not valid YAML", "yaml.yaml:"]),
            Case(name: "unreadable config path", program: "cnn-coord",
                 arguments: ["--config", folder + "/missing.yaml"] + run,
                 mentions: [folder + "/missing.yaml", "cannot read the config file", "check the path"]),
            Case(name: "missing --config", program: "cnn-coord", arguments: run,
                 mentions: ["--config", "Usage: cnn-coord", "--help"]),
            Case(name: "unknown option", program: "cnn-coord", arguments: ["--config", good, "--thread", "2"] + run,
                 mentions: ["'--thread'", "--threads"]),
            Case(name: "--threads 0", program: "cnn-coord", arguments: ["--config", good, "--threads", "0"] + run,
                 mentions: ["--threads must be at least 1, got 0"]),
            Case(name: "--resume with --init", program: "cnn-coord", arguments: ["--config", good, "--resume", "--init", weights] + run,
                 mentions: ["--resume and --init exclude each other"]),
            Case(name: "--resume without checkpoints", program: "cnn-coord", arguments: ["--config", good, "--resume"] + run,
                 mentions: ["no checkpoint in", "without --resume"]),
            Case(name: "--resume with a corrupt checkpoint", program: "cnn-coord",
                 arguments: ["--config", good, "--resume", "--run-dir", damaged, "--workers", "1", "--bind", "tcp://127.0.0.1:0"],
                 mentions: ["no valid checkpoint", "model.safetensors", "without --resume"]),
            Case(name: "--resume with a different config", program: "cnn-coord",
                 arguments: ["--config", try config("other", replacing("lr: 0.05", "lr: 0.01")), "--resume", "--run-dir", trained, "--workers", "1", "--bind", "tcp://127.0.0.1:0"],
                 mentions: ["written for another config", "config.yaml"]),
            Case(name: "--init with a missing file", program: "cnn-coord", arguments: ["--config", good, "--init", folder + "/none.safetensors"] + run,
                 mentions: [folder + "/none.safetensors", "check the path"]),
            Case(name: "--init with a file that is not safetensors", program: "cnn-coord", arguments: ["--config", good, "--init", junk] + run,
                 mentions: [junk, "not a safetensors file"]),
            Case(name: "--init with weights of another model", program: "cnn-coord",
                 arguments: ["--config", try config("wider", replacing("dense: 10", "dense: 12")), "--init", weights] + run,
                 mentions: [weights, "4.weight", "values"]),
            Case(name: "port in use", program: "cnn-coord", arguments: ["--config", good] + run + ["--bind", taken],
                 mentions: [taken, "already in use", "--bind"]),
            Case(name: "bad --bind address", program: "cnn-coord", arguments: ["--config", good] + run + ["--bind", "notanendpoint"],
                 mentions: ["--bind 'notanendpoint'", "tcp://127.0.0.1:5555"]),
            Case(name: "listening beyond loopback without keys", program: "cnn-coord", arguments: ["--config", good] + run + ["--bind", "tcp://0.0.0.0:0"],
                 mentions: ["without CURVE keys", "--insecure-bind", "cnn keygen"]),
            Case(name: "secret key readable by others", program: "cnn-coord",
                 arguments: ["--config", good, "--curve-secret-key", loose, "--authorized-keys", authorised] + run,
                 mentions: [loose, "chmod 600 \(loose)"]),
            Case(name: "secret key without authorised keys", program: "cnn-coord",
                 arguments: ["--config", good, "--curve-secret-key", pair.secretKeyPath] + run,
                 mentions: ["--curve-secret-key", "--authorized-keys DIR"]),
            Case(name: "worker: bad --connect address", program: "cnn-worker", arguments: ["--connect", "tcp://node03"],
                 mentions: ["--connect 'tcp://node03'", "HOST:PORT"]),
            Case(name: "worker: --threads 0", program: "cnn-worker", arguments: ["--connect", "tcp://127.0.0.1:5555", "--threads", "0"],
                 mentions: ["--threads must be at least 1"]),
            Case(name: "worker: public key given as its own secret", program: "cnn-worker",
                 arguments: ["--connect", "tcp://127.0.0.1:5555", "--curve-key", pair.publicKeyPath, "--server-public-key", pair.publicKeyPath],
                 mentions: [pair.publicKeyPath, ".key_secret"]),
            Case(name: "cnn: unknown subcommand", program: "cnn", arguments: ["frobnicate"],
                 mentions: ["frobnicate", "Usage: cnn", "--help"]),
            Case(name: "cnn summary: missing config", program: "cnn", arguments: ["summary", folder + "/missing.yaml"],
                 mentions: [folder + "/missing.yaml", "cannot read the config file"]),
            Case(name: "cnn keygen: unsafe key name", program: "cnn", arguments: ["keygen", "--out", keys, "--name", "../escape"],
                 mentions: ["key name", "--name"]),
        ]
        XCTAssertGreaterThanOrEqual(cases.count, 20)

        // Two at a time: most cases are a process start and a message, and the machine has two cores.
        let outcomes = Outcomes(count: cases.count)
        DispatchQueue.concurrentPerform(iterations: 2) { lane in
            for index in stride(from: lane, to: cases.count, by: 2) {
                outcomes.set(index, Result { try LocalCluster.run(cases[index].program, cases[index].arguments, seconds: 30) })
            }
        }
        for (item, result) in zip(cases, outcomes.all) {
            let outcome = try result.get()
            let context = "\(item.name): \(item.program) \(item.arguments.joined(separator: " "))\n\(outcome.combined)"
            XCTAssertFalse(outcome.timedOut, "timed out: \(context)")
            XCTAssertEqual(outcome.status, 2, "exit code: \(context)")
            for marker in ["Fatal error", "Stack dump", "Current stack trace", "backtrace", "Illegal instruction"] {
                XCTAssertFalse(outcome.combined.contains(marker), "'\(marker)': \(context)")
            }
            guard let paragraph = errorParagraph(outcome.error) else {
                XCTFail("no 'error:' paragraph on standard error: \(context)")
                continue
            }
            XCTAssertFalse(paragraph.contains("\n\n"), "more than one paragraph: \(context)")
            XCTAssertLessThanOrEqual(paragraph.components(separatedBy: "\n").count, 8, "not a short paragraph: \(context)")
            for mention in item.mentions {
                XCTAssertTrue(paragraph.contains(mention), "'\(mention)' missing from the error paragraph: \(context)")
            }
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 30, "bad input must be refused fast")
    }
}

/// Results filled in from two threads.
private final class Outcomes: @unchecked Sendable {
    // Sendable: every access holds `lock`.
    private let lock = NSLock()
    private var results: [Result<LocalCluster.Outcome, Error>?]

    init(count: Int) { results = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ result: Result<LocalCluster.Outcome, Error>) {
        lock.withLock { results[index] = result }
    }

    var all: [Result<LocalCluster.Outcome, Error>] {
        lock.withLock { results.map { $0 ?? .failure(CocoaError(.featureUnsupported)) } }
    }
}
