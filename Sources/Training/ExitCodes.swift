import ArgumentParser
import Checkpoint
import Data
import Foundation


/// The exit-code contract of DESIGN.md: 0 done, 1 runtime failure, 2 bad usage or config.
/// Errors are printed as one paragraph, never as a stack trace.
public enum ExitCodes {
    public static func main<Command: ParsableCommand>(_ type: Command.Type) -> Never {
        do {
            var command = try type.parseAsRoot()
            try command.run()
            exit(0)
        } catch let error as ConfigError {
            fail("error: \(error)", code: 2)
        } catch let error as DataError {
            fail("error: \(error)", code: 2)
        } catch let error as CheckpointError {
            fail("error: \(error)", code: 2)
        } catch let error as SafeTensorsError {
            fail("error: \(error)", code: 2)
        } catch let error as CoordinatorError {
            fail("error: \(error)", code: 1)
        } catch let error as WorkerError {
            fail("error: \(error)", code: 1)
        } catch {
            // ArgumentParser's own errors (usage, --help, --version) keep their codes and texts.
            let code = type.exitCode(for: error)
            if code == .success || code == .validationFailure {
                type.exit(withError: error)
            }
            fail("error: \(error)", code: 1)
        }
    }

    private static func fail(_ message: String, code: Int32) -> Never {
        FileHandle.standardError.write(Foundation.Data((message + "\n").utf8))
        exit(code)
    }
}
