import ArgumentParser
import CommandLineSupport
import Monitoring
import PeerSecurity
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
    @Option(help: "This worker's CURVE secret key file (NAME.key_secret from `cnn keygen`; its NAME.key goes into the coordinator's --authorized-keys folder).")
    var curveKey: String?
    @Option(help: "The coordinator's CURVE public key file (its NAME.key); needs --curve-key.") var serverPublicKey: String?
    @Flag(help: "Only warnings and errors.") var quiet = false
    @Flag(help: "Also debug lines: messages of another run, which are ignored.") var verbose = false
    @Flag(help: "Start every log line with the time in seconds since 1970, to the millisecond.") var logTimestamps = false

    func validate() throws {
        if threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
        if joinTimeout <= 0 { throw ValidationError("--join-timeout must be positive, got \(joinTimeout)") }
        if computeDelay < 0 { throw ValidationError("--compute-delay must not be negative") }
    }

    func run() throws {
        try ProcessSetup.prepare()
        Interruption.install()
        try BindPolicy.validate(endpoint: connect, option: "--connect", forBinding: false)
        var options = WorkerOptions(connect: connect, threads: threads, name: name)
        options.security = try WorkerSecurity.load(keyFile: curveKey, serverPublicKeyFile: serverPublicKey)
        options.joinTimeout = joinTimeout
        options.parentProcess = parentPid
        options.computeDelay = computeDelay
        let logger = makeLogger(label: "worker \(options.name)", level: verbose ? .debug : quiet ? .warning : .info, timestamps: logTimestamps)
        if case .unreachable(let reason) = EndpointProbe.check(connect) {
            logger.warning("cannot reach the coordinator at \(connect) yet: \(reason) (still trying for \(Int(joinTimeout)) s)")
        }
        let worker = try Worker(options: options, logger: logger)
        do {
            try worker.run()
        } catch let error as WorkerError {
            if case .unreachable(let reason) = EndpointProbe.check(connect) {
                // Still a runtime failure (exit 1), like the WorkerError it explains.
                throw MonitoringError("\(error.description)\n  tried \(connect): \(reason)", kind: .runtime)
            }
            throw error
        }
    }
}

ExitCodes.main(WorkerCommand.self)
