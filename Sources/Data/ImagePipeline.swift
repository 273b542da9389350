import Foundation
import Randomness

/// The transforms of torchvision's classification recipes, applied to a decoded 8-bit image to
/// make one normalised sample. Training: `RandomResizedCrop` (or `Resize` + `CenterCrop`), random
/// flips, `ColorJitter`, `ToTensor` + `Normalize`, `RandomErasing`; evaluation: `Resize` +
/// `CenterCrop`, `ToTensor` + `Normalize`. Every random choice is drawn from `CounterRandom`
/// keyed by (seed, epoch, sample index, decision), never from a generator with state, so a sample
/// comes out the same whichever worker, thread or prefetch slot makes it.
public struct ImagePipeline: Sendable, Equatable {
    /// torchvision's `RandomResizedCrop(size, scale, ratio)`.
    public struct RandomResizedCrop: Sendable, Equatable {
        public var size: Int
        public var scale: ClosedRange<Double> = 0.08...1
        public var ratio: ClosedRange<Double> = (3.0 / 4)...(4.0 / 3)
        public init(size: Int, scale: ClosedRange<Double> = 0.08...1, ratio: ClosedRange<Double> = (3.0 / 4)...(4.0 / 3)) {
            self.size = size
            self.scale = scale
            self.ratio = ratio
        }
    }

    /// torchvision's `ColorJitter(brightness, contrast, saturation, hue)`.
    public struct ColorJitter: Sendable, Equatable {
        public var brightness: Double = 0
        public var contrast: Double = 0
        public var saturation: Double = 0
        public var hue: Double = 0
        public init(brightness: Double = 0, contrast: Double = 0, saturation: Double = 0, hue: Double = 0) {
            self.brightness = brightness
            self.contrast = contrast
            self.saturation = saturation
            self.hue = hue
        }
    }

    /// Shorter side after resizing (evaluation, and training without a random crop); nil: none.
    public var resize: Int?
    /// Square centre crop after the resize; nil: none.
    public var centerCrop: Int?
    public var randomResizedCrop: RandomResizedCrop?
    /// Probabilities of a left-right and a top-bottom mirror in training.
    public var horizontalFlip: Double = 0
    public var verticalFlip: Double = 0
    public var colorJitter: ColorJitter?
    /// Probability of `RandomErasing` (scale 0.02...0.33, ratio 0.3...3.3, value 0) in training.
    public var randomErasing: Double = 0
    /// Per-channel normalisation on the 0...1 scale.
    public var mean: [Float]
    public var standardDeviation: [Float]

    public init(mean: [Float], standardDeviation: [Float]) {
        self.mean = mean
        self.standardDeviation = standardDeviation
    }

    /// Which random decision a draw is for (apart from the `Augmentation` decisions' numbers).
    private enum Decision: UInt64 {
        case cropScale = 1000, cropRatio, cropTop, cropLeft, horizontalFlip, verticalFlip
        case jitterOrder, brightness, contrast, saturation, hue
        case erase, eraseScale, eraseRatio, eraseTop, eraseLeft
    }

    /// The random draws of one sample in one epoch.
    private struct Draws {
        let seed: UInt64, epoch: Int, sample: Int
        func uniform(_ decision: Decision, attempt: Int = 0) -> Double {
            CounterRandom.uniform(
                seed: seed, purpose: .augmentation, UInt64(truncatingIfNeeded: epoch),
                UInt64(truncatingIfNeeded: sample), decision.rawValue, UInt64(attempt))
        }
        func uniform(_ decision: Decision, in range: ClosedRange<Double>, attempt: Int = 0) -> Double {
            range.lowerBound + (range.upperBound - range.lowerBound) * uniform(decision, attempt: attempt)
        }
        /// A whole number in 0..<bound (torch.randint(0, bound)).
        func integer(_ decision: Decision, below bound: Int, attempt: Int = 0) -> Int {
            min(Int(uniform(decision, attempt: attempt) * Double(bound)), bound - 1)
        }
    }

    /// The evaluation sample: resize, centre crop, normalise into `output` ([C, H, W]).
    public func evaluation(_ image: DecodedImage, into output: UnsafeMutablePointer<Float>) {
        ImageTransforms.normalise(resizedAndCropped(image), mean: mean, standardDeviation: standardDeviation, into: output)
    }

    /// What evaluation reads of a width x height image when it is resized and then cropped inside
    /// the resized size: only the crop's outputs of the resize are computed, and they read only
    /// `region`; the axes are relative to it.
    struct EvaluationWindow {
        let region: ImageRegion
        let horizontal: Resampler.Axis
        let vertical: Resampler.Axis
    }

    /// The window of `resize` + `centerCrop`, or nil when evaluation needs the whole image (no
    /// resize or crop, or a crop larger than the resized image, which pads).
    func evaluationWindow(width: Int, height: Int) -> EvaluationWindow? {
        guard let size = resize, let crop = centerCrop else { return nil }
        let target = ImageTransforms.resizedSize(width: width, height: height, shorterSide: size)
        guard crop <= target.width, crop <= target.height else { return nil }
        // `centerCrop`'s offsets.
        let top = Int((Double(target.height - crop) / 2).rounded(.toNearestOrEven))
        let left = Int((Double(target.width - crop) / 2).rounded(.toNearestOrEven))
        let horizontal = Resampler.Axis(inputSize: width, from: 0, to: Double(width), outputSize: target.width)
        let vertical = Resampler.Axis(inputSize: height, from: 0, to: Double(height), outputSize: target.height)
        let columns = horizontal.inputs(of: left..<left + crop), rows = vertical.inputs(of: top..<top + crop)
        return EvaluationWindow(
            region: ImageRegion(left: columns.lowerBound, top: rows.lowerBound, width: columns.count, height: rows.count),
            horizontal: horizontal.window(left..<left + crop, inputOffset: columns.lowerBound),
            vertical: vertical.window(top..<top + crop, inputOffset: rows.lowerBound))
    }

    /// The evaluation sample from the pixels of `window.region` alone: the same as `evaluation`
    /// on the whole image.
    func evaluation(region image: DecodedImage, window: EvaluationWindow, into output: UnsafeMutablePointer<Float>) {
        let cropped = ImageTransforms.resize(image, horizontal: window.horizontal, vertical: window.vertical)
        ImageTransforms.normalise(cropped, mean: mean, standardDeviation: standardDeviation, into: output)
    }

    /// The training sample of `sample` in `epoch`, written to `output` ([C, H, W]).
    public func training(
        _ image: DecodedImage, seed: UInt64, epoch: Int, sample: Int, into output: UnsafeMutablePointer<Float>
    ) {
        let region = trainingRegion(width: image.width, height: image.height, seed: seed, epoch: epoch, sample: sample)
        let part = region == .whole(width: image.width, height: image.height)
            ? image
            : ImageTransforms.crop(image, top: region.top, left: region.left, height: region.height, width: region.width)
        training(region: part, seed: seed, epoch: epoch, sample: sample, into: output)
    }

    /// The part of a width x height image the training transforms of `sample` in `epoch` read:
    /// `RandomResizedCrop`'s box, or the whole image. A file decoder can decode only that.
    public func trainingRegion(width: Int, height: Int, seed: UInt64, epoch: Int, sample: Int) -> ImageRegion {
        guard let crop = randomResizedCrop else { return .whole(width: width, height: height) }
        let box = Self.cropBox(width: width, height: height, crop: crop, draws: Draws(seed: seed, epoch: epoch, sample: sample))
        return ImageRegion(left: box.left, top: box.top, width: box.width, height: box.height)
    }

    /// The training sample of `sample` in `epoch` from the pixels of its `trainingRegion` alone:
    /// the same as `training` on the whole image.
    public func training(
        region image: DecodedImage, seed: UInt64, epoch: Int, sample: Int, into output: UnsafeMutablePointer<Float>
    ) {
        let draws = Draws(seed: seed, epoch: epoch, sample: sample)
        var image = image
        if let crop = randomResizedCrop {
            image = ImageTransforms.resize(image, width: crop.size, height: crop.size)
        } else {
            image = resizedAndCropped(image)
        }
        let mirrorX = horizontalFlip > 0 && draws.uniform(.horizontalFlip) < horizontalFlip
        let mirrorY = verticalFlip > 0 && draws.uniform(.verticalFlip) < verticalFlip
        // The colour adjustments are per pixel (contrast's mean is an exact integer sum), so they
        // give the same pixels before the flips as after; the flips happen while normalising.
        if let jitter = colorJitter { image = Self.jitter(image, jitter, draws: draws) }
        ImageTransforms.normalise(
            image, mean: mean, standardDeviation: standardDeviation, mirrorX: mirrorX, mirrorY: mirrorY, into: output)
        if randomErasing > 0, draws.uniform(.erase) < randomErasing {
            Self.erase(output, channels: image.channels, height: image.height, width: image.width, draws: draws)
        }
    }

    /// The side of the square (or the image's size) the pipeline makes from an image of this size.
    public func outputSize(width: Int, height: Int, training: Bool) -> (width: Int, height: Int) {
        if training, let crop = randomResizedCrop { return (crop.size, crop.size) }
        if let crop = centerCrop { return (crop, crop) }
        if let size = resize { return ImageTransforms.resizedSize(width: width, height: height, shorterSide: size) }
        return (width, height)
    }

    private func resizedAndCropped(_ image: DecodedImage) -> DecodedImage {
        var image = image
        if let size = resize {
            let target = ImageTransforms.resizedSize(width: image.width, height: image.height, shorterSide: size)
            image = ImageTransforms.resize(image, width: target.width, height: target.height)
        }
        if let crop = centerCrop { image = ImageTransforms.centerCrop(image, height: crop, width: crop) }
        return image
    }

    /// `RandomResizedCrop.get_params`: ten tries at a random area and aspect ratio, else the
    /// whole image clamped to the ratio range, centred.
    private static func cropBox(
        width: Int, height: Int, crop: RandomResizedCrop, draws: Draws
    ) -> (top: Int, left: Int, height: Int, width: Int) {
        let area = Double(width * height)
        let logRatio = log(crop.ratio.lowerBound)...log(crop.ratio.upperBound)
        for attempt in 0..<10 {
            let target = area * draws.uniform(.cropScale, in: crop.scale, attempt: attempt)
            let aspect = exp(draws.uniform(.cropRatio, in: logRatio, attempt: attempt))
            let w = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
            let h = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
            if w > 0 && w <= width && h > 0 && h <= height {
                let top = draws.integer(.cropTop, below: height - h + 1, attempt: attempt)
                let left = draws.integer(.cropLeft, below: width - w + 1, attempt: attempt)
                return (top, left, h, w)
            }
        }
        let inRatio = Double(width) / Double(height)
        var w = width, h = height
        if inRatio < crop.ratio.lowerBound {
            h = Int((Double(w) / crop.ratio.lowerBound).rounded(.toNearestOrEven))
        } else if inRatio > crop.ratio.upperBound {
            w = Int((Double(h) * crop.ratio.upperBound).rounded(.toNearestOrEven))
        }
        return ((height - h) / 2, (width - w) / 2, h, w)
    }

    /// `ColorJitter`: the four adjustments in a random order, each factor uniform in its range.
    private static func jitter(_ image: DecodedImage, _ jitter: ColorJitter, draws: Draws) -> DecodedImage {
        let order = CounterRandom.permutation(
            count: 4, seed: draws.seed, purpose: .augmentation, UInt64(truncatingIfNeeded: draws.epoch),
            UInt64(truncatingIfNeeded: draws.sample) &+ (Decision.jitterOrder.rawValue << 48))
        var image = image
        for step in order {
            switch step {
            case 0 where jitter.brightness > 0:
                image = ImageTransforms.adjustBrightness(
                    image, factor: draws.uniform(.brightness, in: max(0, 1 - jitter.brightness)...(1 + jitter.brightness)))
            case 1 where jitter.contrast > 0:
                image = ImageTransforms.adjustContrast(
                    image, factor: draws.uniform(.contrast, in: max(0, 1 - jitter.contrast)...(1 + jitter.contrast)))
            case 2 where jitter.saturation > 0:
                image = ImageTransforms.adjustSaturation(
                    image, factor: draws.uniform(.saturation, in: max(0, 1 - jitter.saturation)...(1 + jitter.saturation)))
            case 3 where jitter.hue > 0:
                image = ImageTransforms.adjustHue(image, factor: draws.uniform(.hue, in: -jitter.hue...jitter.hue))
            default:
                break
            }
        }
        return image
    }

    /// `RandomErasing(scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0)` once it has decided to erase.
    private static func erase(
        _ sample: UnsafeMutablePointer<Float>, channels: Int, height: Int, width: Int, draws: Draws
    ) {
        let area = Double(width * height)
        let logRatio = log(0.3)...log(3.3)
        for attempt in 0..<10 {
            let target = area * draws.uniform(.eraseScale, in: 0.02...0.33, attempt: attempt)
            let aspect = exp(draws.uniform(.eraseRatio, in: logRatio, attempt: attempt))
            let h = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
            let w = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
            guard h < height && w < width else { continue }
            let top = draws.integer(.eraseTop, below: height - h + 1, attempt: attempt)
            let left = draws.integer(.eraseLeft, below: width - w + 1, attempt: attempt)
            ImageTransforms.erase(sample, channels: channels, height: height, width: width,
                                  top: top, left: left, eraseHeight: h, eraseWidth: w)
            return
        }
    }
}
