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
    @Flag(help: "Only warnings.") var quiet = false

    func validate() throws {
        if threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    func run() throws {
        ProcessSetup.prepare()
        Interruption.install()
        let options = WorkerOptions(connect: connect, threads: threads, name: name)
        let logger = makeLogger(label: "worker \(options.name)", level: quiet ? .warning : .info)
        let worker = try Worker(options: options, logger: logger)
        try worker.run()
    }
}

ExitCodes.main(WorkerCommand.self)
