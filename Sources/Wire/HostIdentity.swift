import Foundation

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
        guard let boot = try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines), !boot.isEmpty,
            // "net:[INODE]": the namespace the link names (the link's own inode would not do).
            let namespace = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        else { return nil }
        return "\(boot)/\(namespace)"
        #else
        return nil
        #endif
    }()
}
