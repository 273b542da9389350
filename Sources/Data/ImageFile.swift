#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CJPEG
import CPNG

/// One decoded image file: 8-bit pixels, interleaved (HWC), rows top to bottom, with 1 (grey) or
/// 3 (RGB) channels, converted as Pillow's `convert` does, which is what torchvision's
/// `ImageFolder` loader applies to every file.
public struct DecodedImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public let channels: Int
    /// [height, width, channels].
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "pixels do not fill \(width)x\(height)x\(channels)")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }
}

/// Reading JPEG (libjpeg-turbo) and PNG (libpng) files, told apart by their first bytes, not
/// their names.
public enum ImageFile {
    /// The file names a folder data set takes, as torchvision lists them (case-insensitive).
    public static let extensions: Set<String> = ["jpg", "jpeg", "png"]

    /// Decodes the file at `path` to `channels` (1 or 3) channels: grey from colour with Pillow's
    /// ITU-R 601-2 luma weights (L = R 299/1000 + G 587/1000 + B 114/1000, rounded), colour from
    /// grey by copying, alpha dropped (Pillow's `convert("RGB")` ignores it).
    public static func decode(path: String, channels: Int) throws -> DecodedImage {
        precondition(channels == 1 || channels == 3, "images decode to 1 or 3 channels")
        let raw = try RawBuffer(readingFile: path, notFoundFix: "the file was listed but is gone; list the folder again")
        defer { raw.free() }
        let bytes = UnsafeRawBufferPointer(start: raw.base, count: raw.count)
        do {
            guard bytes.count > 0 else {
                throw ImageFolderError.badImage(path: path, reason: "the file is empty")
            }
            let native: DecodedImage
            if bytes.count >= 3, bytes[0] == 0xFF, bytes[1] == 0xD8, bytes[2] == 0xFF {
                native = try decodeJPEG(bytes, path: path)
            } else if bytes.count >= 8, Array(bytes[0..<8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] {
                native = try decodePNG(bytes, path: path)
            } else {
                throw ImageFolderError.badImage(path: path, reason: "neither a JPEG nor a PNG file (its first bytes are neither's)")
            }
            return convert(native, to: channels)
        }
    }

    private static func decodeJPEG(_ bytes: UnsafeRawBufferPointer, path: String) throws -> DecodedImage {
        var pixels: UnsafeMutablePointer<UInt8>?
        var width: Int32 = 0, height: Int32 = 0, channels: Int32 = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = cnn_jpeg_decode(
            bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt(bytes.count), &pixels,
            &width, &height, &channels, &message, message.count)
        guard status == 0, let pixels else {
            throw ImageFolderError.badImage(path: path, reason: "libjpeg-turbo: \(String(cString: message))")
        }
        defer { free(pixels) }
        let count = Int(width) * Int(height) * Int(channels)
        return DecodedImage(
            width: Int(width), height: Int(height), channels: Int(channels),
            pixels: Array(UnsafeBufferPointer(start: pixels, count: count)))
    }

    private static func decodePNG(_ bytes: UnsafeRawBufferPointer, path: String) throws -> DecodedImage {
        var pixels: UnsafeMutablePointer<UInt8>?
        var width: UInt32 = 0, height: UInt32 = 0
        var channels: Int32 = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = cnn_png_decode_native(
            bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count, &pixels,
            &width, &height, &channels, &message, message.count)
        guard status == 0, let pixels else {
            throw ImageFolderError.badImage(path: path, reason: "libpng: \(String(cString: message))")
        }
        defer { free(pixels) }
        let count = Int(width) * Int(height) * Int(channels)
        return DecodedImage(
            width: Int(width), height: Int(height), channels: Int(channels),
            pixels: Array(UnsafeBufferPointer(start: pixels, count: count)))
    }

    /// From 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels to 1 or 3.
    static func convert(_ image: DecodedImage, to channels: Int) -> DecodedImage {
        let from = image.channels
        let colour = from >= 3
        if from == channels { return image }
        let count = image.width * image.height
        var output = [UInt8](repeating: 0, count: count * channels)
        image.pixels.withUnsafeBufferPointer { source in
            for p in 0..<count {
                let s = p * from
                if channels == 3 {
                    if colour {
                        output[p * 3] = source[s]
                        output[p * 3 + 1] = source[s + 1]
                        output[p * 3 + 2] = source[s + 2]
                    } else {
                        output[p * 3] = source[s]
                        output[p * 3 + 1] = source[s]
                        output[p * 3 + 2] = source[s]
                    }
                } else if colour {
                    // Pillow's L24 in Convert.c: weights in 16-bit fixed point, rounded.
                    let luma = UInt32(source[s]) * 19595 + UInt32(source[s + 1]) * 38470 + UInt32(source[s + 2]) * 7471 + 0x8000
                    output[p] = UInt8(luma >> 16)
                } else {
                    output[p] = source[s]
                }
            }
        }
        return DecodedImage(width: image.width, height: image.height, channels: channels, pixels: output)
    }
}
