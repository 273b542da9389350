import ArgumentParser
import CommandLineSupport
import Monitoring
import PeerSecurity
import Training

struct CoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cnn-coord",
        abstract: "Trains a CNN data-parallel: cuts each batch into micro-batches for cnn-worker processes and combines their gradients.",
        version: Version.current)

    @Option(help: "The YAML config of the run (see configs/).") var config: String
    @Option(help: "Start this many local cnn-worker processes.") var spawnWorkers: Int = 0
    @Option(help: "Wait for this many workers before the first step (default: the spawned ones, else 1).") var workers: Int?
    @Option(help: "ZeroMQ address to bind (port 0 picks a free one). Default tcp://127.0.0.1:5555, or a free port with --spawn-workers.") var bind: String?
    @Option(help: "Directory for config.yaml, metrics.jsonl and checkpoints.") var runDir: String = "runs/latest"
    @Flag(help: "Continue from the newest valid checkpoint in --run-dir.") var resume = false
    @Option(help: "Start from the weights in a safetensors file or a checkpoint directory.") var `init`: String?
    @Option(help: "Override train.epochs.") var epochs: Int?
    @Option(help: "Stop after this many steps in all (overrides train.steps).") var steps: Int?
    @Option(help: "Override train.seed.") var seed: Int?
    @Option(help: "Write a checkpoint every this many steps (overrides checkpoint.every).") var checkpointEvery: Int?
    @Option(help: "Where gradients are reduced: central (at this coordinator) or sharded (among the workers; see docs/scaling.md). Overrides distributed.reduction.") var reduction: String?
    @Option(help: "How gradients travel: fp32, or bf16 (every node of the summation tree rounded to bf16, half the bytes; docs/scaling.md). Overrides distributed.wire_precision.") var wirePrecision: String?
    @Option(help: "Threads of each spawned worker.") var threads: Int = 1
    @Option(help: "The cnn-worker program to spawn (default: next to this one).") var workerExecutable: String?
    @Option(help: "This coordinator's CURVE secret key file (NAME.key_secret from `cnn keygen`); with --authorized-keys, all traffic is encrypted and only listed workers may join.")
    var curveSecretKey: String?
    @Option(help: "Folder of the public key files (NAME.key) of the workers allowed to join; needs --curve-secret-key.")
    var authorizedKeys: String?
    @Flag(help: "Without CURVE keys, listen on an address other hosts can reach anyway: unencrypted and unauthenticated, for trusted networks only.")
    var insecureBind = false
    @Flag(help: "Only warnings and errors, then the closing lines: the trace summary (with --trace) and the final 'done: ...' line.") var quiet = false
    @Flag(help: "Also debug lines: results that arrive after their step is complete (a straggler's, or a backup copy's), which are ignored.") var verbose = false
    @Flag(help: "Plain progress lines even on a terminal (no live display).") var plain = false
    @Flag(help: "Start every log line with the time in seconds since 1970, to the millisecond (spawned workers' lines too).")
    var logTimestamps = false
    @Option(help: "Serve Prometheus metrics over HTTP on this port (0 picks a free one; off by default).") var metricsPort: Int?
    @Option(help: "The address the metrics endpoint listens on (0.0.0.0 for every interface).") var metricsAddress: String = "127.0.0.1"
    @Option(help: "Write a Chrome trace of every step to this file (open in https://ui.perfetto.dev or chrome://tracing).") var trace: String?

    func validate() throws {
        if spawnWorkers < 0 { throw ValidationError("--spawn-workers must be 0 or more, got \(spawnWorkers)") }
        if let workers, workers < 1 { throw ValidationError("--workers must be at least 1, got \(workers)") }
        if threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
        if let epochs, !(1...1_000_000).contains(epochs) { throw ValidationError("--epochs must be 1 to 1000000, got \(epochs)") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1, got \(steps)") }
        if let seed, seed < 0 { throw ValidationError("--seed must not be negative, got \(seed)") }
        if let checkpointEvery, checkpointEvery < 0 { throw ValidationError("--checkpoint-every must be 0 or more") }
        if let reduction, ReductionKind(rawValue: reduction) == nil {
            throw ValidationError("--reduction must be one of \(ReductionKind.allCases.map(\.rawValue).joined(separator: ", ")), got '\(reduction)'")
        }
        if let wirePrecision, WirePrecision(rawValue: wirePrecision) == nil {
            throw ValidationError("--wire-precision must be one of \(WirePrecision.allCases.map(\.rawValue).joined(separator: ", ")), got '\(wirePrecision)'")
        }
        if let metricsPort, !(0...65535).contains(metricsPort) { throw ValidationError("--metrics-port must be 0-65535, got \(metricsPort)") }
        if resume && `init` != nil { throw ValidationError("--resume and --init exclude each other: resume continues a run, init starts a new one") }
    }

    func run() throws {
        try ProcessSetup.prepare()
        Interruption.install()
        let screen = !quiet && !plain && TerminalScreen.isTerminal(1) ? TerminalScreen.standard() : nil
        let level = logLevel(quiet: quiet, verbose: verbose)
        let logger = screen.map { makeLogger(label: "coord", level: level, screen: $0, timestamps: logTimestamps) }
            ?? makeLogger(label: "coord", level: level, timestamps: logTimestamps)
        logger.info("\(ProcessSetup.kernelDescription)")
        var config = try TrainingConfig.load(path: self.config)
        if let epochs { config.train.epochs = epochs }
        if let steps { config.train.maxSteps = steps }
        if let seed { config.train.seed = UInt64(seed) }
        if let checkpointEvery { config.checkpoint.every = checkpointEvery }
        if let reduction { config.distributed.reduction = ReductionKind(rawValue: reduction)! }
        if let wirePrecision { config.distributed.wirePrecision = WirePrecision(rawValue: wirePrecision)! }
        var options = CoordinatorOptions()
        options.security = try CoordinatorSecurity.load(secretKeyFile: curveSecretKey, authorizedKeysDirectory: authorizedKeys)
        options.insecureBind = insecureBind
        options.bind = bind ?? (spawnWorkers > 0 ? "tcp://127.0.0.1:*" : "tcp://127.0.0.1:5555")
        options.spawnWorkers = spawnWorkers
        options.expectedWorkers = workers
        options.workerThreads = threads
        options.runDirectory = runDir
        options.resume = resume
        options.initialWeights = `init`
        options.workerExecutable = workerExecutable
        options.progress = screen != nil ? .none : (quiet ? .finalLine : .everyLine)
        // Spawned workers write to this terminal too: keep them to warnings and errors when the
        // user asked for quiet, or when the live display owns the screen.
        options.quietLocalWorkers = quiet || screen != nil
        options.timestampLocalWorkers = logTimestamps
        var server: MetricsHTTPServer?
        defer { server?.stop() }
        if let screen { options.observers.append(TerminalProgressObserver(screen: screen)) }
        if let metricsPort {
            let prometheus = PrometheusObserver()
            let registry = prometheus.registry
            let started = try MetricsHTTPServer(host: metricsAddress, port: metricsPort) { registry.emitToBuffer() }
            server = started
            logger.info("Prometheus metrics at \(started.url)")
            options.observers.append(prometheus)
        }
        if let trace {
            options.observers.append(try ChromeTraceObserver(path: trace, report: { text in
                if let screen { screen.print(text) } else { printProgress(text) }
            }))
        }
        let coordinator = try Coordinator(config: config, options: options, logger: logger)
        _ = try coordinator.run()
    }
}

ExitCodes.main(CoordinatorCommand.self)
