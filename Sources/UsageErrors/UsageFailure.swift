/// An error that means the program was called or configured wrongly: `ExitCodes.main` exits
/// with code 2 and prints its description. Other modules' error types opt in with an
/// extension (`extension MonitoringError: UsageFailure {}`); a type that also carries runtime
/// failures says which values are usage ones through `isBadUsage`.
public protocol UsageFailure: Error, CustomStringConvertible {
    /// Whether this value means bad usage (exit 2) rather than a runtime failure (exit 1).
    var isBadUsage: Bool { get }
}

extension UsageFailure {
    /// Every value of a usage error type is bad usage unless the type says otherwise.
    public var isBadUsage: Bool { true }
}

/// A wrong command line or setting that shows only once the program runs (a port already in
/// use, a checkpoint written for another config): exit code 2, like every other bad usage.
public struct UsageError: UsageFailure, Equatable, Sendable {
    /// What was wrong and how to fix it, in one paragraph.
    public var description: String

    /// An error with its whole message.
    public init(_ description: String) {
        self.description = description
    }
}
