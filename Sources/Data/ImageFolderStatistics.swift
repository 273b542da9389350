/// Per-channel pixel statistics of a folder of images (`cnn data stats`), on the 0...1 scale that
/// `data.mean` and `data.std` (torchvision's `Normalize`) take.
public struct ImageFolderStatistics: Sendable, Equatable {
    public var mean: [Double]
    public var standardDeviation: [Double]
    /// Images and pixels (per channel) counted.
    public var images: Int
    public var pixels: Int

    /// Decodes every image of `listing` as `channels` channels and measures each channel's mean
    /// and (population) standard deviation over all pixels of all images. Sums are kept per image
    /// and added in file order, so the figures do not depend on the thread count.
    public static func measure(_ listing: ImageFolderListing, channels: Int, threads: Int = 2) throws -> ImageFolderStatistics {
        let count = listing.paths.count
        let sums = UnsafeMutableBufferPointer<Double>.allocate(capacity: count * channels * 2)
        let sizes = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
        sums.initialize(repeating: 0)
        sizes.initialize(repeating: 0)
        defer { sums.deallocate(); sizes.deallocate() }
        // Each thread writes only its own images' slots.
        nonisolated(unsafe) let sumsBase = sums.baseAddress!
        nonisolated(unsafe) let sizesBase = sizes.baseAddress!
        _ = try ImageFolder.scan(listing, channels: channels, skipBadFiles: false, threads: threads) { index, image in
            let plane = image.width * image.height
            for c in 0..<channels {
                var sum = 0.0, squares = 0.0
                for p in 0..<plane {
                    let value = Double(image.pixels[p * channels + c]) / 255
                    sum += value
                    squares += value * value
                }
                sumsBase[(index * channels + c) * 2] = sum
                sumsBase[(index * channels + c) * 2 + 1] = squares
            }
            sizesBase[index] = plane
        }
        let pixels = sizes.reduce(0, +)
        var mean = [Double](repeating: 0, count: channels), deviation = mean
        for c in 0..<channels {
            var sum = 0.0, squares = 0.0
            for index in 0..<count {
                sum += sums[(index * channels + c) * 2]
                squares += sums[(index * channels + c) * 2 + 1]
            }
            let m = sum / Double(max(pixels, 1))
            mean[c] = m
            deviation[c] = max(squares / Double(max(pixels, 1)) - m * m, 0).squareRoot()
        }
        return ImageFolderStatistics(mean: mean, standardDeviation: deviation, images: count, pixels: pixels)
    }
}

/// A grid of samples as the network sees them (`cnn data show`): normalised samples mapped back
/// to 8-bit pixels, side by side with a 2-pixel gap.
public enum SampleGrid {
    /// Tiles `samples` ([n, C, H, W] normalised) in rows of `columns`, undoing the normalisation.
    public static func make(
        samples: [Float], count: Int, channels: Int, height: Int, width: Int, columns: Int,
        mean: [Float], standardDeviation: [Float]
    ) -> DecodedImage {
        let gap = 2
        let rows = (count + columns - 1) / columns
        let gridWidth = columns * width + (columns + 1) * gap, gridHeight = rows * height + (rows + 1) * gap
        var pixels = [UInt8](repeating: 255, count: gridWidth * gridHeight * channels)
        for n in 0..<count {
            let top = gap + (n / columns) * (height + gap), left = gap + (n % columns) * (width + gap)
            for c in 0..<channels {
                for y in 0..<height {
                    for x in 0..<width {
                        let value = samples[((n * channels + c) * height + y) * width + x] * standardDeviation[c] + mean[c]
                        let byte = UInt8(max(0, min(255, (value * 255).rounded())))
                        pixels[((top + y) * gridWidth + left + x) * channels + c] = byte
                    }
                }
            }
        }
        return DecodedImage(width: gridWidth, height: gridHeight, channels: channels, pixels: pixels)
    }
}
