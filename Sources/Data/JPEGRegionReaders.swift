import CJPEG
import Foundation

/// A rectangle of an image, in pixels.
public struct ImageRegion: Sendable, Equatable {
    public var left: Int
    public var top: Int
    public var width: Int
    public var height: Int

    public init(left: Int, top: Int, width: Int, height: Int) {
        self.left = left
        self.top = top
        self.width = width
        self.height = height
    }

    /// The whole of a width x height image.
    public static func whole(width: Int, height: Int) -> ImageRegion {
        ImageRegion(left: 0, top: 0, width: width, height: height)
    }
}

/// libjpeg decompressors (`cnn_jpeg_reader` in the CJPEG shim) kept for reuse, one lent to each
/// thread decoding at the moment: making one for every file would cost an allocation of its
/// tables each time.
final class JPEGRegionReaders: @unchecked Sendable {
    // Sendable: `idle` is only touched holding `lock`; a reader is used by one thread at a time.
    static let shared = JPEGRegionReaders()
    private let lock = NSLock()
    private var idle: [UnsafeMutablePointer<cnn_jpeg_reader>] = []

    /// Runs `body` with a reader no other thread is using.
    func withReader<T>(_ body: (UnsafeMutablePointer<cnn_jpeg_reader>) throws -> T) throws -> T {
        let reader = lock.withLock { idle.popLast() } ?? cnn_jpeg_reader_create()
        guard let reader else { throw DataError.unreadable(path: "libjpeg", reason: "out of memory for a decompressor") }
        defer { lock.withLock { idle.append(reader) } }
        return try body(reader)
    }
}
