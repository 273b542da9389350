import CJPEG
import CPNG

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Encoding 8-bit images as PNG (libpng) and JPEG (libjpeg-turbo) files, for tools that write
/// images (`cnn data show`) and for tests that make image folders of their own.
public enum ImageEncoding {
    /// A PNG of `pixels` ([height, width, channels], channels 1 to 4: grey, grey + alpha, RGB, RGBA).
    public static func png(width: Int, height: Int, channels: Int, pixels: [UInt8]) throws -> [UInt8] {
        precondition((1...4).contains(channels) && pixels.count == width * height * channels, "bad PNG pixels")
        var bytes: UnsafeMutablePointer<UInt8>?
        var count = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = cnn_png_encode_any(pixels, UInt32(width), UInt32(height), Int32(channels), &bytes, &count, &message, message.count)
        guard status == 0, let bytes else {
            throw ImageFolderError(path: "(PNG in memory)", problem: "cannot encode \(width)x\(height)x\(channels) (libpng: \(String(cString: message)))")
        }
        defer { free(bytes) }
        return Array(UnsafeBufferPointer(start: bytes, count: count))
    }

    /// How a colour JPEG stores its two chroma channels: at full resolution (4:4:4), halved
    /// across (4:2:2), down (4:4:0), both ways (4:2:0, Pillow's default) or quartered across (4:1:1).
    public enum ChromaSubsampling: Sendable, CaseIterable {
        case full, halfAcross, halfDown, halfBoth, quarterAcross
        var turboJPEG: Int32 {
            switch self {
            case .full: return Int32(TJSAMP_444.rawValue)
            case .halfAcross: return Int32(TJSAMP_422.rawValue)
            case .halfDown: return Int32(TJSAMP_440.rawValue)
            case .halfBoth: return Int32(TJSAMP_420.rawValue)
            case .quarterAcross: return Int32(TJSAMP_411.rawValue)
            }
        }
    }

    /// A JPEG of `pixels` ([height, width, channels], channels 1 or 3) at `quality` (1-100):
    /// baseline, colour with 4:2:0 chroma, unless told otherwise.
    public static func jpeg(
        width: Int, height: Int, channels: Int, pixels: [UInt8], quality: Int = 90,
        chroma: ChromaSubsampling = .halfBoth, progressive: Bool = false
    ) throws -> [UInt8] {
        precondition((channels == 1 || channels == 3) && pixels.count == width * height * channels, "bad JPEG pixels")
        var bytes: UnsafeMutablePointer<UInt8>?
        var count: UInt = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = cnn_jpeg_encode(pixels, Int32(width), Int32(height), Int32(channels), Int32(quality),
                                     chroma.turboJPEG, progressive ? 1 : 0, &bytes, &count, &message, message.count)
        guard status == 0, let bytes else {
            throw ImageFolderError(path: "(JPEG in memory)", problem: "cannot encode \(width)x\(height)x\(channels) (libjpeg-turbo: \(String(cString: message)))")
        }
        defer { cnn_jpeg_free(bytes) }
        return Array(UnsafeBufferPointer(start: bytes, count: Int(count)))
    }
}
