import Logging
import Training

/// Log lines on standard error, written through a `TerminalScreen` so that they appear above a
/// live progress display instead of tearing it. Same format as `ConsoleLogHandler`:
/// `[coord] warning: ...`, with the time when `timestamps`.
public struct TerminalLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let screen: TerminalScreen
    private let timestamps: Bool

    public init(label: String, level: Logger.Level, screen: TerminalScreen, timestamps: Bool = false) {
        self.label = label
        self.logLevel = level
        self.screen = screen
        self.timestamps = timestamps
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        screen.print(ConsoleLogHandler.line(label: label, level: event.level, message: "\(event.message)",
                                            at: timestamps ? ConsoleLogHandler.now() : nil), to: .error)
    }
}

/// The log level the command-line flags ask for: warnings only with `--quiet`, everything down to
/// debug messages with `--verbose`, else informational messages.
public func logLevel(quiet: Bool, verbose: Bool) -> Logger.Level {
    if verbose { return .debug }
    return quiet ? .warning : .info
}

/// A logger writing through `screen` (for a process that shows a live display).
public func makeLogger(label: String, level: Logger.Level, screen: TerminalScreen, timestamps: Bool = false) -> Logger {
    Logger(label: label) { _ in TerminalLogHandler(label: label, level: level, screen: screen, timestamps: timestamps) }
}
