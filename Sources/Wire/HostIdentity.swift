#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which machine and network namespace a process runs in, so that workers can tell which of
/// their peers they could reach over a local socket. Two processes with the same identity share
/// a kernel (the boot id) and a network namespace (its inode): Linux's abstract Unix sockets,
/// which the peer mesh uses between such workers, are visible exactly there. Hosts simulated by
/// network namespaces on one machine therefore differ, and keep talking over their shaped links.
public enum HostIdentity {
    /// Longest identity a message may carry.
    public static let maximumBytes = 128

    /// This process's identity, or nil where it cannot be known (not Linux, no /proc).
    public static let current: String? = {
        #if os(Linux)
        guard let boot = firstLine(of: "/proc/sys/kernel/random/boot_id"), !boot.isEmpty else { return nil }
        var status = stat()
        guard stat("/proc/self/ns/net", &status) == 0 else { return nil }
        return "\(boot)/net:\(status.st_ino)"
        #else
        return nil
        #endif
    }()

    private static func firstLine(of path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 128)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self).trimmingWhitespace()
    }
}

private extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        return String(scalars)
    }
}
