import ArgumentParser
import CNN
import Checkpoint
import ConfigReading
import Data
import Foundation
import Training
import UsageErrors

/// The exit-code contract of DESIGN.md: 0 done, 1 runtime failure, 2 bad usage or config.
/// Errors are printed as one paragraph on standard error, never as a stack trace.
public enum ExitCodes {
    /// Exit code of a finished run.
    public static let success: Int32 = 0
    /// Exit code of a failure while running (a lost connection, a diverged run).
    public static let runtimeFailure: Int32 = 1
    /// Exit code of a bad command line, config, data set, checkpoint or key file.
    public static let badUsage: Int32 = 2

    /// Parses the command line, runs the command and exits with the contract's code.
    public static func main<Command: ParsableCommand>(_ type: Command.Type) -> Never {
        do {
            var command = try type.parseAsRoot()
            try command.run()
            exit(success)
        } catch {
            let (code, message) = outcome(of: error, command: type)
            if code == success {
                // --help and --version: ArgumentParser prints them to standard output.
                type.exit(withError: error)
            }
            if !message.isEmpty { FileHandle.standardError.write(Foundation.Data((message + "\n").utf8)) }
            exit(code)
        }
    }

    /// The exit code and the message for an error thrown by `command` (internal so the mapping
    /// can be read in one place).
    static func outcome<Command: ParsableCommand>(of error: Error, command: Command.Type) -> (Int32, String) {
        if let message = badUsageMessage(error) { return (badUsage, "error: \(message)") }
        switch error {
        case let error as ExitCode:
            return (error.rawValue, "")
        case let error as CoordinatorError:
            return (runtimeFailure, "error: \(error)")
        case let error as WorkerError:
            return (runtimeFailure, "error: \(error)")
        default:
            break
        }
        let parserCode = command.exitCode(for: error)
        if parserCode == .success { return (success, "") }
        if parserCode == .validationFailure {
            return (badUsage, parserMessage(for: error, command: command))
        }
        return (runtimeFailure, "error: \(error)")
    }

    /// The message of every error type that means bad usage or configuration, nil for others.
    static func badUsageMessage(_ error: Error) -> String? {
        switch error {
        case let error as ConfigError: return error.description
        case let error as DataError: return error.description
        case let error as CheckpointError: return error.description
        case let error as SafeTensorsError: return error.description
        // A CNN_GEMM naming no library is a bad setting like a bad option (the README's contract).
        case let error as BLASError: return error.description
        case let error as any UsageFailure where error.isBadUsage: return error.description
        default: return nil
        }
    }

    /// ArgumentParser's message for a usage error, as one paragraph: the problem, the usage line,
    /// and where the options are described. (Its own text for a missing argument with no
    /// arguments at all is the whole help screen, which buries the problem.)
    static func parserMessage<Command: ParsableCommand>(for error: Error, command: Command.Type) -> String {
        let full = command.fullMessage(for: error, columns: 1000)
        let compact = full.trimmingCharacters(in: .whitespacesAndNewlines)
        if !compact.contains("\n\n") { return compact }
        let name = command.configuration.commandName ?? CommandLine.arguments.first.map { ($0 as NSString).lastPathComponent } ?? "the program"
        let usage = command.usageString(for: command).trimmingCharacters(in: .whitespacesAndNewlines)
        return "Error: \(command.message(for: error))\nUsage: \(usage)\n  See '\(name) --help' for more information."
    }
}
