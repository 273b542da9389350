import ConfigReading
import Data

/// `data.transforms`: torchvision's classification transforms for image folders, read from and
/// written to YAML. Mean and std come from `data.mean` / `data.std` when the data is loaded.
///
///     transforms:
///       random_resized_crop: {size: 224, scale: [0.08, 1.0], ratio: [0.75, 1.3333]}
///       resize: 256            # evaluation (and training without random_resized_crop)
///       center_crop: 224
///       horizontal_flip: 0.5   # probability
///       vertical_flip: 0
///       color_jitter: {brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1}
///       random_erasing: 0.25   # probability
extension TrainingConfig {
    static func parseTransforms(_ node: ConfigNode) throws -> ImagePipeline {
        try node.expectKeys(["random_resized_crop", "resize", "center_crop", "horizontal_flip", "vertical_flip",
                             "color_jitter", "random_erasing"])
        var pipeline = ImagePipeline(mean: [], standardDeviation: [])
        if let n = try node.child("resize") { pipeline.resize = try n.int(minimum: 1) }
        if let n = try node.child("center_crop") { pipeline.centerCrop = try n.int(minimum: 1) }
        if let n = try node.child("horizontal_flip") { pipeline.horizontalFlip = try n.double(minimum: 0, maximum: 1) }
        if let n = try node.child("vertical_flip") { pipeline.verticalFlip = try n.double(minimum: 0, maximum: 1) }
        if let n = try node.child("random_erasing") { pipeline.randomErasing = try n.double(minimum: 0, maximum: 1) }
        if let n = try node.child("random_resized_crop") {
            try n.expectKeys(["size", "scale", "ratio"])
            guard let size = try n.child("size") else { throw n.error("\(n.path) needs a size (the side of the square it makes)") }
            var crop = ImagePipeline.RandomResizedCrop(size: try size.int(minimum: 1))
            if let v = try n.child("scale") { crop.scale = try range(v, minimum: 0, maximum: 1) }
            if let v = try n.child("ratio") { crop.ratio = try range(v, minimum: 0, maximum: nil) }
            pipeline.randomResizedCrop = crop
        }
        if let n = try node.child("color_jitter") {
            try n.expectKeys(["brightness", "contrast", "saturation", "hue"])
            var jitter = ImagePipeline.ColorJitter()
            if let v = try n.child("brightness") { jitter.brightness = try v.double(minimum: 0) }
            if let v = try n.child("contrast") { jitter.contrast = try v.double(minimum: 0) }
            if let v = try n.child("saturation") { jitter.saturation = try v.double(minimum: 0) }
            if let v = try n.child("hue") { jitter.hue = try v.double(minimum: 0, maximum: 0.5) }
            pipeline.colorJitter = jitter
        }
        return pipeline
    }

    /// `[low, high]` with 0 <= low <= high (above `minimum`, at most `maximum`).
    private static func range(_ node: ConfigNode, minimum: Double, maximum: Double?) throws -> ClosedRange<Double> {
        let values = try node.items().map { try $0.double(minimum: minimum, maximum: maximum, exclusiveMinimum: minimum == 0 && maximum == nil) }
        guard values.count == 2, values[0] <= values[1] else {
            throw node.error("\(node.path) must be two numbers [low, high] with low <= high")
        }
        return values[0]...values[1]
    }

    /// The YAML of `data.transforms`, one flow mapping (parsed back to an equal pipeline).
    static func renderTransforms(_ p: ImagePipeline) -> String {
        var parts: [String] = []
        if let crop = p.randomResizedCrop {
            parts.append("random_resized_crop: {size: \(crop.size), scale: [\(crop.scale.lowerBound), \(crop.scale.upperBound)], "
                + "ratio: [\(crop.ratio.lowerBound), \(crop.ratio.upperBound)]}")
        }
        if let size = p.resize { parts.append("resize: \(size)") }
        if let size = p.centerCrop { parts.append("center_crop: \(size)") }
        if p.horizontalFlip > 0 { parts.append("horizontal_flip: \(p.horizontalFlip)") }
        if p.verticalFlip > 0 { parts.append("vertical_flip: \(p.verticalFlip)") }
        if let j = p.colorJitter {
            parts.append("color_jitter: {brightness: \(j.brightness), contrast: \(j.contrast), saturation: \(j.saturation), hue: \(j.hue)}")
        }
        if p.randomErasing > 0 { parts.append("random_erasing: \(p.randomErasing)") }
        return "{" + parts.joined(separator: ", ") + "}"
    }
}
