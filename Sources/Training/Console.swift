import Logging

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
@preconcurrency import Darwin
#endif

/// Log lines on standard error: `[coord] warning: step 42: ...`, or with `timestamps`
/// `[coord 1796683893.083] warning: ...` (seconds since 1970, to the millisecond, the form
/// `scripts/chaos` writes its timeline in). Progress goes to standard output, so `2>/dev/null`
/// leaves a clean progress log and the reverse leaves only diagnostics.
public struct ConsoleLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let timestamps: Bool

    public init(label: String, level: Logger.Level, timestamps: Bool = false) {
        self.label = label
        self.logLevel = level
        self.timestamps = timestamps
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        fputs(Self.line(label: label, level: event.level, message: "\(event.message)", at: timestamps ? Self.now() : nil) + "\n", stderr)
    }

    /// One log line, without its newline; `seconds` (since 1970) when lines carry the time.
    public static func line(label: String, level: Logger.Level, message: String, at seconds: Double? = nil) -> String {
        let levelText = level == .info ? "" : "\(level): "
        let time = seconds.map { " " + formatTime($0) } ?? ""
        return "[\(label)\(time)] \(levelText)\(message)"
    }

    /// `seconds` as whole seconds, a point and three digits of milliseconds.
    public static func formatTime(_ seconds: Double) -> String {
        let milliseconds = Int64((seconds * 1000).rounded(.down))
        let fraction = String(milliseconds % 1000)
        return "\(milliseconds / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    /// Wall-clock seconds since 1970.
    public static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}

/// A logger that writes through `ConsoleLogHandler`.
public func makeLogger(label: String, level: Logger.Level = .info, timestamps: Bool = false) -> Logger {
    Logger(label: label) { _ in ConsoleLogHandler(label: label, level: level, timestamps: timestamps) }
}

/// Writes a progress line to standard output and flushes it (output may be a pipe).
public func printProgress(_ line: String) {
    fputs(line + "\n", stdout)
    fflush(stdout)
}
