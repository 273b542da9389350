import UsageErrors

/// A problem with what the user asked of the monitoring tools (a missing run directory, an
/// unreadable image, a port in use), or a failure while serving them, said so the user can act
/// on it. Executables exit with the usage code (2) for the first kind and 1 for the second.
public struct MonitoringError: Error, CustomStringConvertible, Sendable {
    /// Whose fault it is, as far as the exit code goes.
    public enum Kind: Sendable, Equatable {
        /// Bad arguments or input files: exit code 2.
        case usage
        /// Something failed while running (the system refused a socket, an encoder failed): exit code 1.
        case runtime
    }

    /// What was wrong, where, and how to fix it.
    public var description: String
    /// Usage (the default) or runtime.
    public var kind: Kind

    /// An error with its whole message; most monitoring errors are about the user's input.
    public init(_ description: String, kind: Kind = .usage) {
        self.description = description
        self.kind = kind
    }
}

extension MonitoringError: UsageFailure {
    /// True for `.usage`: `ExitCodes` then exits with 2.
    public var isBadUsage: Bool { kind == .usage }
}
