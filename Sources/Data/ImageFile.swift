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
        try decode(path: path, channels: channels, region: { .whole(width: $0, height: $1) })
    }

    /// Decodes the part of the file at `path` that `region` asks for, given the image's width and
    /// height (it must lie inside), converted to `channels` channels as `decode` converts. A JPEG
    /// file (greyscale, YCbCr or RGB) is decoded only there: rows below it are never read, rows
    /// above it and columns beside it are never inverse-DCT'd or colour-converted; the pixels are
    /// those of a full decode (tested). Other files are decoded whole and cut.
    public static func decode(
        path: String, channels: Int, region: (_ width: Int, _ height: Int) -> ImageRegion
    ) throws -> DecodedImage {
        precondition(channels == 1 || channels == 3, "images decode to 1 or 3 channels")
        let raw = try RawBuffer(readingFile: path, notFoundFix: "the file was listed but is gone; list the folder again")
        defer { raw.free() }
        let bytes = UnsafeRawBufferPointer(start: raw.base, count: raw.count)
        let native: DecodedImage
        switch try format(of: bytes, path: path) {
        case .jpeg:
            if let part = try decodeJPEGRegion(bytes, path: path, region: region) { return convert(part, to: channels) }
            native = try decodeJPEG(bytes, path: path)
        case .png:
            native = try decodePNG(bytes, path: path)
        }
        let wanted = region(native.width, native.height)
        let cut = wanted == .whole(width: native.width, height: native.height)
            ? native
            : ImageTransforms.crop(native, top: wanted.top, left: wanted.left, height: wanted.height, width: wanted.width)
        return convert(cut, to: channels)
    }

    enum Format { case jpeg, png }

    /// JPEG or PNG by the first bytes; anything else (an empty file too) is a bad image.
    static func format(of bytes: UnsafeRawBufferPointer, path: String) throws -> Format {
        guard bytes.count > 0 else {
            throw ImageFolderError.badImage(path: path, reason: "the file is empty")
        }
        if bytes.count >= 3, bytes[0] == 0xFF, bytes[1] == 0xD8, bytes[2] == 0xFF { return .jpeg }
        if bytes.count >= 8, bytes.prefix(8).elementsEqual(pngSignature) { return .png }
        throw ImageFolderError.badImage(path: path, reason: "neither a JPEG nor a PNG file (its first bytes are neither's)")
    }

    static let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// The region of a JPEG through libjpeg, or nil for a colour space only TurboJPEG converts
    /// as Pillow does (CMYK, YCCK).
    private static func decodeJPEGRegion(
        _ bytes: UnsafeRawBufferPointer, path: String, region: (Int, Int) -> ImageRegion
    ) throws -> DecodedImage? {
        try JPEGRegionReaders.shared.withReader { reader in
            let base = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
            var width: Int32 = 0, height: Int32 = 0, channels: Int32 = 0
            let opened = cnn_jpeg_reader_open(reader, base, UInt(bytes.count), &width, &height, &channels)
            if opened == 1 { return nil }
            guard opened == 0 else {
                throw ImageFolderError.badImage(path: path, reason: "libjpeg: \(String(cString: cnn_jpeg_reader_message(reader)))")
            }
            let wanted = region(Int(width), Int(height))
            let size = wanted.width * wanted.height * Int(channels)
            var status: Int32 = 0
            // Every byte is written by the decoder (or the array is thrown away).
            let pixels = [UInt8](unsafeUninitializedCapacity: max(size, 1)) { buffer, count in
                status = cnn_jpeg_reader_decode(
                    reader, Int32(wanted.left), Int32(wanted.top), Int32(wanted.width), Int32(wanted.height), buffer.baseAddress!)
                count = status == 0 ? size : 0
            }
            guard status == 0 else {
                throw ImageFolderError.badImage(path: path, reason: "libjpeg: \(String(cString: cnn_jpeg_reader_message(reader)))")
            }
            return DecodedImage(width: wanted.width, height: wanted.height, channels: Int(channels), pixels: pixels)
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
