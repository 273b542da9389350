#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CJPEG
import CZlib

/// Checking an image file's structure without decoding its pixels, which costs a fraction of a
/// decode: what opening a folder does to every file, so that an empty, truncated, mis-named or
/// damaged file is named before training starts. A file can still pass and then fail to decode
/// (a bit flipped inside a JPEG's compressed data); that is caught when its sample is made.
extension ImageFile {
    /// The image's width and height after checking the file at `path`: a JPEG's header (read by
    /// libjpeg, as decoding reads it) and its markers from start of image to end of image,
    /// including every scan's compressed data up to the next marker; a PNG's signature, header
    /// chunk, every chunk's length and CRC, image data and end chunk.
    public static func check(path: String) throws -> (width: Int, height: Int) {
        let raw = try RawBuffer(readingFile: path, notFoundFix: "the file was listed but is gone; list the folder again")
        defer { raw.free() }
        let bytes = UnsafeRawBufferPointer(start: raw.base, count: raw.count)
        switch try format(of: bytes, path: path) {
        case .jpeg:
            try checkJPEGMarkers(bytes, path: path)
            return try JPEGRegionReaders.shared.withReader { reader in
                var width: Int32 = 0, height: Int32 = 0, channels: Int32 = 0
                let opened = cnn_jpeg_reader_open(
                    reader, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt(bytes.count), &width, &height, &channels)
                guard opened >= 0 else {
                    throw ImageFolderError.badImage(path: path, reason: "libjpeg: \(String(cString: cnn_jpeg_reader_message(reader)))")
                }
                return (Int(width), Int(height))
            }
        case .png:
            return try checkPNG(bytes, path: path)
        }
    }

    /// Walks a JPEG's segments from SOI to EOI: each marker segment must fit in the file, a frame
    /// header (SOF) must come before the first scan (SOS), and each scan's entropy-coded data
    /// must end at a marker (a 0xFF not followed by 0x00 or a restart marker).
    private static func checkJPEGMarkers(_ bytes: UnsafeRawBufferPointer, path: String) throws {
        func bad(_ reason: String) -> ImageFolderError { .badImage(path: path, reason: reason) }
        let count = bytes.count
        var position = 2
        var sawFrame = false, sawScan = false
        while true {
            guard position < count else { throw bad("the file ends before its end-of-image marker (truncated)") }
            guard bytes[position] == 0xFF else {
                throw bad("byte \(position) should start a JPEG marker (0xFF) but is \(bytes[position]) (damaged)")
            }
            while position < count && bytes[position] == 0xFF { position += 1 }  // fill bytes
            guard position < count else { throw bad("the file ends before its end-of-image marker (truncated)") }
            let marker = bytes[position]
            position += 1
            switch marker {
            case 0xD9:
                guard sawFrame && sawScan else { throw bad("end-of-image marker before any image data") }
                return
            case 0x01, 0xD0...0xD7:
                continue  // markers without a length
            case 0x00, 0xD8:
                throw bad("marker 0xFF\(hex(marker)) at byte \(position - 2) where a segment should start (damaged)")
            default:
                break
            }
            guard position + 2 <= count else { throw bad("the file ends inside a segment header (truncated)") }
            let length = Int(bytes[position]) << 8 | Int(bytes[position + 1])
            guard length >= 2, position + length <= count else {
                throw bad("segment 0xFF\(hex(marker)) of \(length) bytes runs past the end of the file (truncated)")
            }
            if (0xC0...0xCF).contains(marker) && ![0xC4, 0xC8, 0xCC].contains(marker) { sawFrame = true }
            position += length
            if marker == 0xDA {
                guard sawFrame else { throw bad("image data (SOS) before the frame header (SOF)") }
                sawScan = true
                position = try endOfEntropyData(bytes, from: position, path: path)
            }
        }
    }

    /// The position of the marker after a scan's entropy-coded data starting at `start`.
    private static func endOfEntropyData(_ bytes: UnsafeRawBufferPointer, from start: Int, path: String) throws -> Int {
        let base = bytes.baseAddress!, count = bytes.count
        var position = start
        while position < count {
            guard let found = memchr(base + position, 0xFF, count - position) else { break }
            let at = UnsafeRawPointer(found) - base
            guard at + 1 < count else { break }
            let next = bytes[at + 1]
            if next == 0x00 || (0xD0...0xD7).contains(next) || next == 0xFF {
                // A stuffed 0xFF, a restart marker, or a fill byte before the next marker.
                position = next == 0xFF ? at + 1 : at + 2
                continue
            }
            return at
        }
        throw ImageFolderError.badImage(
            path: path, reason: "the file ends inside its compressed image data, with no end-of-image marker (truncated)")
    }

    /// A PNG's chunks: IHDR first (13 bytes, a size above zero, a valid bit depth and colour
    /// type), every chunk inside the file with the CRC it states, at least one IDAT, and IEND.
    private static func checkPNG(_ bytes: UnsafeRawBufferPointer, path: String) throws -> (width: Int, height: Int) {
        func bad(_ reason: String) -> ImageFolderError { .badImage(path: path, reason: reason) }
        func word(_ at: Int) -> Int {
            Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
        }
        let count = bytes.count
        var position = 8
        var size: (width: Int, height: Int)?
        var sawData = false
        while true {
            guard position + 8 <= count else { throw bad("the file ends before its IEND chunk (truncated)") }
            let length = word(position)
            let type = String(decoding: bytes[position + 4..<position + 8], as: UTF8.self)
            guard length <= 0x7FFF_FFFF, position + 12 + length <= count else {
                throw bad("chunk \(type) of \(length) bytes runs past the end of the file (truncated)")
            }
            let stated = UInt32(word(position + 8 + length))
            let computed = UInt32(crc32(0, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + position + 4, UInt32(length + 4)))
            guard stated == computed else { throw bad("chunk \(type) at byte \(position) fails its CRC (damaged)") }
            if size == nil {
                guard type == "IHDR", length == 13 else { throw bad("the first chunk is \(type), not a 13-byte IHDR") }
                let (width, height) = (word(position + 8), word(position + 12))
                let depth = Int(bytes[position + 16]), colour = Int(bytes[position + 17])
                let depths: [Int: [Int]] = [0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]]
                guard width > 0, height > 0, width <= 0x7FFF_FFFF, height <= 0x7FFF_FFFF else {
                    throw bad("IHDR gives a size of \(width)x\(height)")
                }
                guard depths[colour]?.contains(depth) == true else {
                    throw bad("IHDR gives colour type \(colour) with bit depth \(depth), which PNG does not allow")
                }
                size = (width, height)
            } else if type == "IDAT" {
                sawData = true
            } else if type == "IEND" {
                guard sawData, let size else { throw bad("IEND before any image data (IDAT)") }
                return size
            }
            position += 12 + length
        }
    }

    private static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }
}
