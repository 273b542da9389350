import CPNG
import Foundation

/// An 8-bit image, rows top to bottom, channels interleaved (1: grey, 3: RGB).
public struct RasterImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var channels: Int
    /// Row-major bytes, channels interleaved: width * height * channels of them.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(channels == 1 || channels == 3, "channels must be 1 or 3")
        precondition(pixels.count == width * height * channels, "pixel count must be width * height * channels")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    /// The image with `channels` channels: RGB to grey by ITU-R BT.601 luma, grey to RGB by copying.
    public func converted(toChannels wanted: Int) -> RasterImage {
        guard wanted != channels else { return self }
        if wanted == 1 {
            var grey = [UInt8](repeating: 0, count: width * height)
            for i in 0..<(width * height) {
                let r = Double(pixels[3 * i]), g = Double(pixels[3 * i + 1]), b = Double(pixels[3 * i + 2])
                grey[i] = UInt8(min(max((0.299 * r + 0.587 * g + 0.114 * b).rounded(), 0), 255))
            }
            return RasterImage(width: width, height: height, channels: 1, pixels: grey)
        }
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            rgb[3 * i] = pixels[i]
            rgb[3 * i + 1] = pixels[i]
            rgb[3 * i + 2] = pixels[i]
        }
        return RasterImage(width: width, height: height, channels: 3, pixels: rgb)
    }
}

/// PNG files through libpng's simplified API (any PNG libpng reads: palette, 16-bit, alpha).
public enum PNGCodec {
    /// Reads a PNG as greyscale (`channels` 1) or RGB (3); transparency is composed over black.
    public static func read(path: String, channels: Int) throws -> RasterImage {
        var pixels: UnsafeMutablePointer<UInt8>?
        var width: UInt32 = 0, height: UInt32 = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = cnn_png_read(path, Int32(channels), &pixels, &width, &height, &message, message.count)
        guard status == 0, let pixels else {
            let reason = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw MonitoringError("\(path): cannot read as PNG (libpng: \(reason)); give a PNG, PGM/PPM or FILE.idx:N image")
        }
        defer { free(pixels) }
        let count = Int(width) * Int(height) * channels
        return RasterImage(width: Int(width), height: Int(height), channels: channels,
                           pixels: Array(UnsafeBufferPointer(start: pixels, count: count)))
    }

    /// Encodes an image as PNG bytes.
    public static func encode(_ image: RasterImage) throws -> [UInt8] {
        var bytes: UnsafeMutablePointer<UInt8>?
        var count = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = image.pixels.withUnsafeBufferPointer { pixels in
            cnn_png_encode_any(pixels.baseAddress, UInt32(image.width), UInt32(image.height), Int32(image.channels), &bytes, &count,
                           &message, message.count)
        }
        guard status == 0, let bytes else {
            let reason = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw MonitoringError("cannot encode a \(image.width)x\(image.height) PNG (libpng: \(reason))", kind: .runtime)
        }
        defer { free(bytes) }
        return Array(UnsafeBufferPointer(start: bytes, count: count))
    }

    /// Writes an image as a PNG file.
    public static func write(_ image: RasterImage, to path: String) throws {
        let bytes = try encode(image)
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw MonitoringError("cannot write \(path) (\(error.localizedDescription)); check that the folder exists and is writable")
        }
    }
}

/// Netpbm images: PGM (P2 text, P5 binary) and PPM (P3 text, P6 binary), 8 or 16 bits.
public enum NetpbmCodec {
    /// Reads a PGM or PPM file.
    public static func read(path: String) throws -> RasterImage {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MonitoringError("\(path): cannot read the file; check the path")
        }
        return try decode(Array(data), source: path)
    }

    /// Decodes PGM or PPM bytes; `source` names them in errors.
    public static func decode(_ bytes: [UInt8], source: String) throws -> RasterImage {
        var position = 0
        func fail(_ what: String) -> MonitoringError {
            MonitoringError("\(source): not a valid PGM/PPM image: \(what)")
        }
        func skipSpaceAndComments() {
            while position < bytes.count {
                if bytes[position] == UInt8(ascii: "#") {
                    while position < bytes.count && bytes[position] != 10 { position += 1 }
                } else if [9, 10, 11, 12, 13, 32].contains(bytes[position]) {
                    position += 1
                } else {
                    return
                }
            }
        }
        func number(_ name: String) throws -> Int {
            skipSpaceAndComments()
            var value = 0
            var digits = 0
            while position < bytes.count, bytes[position] >= 48, bytes[position] <= 57 {
                value = value * 10 + Int(bytes[position] - 48)
                guard value <= 1 << 24 else { throw fail("\(name) is too large") }
                position += 1
                digits += 1
            }
            guard digits > 0 else { throw fail("expected a number for \(name) at byte \(position)") }
            return value
        }
        guard bytes.count >= 2, bytes[0] == UInt8(ascii: "P"), [50, 51, 53, 54].contains(bytes[1]) else {
            throw fail("it does not start with P2, P3, P5 or P6")
        }
        let kind = bytes[1]
        position = 2
        let width = try number("the width"), height = try number("the height"), maximum = try number("the maximum value")
        guard width > 0, height > 0 else { throw fail("width and height must be positive, found \(width)x\(height)") }
        guard (1...65535).contains(maximum) else { throw fail("the maximum value must be 1-65535, found \(maximum)") }
        guard width * height <= 64 << 20 else { throw fail("\(width)x\(height) is larger than this tool reads") }
        let channels = (kind == 51 || kind == 54) ? 3 : 1
        let count = width * height * channels
        var pixels = [UInt8](repeating: 0, count: count)
        func scaled(_ value: Int) throws -> UInt8 {
            guard value <= maximum else { throw fail("sample \(value) exceeds the maximum value \(maximum)") }
            return UInt8((Double(value) * 255 / Double(maximum)).rounded())
        }
        if kind == 50 || kind == 51 {
            for i in 0..<count { pixels[i] = try scaled(number("sample \(i)")) }
        } else {
            // One whitespace byte separates the header from binary samples.
            position += 1
            let sampleBytes = maximum > 255 ? 2 : 1
            guard bytes.count - position >= count * sampleBytes else {
                throw fail("the header promises \(count * sampleBytes) bytes of samples but the file holds \(max(bytes.count - position, 0))")
            }
            for i in 0..<count {
                let value = sampleBytes == 2
                    ? Int(bytes[position + 2 * i]) << 8 | Int(bytes[position + 2 * i + 1])
                    : Int(bytes[position + i])
                pixels[i] = try scaled(value)
            }
        }
        return RasterImage(width: width, height: height, channels: channels, pixels: pixels)
    }

    /// Encodes binary PGM (grey) or PPM (RGB).
    public static func encode(_ image: RasterImage) -> [UInt8] {
        Array("P\(image.channels == 1 ? 5 : 6)\n\(image.width) \(image.height)\n255\n".utf8) + image.pixels
    }
}
