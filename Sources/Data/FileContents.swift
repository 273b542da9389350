import CZlib

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whole-file reading with transparent gzip: every loader reads through here, so plain and
/// compressed copies of any data file behave the same.
enum FileContents {
    /// Calls `body` with the file's bytes, decompressed if the file starts with the gzip magic
    /// 0x1f 0x8b. The bytes live only for the duration of the call (they can be tens of MiB, and
    /// the loaders decode them straight into floats rather than keep them).
    static func withBytes<Result>(
        path: String, notFoundFix: String,
        _ body: (UnsafeRawBufferPointer) throws -> Result
    ) throws -> Result {
        let raw = try RawBuffer(readingFile: path, notFoundFix: notFoundFix)
        defer { raw.free() }
        let bytes = UnsafeRawBufferPointer(start: raw.base, count: raw.count)
        guard bytes.count >= 2, bytes[0] == 0x1f, bytes[1] == 0x8b else {
            return try body(bytes)
        }
        let inflated = try gunzip(bytes, path: path)
        defer { inflated.free() }
        return try body(UnsafeRawBufferPointer(start: inflated.base, count: inflated.count))
    }

    /// Whether a file exists at `path` (of any kind; reading reports what else is wrong).
    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// Decompresses one or more concatenated gzip members (as `gzip -d` does).
    static func gunzip(_ input: UnsafeRawBufferPointer, path: String) throws -> RawBuffer {
        // The trailer's ISIZE is the uncompressed length mod 2^32: a good first guess for one
        // member. Deflate cannot expand more than about 1032:1, which caps a corrupt ISIZE.
        let tail = input.count >= 4 ? input.count - 4 : 0
        var guess = 0
        for k in 0..<min(4, input.count) { guess |= Int(input[tail + k]) << (8 * k) }
        guess = max(1 << 16, min(guess, input.count &* 1032 &+ 1024))
        var output = RawBuffer(capacity: guess)
        var succeeded = false
        defer { if !succeeded { output.free() } }

        var stream = z_stream()
        // 15 + 32: the largest window, with automatic gzip / zlib header detection.
        var status = inflateInit2_(&stream, 15 + 32, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else {
            throw DataError.corruptCompression(path: path, reason: "zlib could not start (code \(status))")
        }
        defer { inflateEnd(&stream) }

        var consumed = 0
        let base = input.baseAddress!.assumingMemoryBound(to: UInt8.self)
        while true {
            if output.count == output.capacity { output.grow() }
            let inputChunk = min(input.count - consumed, Int(UInt32.max))
            let outputChunk = min(output.capacity - output.count, Int(UInt32.max))
            stream.next_in = UnsafeMutablePointer(mutating: base + consumed)
            stream.avail_in = UInt32(inputChunk)
            stream.next_out = output.base + output.count
            stream.avail_out = UInt32(outputChunk)
            status = inflate(&stream, Z_NO_FLUSH)
            consumed += inputChunk - Int(stream.avail_in)
            output.count += outputChunk - Int(stream.avail_out)
            switch status {
            case Z_OK:
                continue
            case Z_STREAM_END:
                let rest = input.count - consumed
                if rest == 0 {
                    succeeded = true
                    return output
                }
                guard rest >= 2, base[consumed] == 0x1f, base[consumed + 1] == 0x8b else {
                    throw DataError.corruptCompression(
                        path: path, reason: "\(rest) bytes of trailing garbage after the gzip data")
                }
                inflateReset(&stream)
            case Z_BUF_ERROR:
                // No progress possible: with output room left, that means the input ran out early.
                if stream.avail_out > 0 {
                    throw DataError.corruptCompression(path: path, reason: "unexpected end of the compressed data")
                }
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
                throw DataError.corruptCompression(path: path, reason: message)
            }
        }
    }
}

/// A malloc'd byte buffer: big files are read and inflated without zero-filling or per-chunk
/// Swift array growth, and freed as soon as they are decoded.
struct RawBuffer {
    var base: UnsafeMutablePointer<UInt8>
    var count: Int
    var capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
        self.base = UnsafeMutablePointer<UInt8>.allocate(capacity: self.capacity)
        self.count = 0
    }

    /// Reads the whole file.
    init(readingFile path: String, notFoundFix: String) throws {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            let code = errno
            if code == ENOENT { throw DataError.fileNotFound(path: path, fix: notFoundFix) }
            throw DataError.unreadable(path: path, reason: String(cString: strerror(code)))
        }
        defer { close(descriptor) }
        var information = stat()
        guard fstat(descriptor, &information) == 0 else {
            throw DataError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        if (information.st_mode & S_IFMT) == S_IFDIR {
            throw DataError.unreadable(path: path, reason: "it is a directory")
        }
        self.init(capacity: Int(information.st_size) + 1)
        while true {
            if count == capacity { grow() }
            let got = read(descriptor, base + count, capacity - count)
            if got == 0 { break }
            if got < 0 {
                let code = errno
                if code == EINTR { continue }
                free()
                throw DataError.unreadable(path: path, reason: String(cString: strerror(code)))
            }
            count += got
        }
    }

    mutating func grow() {
        let larger = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity * 2)
        larger.update(from: base, count: count)
        base.deallocate()
        base = larger
        capacity *= 2
    }

    func free() {
        base.deallocate()
    }
}
