import Logging

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
@preconcurrency import Darwin
#endif

/// Log lines on standard error: `[coord] warning: step 42: ...`. Progress goes to standard output,
/// so `2>/dev/null` leaves a clean progress log and the reverse leaves only diagnostics.
public struct ConsoleLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let levelText = event.level == .info ? "" : "\(event.level): "
        let line = "[\(label)] \(levelText)\(event.message)\n"
        fputs(line, stderr)
    }
}

/// A logger that writes through `ConsoleLogHandler`.
public func makeLogger(label: String, level: Logger.Level = .info) -> Logger {
    Logger(label: label) { _ in ConsoleLogHandler(label: label, level: level) }
}

/// Writes a progress line to standard output and flushes it (output may be a pipe).
public func printProgress(_ line: String) {
    fputs(line + "\n", stdout)
    fflush(stdout)
}
