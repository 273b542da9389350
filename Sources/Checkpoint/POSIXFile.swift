import Hashing

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

    /// Creates (or truncates) `path` and lets `produce` write its content through a
    /// `StagedFileWriter`; with `sync`, fsyncs it before closing. Returns the file's size and xxh64.
    static func writeFile(to path: String, sync: Bool,
                          _ produce: (StagedFileWriter) throws(POSIXFailure) -> Void) throws(POSIXFailure) -> FileDigest {
        let writer = try StagedFileWriter(path: path)
        try produce(writer)
        return try writer.finish(sync: sync)
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

/// A new file written through one reused buffer, whose bytes are hashed (xxh64) there while they
/// are in cache: a checkpoint of any size costs this buffer of memory, where building the whole
/// file first cost a copy of it (a gigabyte for VGG-16's weights and momentum, every fresh page of
/// it faulted in and zeroed by the kernel).
final class StagedFileWriter {
    /// Bytes staged before each write: a whole number of the hash's 32-byte stripes.
    static let capacity = 4 << 20
    let path: String
    private var descriptor: Int32
    private let buffer: UnsafeMutableRawPointer
    private var staged = 0
    private var written = 0
    private var hash = XXHash64.Stream()

    /// Creates (or truncates) `path`.
    init(path: String) throws(POSIXFailure) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw POSIXFailure(operation: "open", path: path, code: errno) }
        self.path = path
        self.descriptor = descriptor
        buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.capacity, alignment: 64)
    }

    /// A writer given up on (an error) closes its file unsynced; its caller removes it.
    deinit {
        if descriptor >= 0 { close(descriptor) }
        buffer.deallocate()
    }

    /// Appends `bytes` to the file.
    func append(_ bytes: UnsafeRawBufferPointer) throws(POSIXFailure) {
        var offset = 0
        while offset < bytes.count {
            let piece = min(Self.capacity - staged, bytes.count - offset)
            (buffer + staged).copyMemory(from: bytes.baseAddress! + offset, byteCount: piece)
            staged += piece
            offset += piece
            if staged == Self.capacity { try flush() }
        }
    }

    /// Writes what is staged; only the last flush may leave a piece that is not whole stripes.
    private func flush() throws(POSIXFailure) {
        hash.update(buffer, count: staged)
        var done = 0
        while done < staged {
            let result = write(descriptor, buffer + done, staged - done)
            if result < 0 {
                if errno == EINTR { continue }
                throw POSIXFailure(operation: "write", path: path, code: errno)
            }
            done += result
        }
        written += staged
        staged = 0
    }

    /// Writes the rest, fsyncs the file when `sync`, closes it and returns its size and xxh64.
    func finish(sync: Bool) throws(POSIXFailure) -> FileDigest {
        try flush()
        if sync && fsync(descriptor) != 0 {
            throw POSIXFailure(operation: "fsync", path: path, code: errno)
        }
        let closing = descriptor
        descriptor = -1
        // close can report a deferred write error (NFS, full disk); a checkpoint must not ignore it.
        guard close(closing) == 0 else { throw POSIXFailure(operation: "close", path: path, code: errno) }
        return FileDigest(bytes: written, xxh64: FileDigest.hexadecimal(hash.digest()))
    }
}
