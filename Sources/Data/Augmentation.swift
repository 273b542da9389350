import Randomness

/// Random image augmentation applied to normalised samples. Every choice is a pure function of
/// (seed, epoch, sample index), so any worker augments a sample exactly as any other would, and a
/// resumed run repeats the same augmentations. All fields are off by default.
///
/// Order of operations: random crop, horizontal flip, vertical flip, translation (all one
/// resampling pass, since each is a coordinate map with zero fill), then brightness, then contrast.
/// "Zero" fill is zero in normalised units, i.e. the data set's mean colour.
public struct Augmentation: Sendable, Equatable {
    /// Random crop back to the original size after padding every side by this many pixels (0 = off).
    public var cropPadding: Int
    /// Mirror left-right with probability 1/2.
    public var horizontalFlip: Bool
    /// Mirror top-bottom with probability 1/2.
    public var verticalFlip: Bool
    /// Shift by a random whole number of pixels in -maxTranslation...maxTranslation on each axis (0 = off).
    public var maxTranslation: Int
    /// Add one uniform offset in [-brightness, brightness] to every pixel (normalised units; 0 = off).
    public var brightness: Float
    /// Scale each pixel's distance from the sample's mean by a uniform factor in
    /// [1 - contrast, 1 + contrast] (0 = off).
    public var contrast: Float

    /// A configuration; every augmentation is off unless given.
    public init(
        cropPadding: Int = 0, horizontalFlip: Bool = false, verticalFlip: Bool = false,
        maxTranslation: Int = 0, brightness: Float = 0, contrast: Float = 0
    ) {
        self.cropPadding = cropPadding
        self.horizontalFlip = horizontalFlip
        self.verticalFlip = verticalFlip
        self.maxTranslation = maxTranslation
        self.brightness = brightness
        self.contrast = contrast
    }

    /// No augmentation at all.
    public static let none = Augmentation()

    /// True when `apply` leaves every sample unchanged.
    public var isIdentity: Bool {
        cropPadding <= 0 && !horizontalFlip && !verticalFlip && maxTranslation <= 0
            && !(brightness > 0) && !(contrast > 0)
    }

    /// Checks the settings; `prefix` names them in errors (for example "data.augment").
    public func validate(prefix: String = "augmentation") throws {
        if cropPadding < 0 {
            throw DataError.invalidSetting(name: "\(prefix).crop_padding", value: "\(cropPadding)", allowed: "0 or more pixels")
        }
        if maxTranslation < 0 {
            throw DataError.invalidSetting(name: "\(prefix).translate", value: "\(maxTranslation)", allowed: "0 or more pixels")
        }
        if !(brightness.isFinite && brightness >= 0) {
            throw DataError.invalidSetting(name: "\(prefix).brightness", value: "\(brightness)", allowed: "a number of 0 or more")
        }
        if !(contrast.isFinite && contrast >= 0 && contrast <= 1) {
            throw DataError.invalidSetting(name: "\(prefix).contrast", value: "\(contrast)", allowed: "a number in 0...1")
        }
    }

    /// Which random decision a draw is for: the fourth counter of the key, so each decision has
    /// its own independent bits.
    private enum Decision: UInt64 {
        case cropX = 0, cropY, horizontalFlip, verticalFlip, translateX, translateY, brightness, contrast
    }

    /// The random bits for one decision about one sample in one epoch.
    private static func draw(_ decision: Decision, seed: UInt64, epoch: Int, sampleIndex: Int) -> UInt64 {
        CounterRandom.bits(
            seed: seed, purpose: .augmentation, UInt64(truncatingIfNeeded: epoch),
            UInt64(truncatingIfNeeded: sampleIndex), decision.rawValue)
    }

    /// Augments one normalised sample, [channels, height, width], in place. A pure function of
    /// (seed, epoch, sampleIndex) and the sample: `CounterRandom` with purpose `.augmentation`,
    /// keyed by epoch, sample index and the decision.
    public func apply(
        to sample: UnsafeMutablePointer<Float>, channels: Int, height: Int, width: Int,
        seed: UInt64, epoch: Int, sampleIndex: Int
    ) {
        guard !isIdentity, channels > 0, height > 0, width > 0 else { return }
        func bits(_ decision: Decision) -> UInt64 {
            Self.draw(decision, seed: seed, epoch: epoch, sampleIndex: sampleIndex)
        }
        /// A uniform integer in -limit...limit.
        func offset(_ decision: Decision, limit: Int) -> Int {
            guard limit > 0 else { return 0 }
            // Multiply-shift maps 64 bits onto 0...2*limit with negligible bias.
            return Int((UInt128(bits(decision)) &* UInt128(2 * limit + 1)) >> 64) - limit
        }
        /// A uniform Float in [-1, 1).
        func signedUnit(_ decision: Decision) -> Float {
            Float(Double(bits(decision) >> 11) * 0x1p-53 * 2 - 1)
        }

        // A crop at offset o of an image padded by p reads source = destination + o - p: a shift
        // by p - o, with o uniform in 0...2p, is a shift uniform in -p...p.
        let cropX = offset(.cropX, limit: max(cropPadding, 0))
        let cropY = offset(.cropY, limit: max(cropPadding, 0))
        let flipX = horizontalFlip && bits(.horizontalFlip) >> 63 == 1
        let flipY = verticalFlip && bits(.verticalFlip) >> 63 == 1
        let moveX = offset(.translateX, limit: max(maxTranslation, 0))
        let moveY = offset(.translateY, limit: max(maxTranslation, 0))

        if cropX != 0 || cropY != 0 || flipX || flipY || moveX != 0 || moveY != 0 {
            resample(
                sample, channels: channels, height: height, width: width,
                crop: (cropX, cropY), flip: (flipX, flipY), move: (moveX, moveY))
        }

        let count = channels * height * width
        if brightness > 0 {
            let delta = brightness * signedUnit(.brightness)
            for i in 0..<count { sample[i] += delta }
        }
        if contrast > 0 {
            let factor = 1 + contrast * signedUnit(.contrast)
            var sum: Float = 0
            for i in 0..<count { sum += sample[i] }
            let mean = sum / Float(count)
            for i in 0..<count { sample[i] = (sample[i] - mean) * factor + mean }
        }
    }

    /// One pass of crop, flips and translation. Each stage maps an output coordinate to its input
    /// coordinate and zero-fills when that falls outside the image; chaining the maps (and
    /// zero-filling if any stage falls outside) is exactly applying the stages one after another.
    private func resample(
        _ sample: UnsafeMutablePointer<Float>, channels: Int, height: Int, width: Int,
        crop: (x: Int, y: Int), flip: (x: Bool, y: Bool), move: (x: Int, y: Int)
    ) {
        let plane = height * width
        withUnsafeTemporaryAllocation(of: Float.self, capacity: channels * plane) { scratch in
            let source = scratch.baseAddress!
            source.initialize(from: sample, count: channels * plane)
            for channel in 0..<channels {
                let input = source + channel * plane
                let output = sample + channel * plane
                for y in 0..<height {
                    // Undo the stages last to first: translation, vertical flip, crop.
                    let flippedY = y - move.y
                    let croppedY = flip.y ? height - 1 - flippedY : flippedY
                    let sourceY = croppedY - crop.y
                    let rowValid = flippedY >= 0 && flippedY < height && sourceY >= 0 && sourceY < height
                    for x in 0..<width {
                        let flippedX = x - move.x
                        let croppedX = flip.x ? width - 1 - flippedX : flippedX
                        let sourceX = croppedX - crop.x
                        let valid = rowValid && flippedX >= 0 && flippedX < width && sourceX >= 0 && sourceX < width
                        output[y * width + x] = valid ? input[sourceY * width + sourceX] : 0
                    }
                }
            }
        }
    }
}
