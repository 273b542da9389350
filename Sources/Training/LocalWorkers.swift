import CNN
import Foundation
import Logging

/// Worker processes this coordinator started (`--spawn-workers N`): real `cnn-worker` programs
/// on loopback, stopped when the run ends.
final class LocalWorkers {
    private let logger: Logger
    private var processes: [Process] = []
    private var reported: Set<Int32> = []

    init(logger: Logger) {
        self.logger = logger
    }

    func spawn(count: Int, endpoint: String, threads: Int, executable: String?, extraArguments: [String] = []) throws {
        let program = executable ?? Self.siblingExecutable("cnn-worker")
        guard FileManager.default.isExecutableFile(atPath: program) else {
            throw CoordinatorError(description: "cannot start workers: \(program) is not an executable file; "
                + "build it with `swift build -c release` or pass its path with --worker-executable")
        }
        var environment = ProcessInfo.processInfo.environment
        // Every worker must run the same BLAS kernel as each other for bit-identical results.
        environment["OPENBLAS_CORETYPE"] = environment["OPENBLAS_CORETYPE"] ?? BLAS.coreName
        for index in 0..<count {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = ["--connect", endpoint, "--threads", "\(threads)", "--name", "local-\(index)",
                                 "--parent-pid", "\(getpid())"] + extraArguments
            process.environment = environment
            do {
                try process.run()
            } catch {
                throw CoordinatorError(description: "cannot start \(program): \(error.localizedDescription)")
            }
            processes.append(process)
        }
        logger.info("started \(count) local worker\(count == 1 ? "" : "s") (\(threads) thread\(threads == 1 ? "" : "s") each)")
    }

    /// Reports spawned workers that exited on their own (once each).
    func checkAlive() throws {
        for process in processes where !process.isRunning && !reported.contains(process.processIdentifier) {
            reported.insert(process.processIdentifier)
            logger.warning("local worker pid \(process.processIdentifier) exited with status \(process.terminationStatus)")
        }
    }

    /// Waits briefly for workers told to leave, then terminates any that remain.
    func stop() {
        let deadline = Date().addingTimeInterval(5)
        while processes.contains(where: \.isRunning) && Date() < deadline {
            usleep(20_000)
        }
        for process in processes where process.isRunning {
            process.terminate()
        }
        for process in processes { process.waitUntilExit() }
        processes.removeAll()
    }

    /// The path of a program installed next to the running one.
    static func siblingExecutable(_ name: String) -> String {
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: own).deletingLastPathComponent().appendingPathComponent(name).path
    }
}
