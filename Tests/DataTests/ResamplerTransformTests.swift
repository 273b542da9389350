import Data
import XCTest

/// The vectorised resampler behind `ImageTransforms.resize` against a plain transcription of
/// Pillow's Resample.c (bilinear, 8 bits per channel), bit for bit: down and up, with boxes, grey
/// and colour, widths that leave every remainder of the 16-byte vertical pass.
final class ResamplerTransformTests: XCTestCase {
    /// Resample.c's precompute_coeffs + normalize_coeffs_8bpc + ImagingResampleHorizontal_8bpc /
    /// ImagingResampleVertical_8bpc, one value at a time (the implementation this project had first).
    static func reference(
        _ image: DecodedImage, width: Int, height: Int, box: (x0: Double, y0: Double, x1: Double, y1: Double)
    ) -> [UInt8] {
        let precision = 22
        func coefficients(_ inputSize: Int, _ in0: Double, _ in1: Double, _ outputSize: Int) -> [(Int, [Int])] {
            let scale = (in1 - in0) / Double(outputSize)
            let filterScale = max(scale, 1)
            let support = filterScale
            return (0..<outputSize).map { xx in
                let center = in0 + (Double(xx) + 0.5) * scale
                let xmin = max(Int((center - support + 0.5).rounded(.towardZero)), 0)
                let xmax = min(Int((center + support + 0.5).rounded(.towardZero)), inputSize) - xmin
                var raw: [Double] = []
                for x in 0..<max(xmax, 0) {
                    let t = abs((Double(x + xmin) - center + 0.5) / filterScale)
                    raw.append(t < 1 ? 1 - t : 0)
                }
                let total = raw.reduce(0, +)
                if total != 0 { raw = raw.map { $0 / total } }
                return (xmin, raw.map { Int(($0 * Double(1 << precision) + ($0 < 0 ? -0.5 : 0.5)).rounded(.towardZero)) })
            }
        }
        func clip(_ sum: Int) -> UInt8 { UInt8(min(max(sum >> precision, 0), 255)) }
        let c = image.channels
        let horizontal = coefficients(image.width, box.x0, box.x1, width)
        let vertical = coefficients(image.height, box.y0, box.y1, height)
        var middle = [UInt8](repeating: 0, count: image.height * width * c)
        for y in 0..<image.height {
            for x in 0..<width {
                for k in 0..<c {
                    var sum = 1 << (precision - 1)
                    for (j, w) in horizontal[x].1.enumerated() {
                        sum += Int(image.pixels[(y * image.width + horizontal[x].0 + j) * c + k]) * w
                    }
                    middle[(y * width + x) * c + k] = clip(sum)
                }
            }
        }
        var output = [UInt8](repeating: 0, count: height * width * c)
        for y in 0..<height {
            for x in 0..<width {
                for k in 0..<c {
                    var sum = 1 << (precision - 1)
                    for (j, w) in vertical[y].1.enumerated() { sum += Int(middle[((vertical[y].0 + j) * width + x) * c + k]) * w }
                    output[(y * width + x) * c + k] = clip(sum)
                }
            }
        }
        return output
    }

    func testResizeEqualsPillowsArithmeticBitForBit() {
        var random = SystemRandomNumberGenerator()
        for case_ in 0..<300 {
            let channels = case_ % 3 == 0 ? 1 : 3
            let (w, h) = (Int.random(in: 1...80, using: &random), Int.random(in: 1...60, using: &random))
            let pixels = (0..<w * h * channels).map { _ in UInt8.random(in: 0...255, using: &random) }
            let image = DecodedImage(width: w, height: h, channels: channels, pixels: pixels)
            let (outW, outH) = (Int.random(in: 1...90, using: &random), Int.random(in: 1...70, using: &random))
            var box = (x0: 0.0, y0: 0.0, x1: Double(w), y1: Double(h))
            if case_ % 2 == 1 {
                let x0 = Double.random(in: 0..<Double(w), using: &random), y0 = Double.random(in: 0..<Double(h), using: &random)
                box = (x0, y0, Double.random(in: x0...Double(w), using: &random), Double.random(in: y0...Double(h), using: &random))
                if box.x1 - box.x0 < 0.01 || box.y1 - box.y0 < 0.01 { continue }
            }
            let ours = ImageTransforms.resize(image, width: outW, height: outH, box: box)
            XCTAssertEqual([ours.width, ours.height, ours.channels], [outW, outH, channels])
            XCTAssertEqual(ours.pixels, Self.reference(image, width: outW, height: outH, box: box),
                           "\(w)x\(h)x\(channels) box \(box) to \(outW)x\(outH)")
        }
    }

    /// Photo-sized: 500 x 375 down to 224 x 224 and a crop of it up.
    func testPhotoSizedResizeEqualsPillowsArithmetic() {
        let image = DecodedImage(
            width: 500, height: 375, channels: 3,
            pixels: FolderDecodeRegionTests.picture(width: 500, height: 375, channels: 3, seed: 5))
        for (box, size) in [((0.0, 0.0, 500.0, 375.0), 224), ((101.0, 40.0, 201.0, 190.0), 224), ((3.0, 7.0, 470.0, 300.0), 97)] {
            let ours = ImageTransforms.resize(image, width: size, height: size, box: box)
            XCTAssertEqual(ours.pixels, Self.reference(image, width: size, height: size, box: box), "box \(box)")
        }
    }
}
