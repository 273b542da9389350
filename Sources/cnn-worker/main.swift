import ArgumentParser
import Training

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cnn-worker",
        abstract: "Computes micro-batch gradients for a cnn-coord coordinator.",
        version: Version.current)

    @Option(help: "The coordinator's address, e.g. tcp://10.0.0.1:5555 (cnn-coord prints it).") var connect: String
    @Option(help: "Micro-batches computed at once, one per thread.") var threads: Int = 1
    @Option(help: "A name for logs (default: host-pid).") var name: String?
    @Option(help: "Seconds to keep trying to join (or rejoin) a coordinator before giving up.") var joinTimeout: Double = 300
    @Option(help: ArgumentHelp("Exit when this process is gone (set by cnn-coord for the workers it spawns).", visibility: .hidden))
    var parentPid: Int32?
    @Option(help: ArgumentHelp("Spend this many extra seconds on every assignment: a slow worker for fault drills.", visibility: .hidden))
    var computeDelay: Double = 0
    @Flag(help: "Only warnings.") var quiet = false
    @Flag(help: "Also debug messages.") var verbose = false

    func validate() throws {
        if threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
        if joinTimeout <= 0 { throw ValidationError("--join-timeout must be positive, got \(joinTimeout)") }
        if computeDelay < 0 { throw ValidationError("--compute-delay must not be negative") }
    }

    func run() throws {
        ProcessSetup.prepare()
        Interruption.install()
        var options = WorkerOptions(connect: connect, threads: threads, name: name)
        options.joinTimeout = joinTimeout
        options.parentProcess = parentPid
        options.computeDelay = computeDelay
        let logger = makeLogger(label: "worker \(options.name)", level: verbose ? .debug : quiet ? .warning : .info)
        let worker = try Worker(options: options, logger: logger)
        try worker.run()
    }
}

ExitCodes.main(WorkerCommand.self)
