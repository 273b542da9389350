#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call: which, on what path, and errno.
struct POSIXFailure: Error {
    var operation: String
    var path: String
    var code: Int32

    /// The system's explanation of errno.
    var systemMessage: String {
        "\(String(cString: strerror(code))) (errno \(code))"
    }

    var reason: String {
        "\(operation) failed: \(systemMessage)"
    }
}

/// Whole-file reads and writes through POSIX calls, so the checkpoint store controls exactly when
/// data reaches the disk (fsync) and when names change (rename).
enum POSIXFile {
    /// Bytes an unprivileged writer can still write on the file system holding `path`; nil where
    /// the system cannot tell.
    static func availableBytes(_ path: String) -> Int? {
        var status = statvfs()
        guard statvfs(path, &status) == 0 else { return nil }
        let (bytes, overflow) = Int(status.f_bavail).multipliedReportingOverflow(by: Int(status.f_frsize))
        return overflow ? Int.max : bytes
    }

    /// The whole content of the regular file at `path`.
    static func readAll(path: String) throws(POSIXFailure) -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw POSIXFailure(operation: "open", path: path, code: errno) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw POSIXFailure(operation: "fstat", path: path, code: errno) }
        guard (status.st_mode & S_IFMT) == S_IFREG else { throw POSIXFailure(operation: "open", path: path, code: EISDIR) }
        let size = Int(status.st_size)
        var failure: POSIXFailure?
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            while initialized < size {
                let got = read(descriptor, buffer.baseAddress! + initialized, size - initialized)
                if got < 0 {
                    if errno == EINTR { continue }
                    failure = POSIXFailure(operation: "read", path: path, code: errno)
                    break
                }
                if got == 0 { break }
                initialized += got
            }
        }
        if let failure { throw failure }
        // A file that shrank while being read yields fewer bytes; callers validate sizes themselves.
        return bytes
    }

    /// Creates (or truncates) `path` and writes `bytes` to it; with `sync`, fsyncs it before closing.
    static func writeFile(_ bytes: UnsafeRawBufferPointer, to path: String, sync: Bool) throws(POSIXFailure) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw POSIXFailure(operation: "open", path: path, code: errno) }
        var written = 0
        while written < bytes.count {
            let result = write(descriptor, bytes.baseAddress! + written, bytes.count - written)
            if result < 0 {
                if errno == EINTR { continue }
                let code = errno
                close(descriptor)
                throw POSIXFailure(operation: "write", path: path, code: code)
            }
            written += result
        }
        if sync && fsync(descriptor) != 0 {
            let code = errno
            close(descriptor)
            throw POSIXFailure(operation: "fsync", path: path, code: code)
        }
        // close can report a deferred write error (NFS, full disk); a checkpoint must not ignore it.
        guard close(descriptor) == 0 else { throw POSIXFailure(operation: "close", path: path, code: errno) }
    }

    /// Makes the directory's entries (files created or renamed in it) durable.
    static func syncDirectory(_ path: String) throws(POSIXFailure) {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw POSIXFailure(operation: "open directory", path: path, code: errno) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw POSIXFailure(operation: "fsync directory", path: path, code: errno) }
    }

    static func makeDirectory(_ path: String) throws(POSIXFailure) {
        guard mkdir(path, 0o755) == 0 else { throw POSIXFailure(operation: "mkdir", path: path, code: errno) }
    }

    /// Creates `path` and any missing parents.
    static func makeDirectories(_ path: String) throws(POSIXFailure) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if isDirectory(prefix) { continue }
            if mkdir(prefix, 0o755) != 0 {
                let code = errno
                guard code == EEXIST else { throw POSIXFailure(operation: "mkdir", path: prefix, code: code) }
                // Another process may have made it meanwhile; anything else in the way is an error.
                guard isDirectory(prefix) else { throw POSIXFailure(operation: "mkdir", path: prefix, code: ENOTDIR) }
            }
        }
    }

    static func renameItem(_ source: String, to destination: String) throws(POSIXFailure) {
        guard rename(source, destination) == 0 else {
            throw POSIXFailure(operation: "rename to '\(destination)'", path: source, code: errno)
        }
    }

    /// Whether anything exists at `path` (a dangling symlink counts).
    static func exists(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
    }
}
