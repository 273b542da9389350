import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SIGINT and SIGTERM become a flag the training loops check between steps, so a stop never
/// leaves a half-applied step: the run finishes the step it can, writes its checkpoint and exits 0.
public enum Interruption {
    private static let flag = Atomic<Int32>(0)

    /// Installs the handlers. The handler only stores the signal number (async-signal-safe).
    public static func install() {
        signal(SIGINT) { Interruption.flag.store($0, ordering: .relaxed) }
        signal(SIGTERM) { Interruption.flag.store($0, ordering: .relaxed) }
    }

    /// The signal that asked us to stop, if any.
    public static var requested: Int32? {
        let value = flag.load(ordering: .relaxed)
        return value == 0 ? nil : value
    }

    public static var signalName: String {
        switch requested {
        case SIGINT: return "SIGINT"
        case SIGTERM: return "SIGTERM"
        case let other?: return "signal \(other)"
        case nil: return "no signal"
        }
    }

    /// For tests: forget a previous request.
    public static func reset() { flag.store(0, ordering: .relaxed) }
}
