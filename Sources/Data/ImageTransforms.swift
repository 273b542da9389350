/// torchvision's image transforms on 8-bit images, with torchvision's parameters and Pillow's
/// arithmetic (torchvision applies them to the PIL images `ImageFolder` loads): resize and crops
/// as Pillow resamples (bilinear with antialiasing, 22-bit fixed point), flips, and the colour
/// adjustments of `ColorJitter` as `PIL.ImageEnhance` and Pillow's HSV conversion compute them.
/// Each is a pure function of the image and its parameters; the random parameters are drawn
/// elsewhere (`ImagePipeline`).
public enum ImageTransforms {
    /// torchvision's `resize(img, size)` with one number: the shorter side becomes `size`, the
    /// longer `int(size * long / short)`.
    public static func resizedSize(width: Int, height: Int, shorterSide size: Int) -> (width: Int, height: Int) {
        if width <= height { return (size, Int(Double(size) * Double(height) / Double(width))) }
        return (Int(Double(size) * Double(width) / Double(height)), size)
    }

    /// Pillow's `Image.resize((width, height), BILINEAR, box)`: the region `box` (left, top,
    /// right, bottom; whole image when nil) resampled to width x height, horizontally then
    /// vertically, each pass rounding to 8 bits.
    public static func resize(
        _ image: DecodedImage, width: Int, height: Int, box: (x0: Double, y0: Double, x1: Double, y1: Double)? = nil
    ) -> DecodedImage {
        let box = box ?? (0, 0, Double(image.width), Double(image.height))
        if width == image.width && height == image.height && box == (0, 0, Double(image.width), Double(image.height)) {
            return image
        }
        let horizontal = Resampler.Axis(inputSize: image.width, from: box.x0, to: box.x1, outputSize: width)
        let vertical = Resampler.Axis(inputSize: image.height, from: box.y0, to: box.y1, outputSize: height)
        return resize(image, horizontal: horizontal, vertical: vertical)
    }

    /// `resize` with the weights of both axes given.
    static func resize(_ image: DecodedImage, horizontal: Resampler.Axis, vertical: Resampler.Axis) -> DecodedImage {
        let channels = image.channels
        let span = vertical.span
        var middle = [UInt8](repeating: 0, count: (span.end - span.first) * horizontal.outputSize * channels + 1)
        var output = [UInt8](repeating: 0, count: horizontal.outputSize * vertical.outputSize * channels)
        image.pixels.withUnsafeBufferPointer { source in
            middle.withUnsafeMutableBufferPointer { middle in
                output.withUnsafeMutableBufferPointer { output in
                    Resampler.resample(
                        source.baseAddress!, height: image.height, channels: channels, sourceRowBytes: image.width * channels,
                        horizontal: horizontal, vertical: vertical, middle: middle.baseAddress!, into: output.baseAddress!)
                }
            }
        }
        return DecodedImage(width: horizontal.outputSize, height: vertical.outputSize, channels: channels, pixels: output)
    }

    /// torchvision's `crop(img, top, left, height, width)` on a PIL image: areas outside the
    /// image are zero.
    public static func crop(_ image: DecodedImage, top: Int, left: Int, height: Int, width: Int) -> DecodedImage {
        let channels = image.channels
        var output = [UInt8](repeating: 0, count: height * width * channels)
        for y in 0..<height where (0..<image.height).contains(top + y) {
            for x in 0..<width where (0..<image.width).contains(left + x) {
                for c in 0..<channels {
                    output[(y * width + x) * channels + c] = image.pixels[((top + y) * image.width + left + x) * channels + c]
                }
            }
        }
        return DecodedImage(width: width, height: height, channels: channels, pixels: output)
    }

    /// torchvision's `center_crop(img, [height, width])`: the offsets rounded half to even
    /// (Python's round), zero padding where the crop is larger than the image.
    public static func centerCrop(_ image: DecodedImage, height: Int, width: Int) -> DecodedImage {
        var image = image
        if width > image.width || height > image.height {
            // torchvision pads (left, top, right, bottom) = ((w' - w) // 2, (h' - h) // 2, ...+1 // 2).
            let left = max(width - image.width, 0) / 2, top = max(height - image.height, 0) / 2
            let right = (max(width - image.width, 0) + 1) / 2, bottom = (max(height - image.height, 0) + 1) / 2
            image = crop(image, top: -top, left: -left, height: image.height + top + bottom, width: image.width + left + right)
            if image.width == width && image.height == height { return image }
        }
        let top = Int((Double(image.height - height) / 2).rounded(.toNearestOrEven))
        let left = Int((Double(image.width - width) / 2).rounded(.toNearestOrEven))
        return crop(image, top: top, left: left, height: height, width: width)
    }

    /// torchvision's `resized_crop`: the crop, then a resize to width x height.
    public static func resizedCrop(
        _ image: DecodedImage, top: Int, left: Int, cropHeight: Int, cropWidth: Int, height: Int, width: Int
    ) -> DecodedImage {
        resize(crop(image, top: top, left: left, height: cropHeight, width: cropWidth), width: width, height: height)
    }

    /// Mirrors left-right.
    public static func horizontalFlip(_ image: DecodedImage) -> DecodedImage {
        let (w, c) = (image.width, image.channels)
        var output = image.pixels
        for y in 0..<image.height {
            for x in 0..<w {
                for k in 0..<c { output[(y * w + x) * c + k] = image.pixels[(y * w + w - 1 - x) * c + k] }
            }
        }
        return DecodedImage(width: w, height: image.height, channels: c, pixels: output)
    }

    /// Mirrors top-bottom.
    public static func verticalFlip(_ image: DecodedImage) -> DecodedImage {
        let row = image.width * image.channels
        var output = image.pixels
        for y in 0..<image.height {
            output[y * row..<(y + 1) * row] = image.pixels[(image.height - 1 - y) * row..<(image.height - y) * row]
        }
        return DecodedImage(width: image.width, height: image.height, channels: image.channels, pixels: output)
    }

    /// Pillow's `Image.blend(degenerate, image, factor)` (Blend.c): single-precision arithmetic,
    /// truncated, clipped to 0...255 only when factor is outside 0...1.
    static func blend(_ image: DecodedImage, with degenerate: (Int) -> UInt8, factor: Double) -> DecodedImage {
        let alpha = Float(factor)
        var output = image.pixels
        for i in output.indices {
            let a = Float(degenerate(i)), b = Float(image.pixels[i])
            let value = a + alpha * (b - a)
            if alpha >= 0 && alpha <= 1 {
                output[i] = UInt8(Int(value))
            } else {
                output[i] = value <= 0 ? 0 : value >= 255 ? 255 : UInt8(Int(value))
            }
        }
        return DecodedImage(width: image.width, height: image.height, channels: image.channels, pixels: output)
    }

    /// torchvision's `adjust_brightness`: blends with black.
    public static func adjustBrightness(_ image: DecodedImage, factor: Double) -> DecodedImage {
        blend(image, with: { _ in 0 }, factor: factor)
    }

    /// torchvision's `adjust_contrast`: blends with the grey level of the image's mean luma
    /// (rounded, as `ImageEnhance.Contrast`).
    public static func adjustContrast(_ image: DecodedImage, factor: Double) -> DecodedImage {
        let grey = ImageFile.convert(image, to: 1).pixels
        let mean = grey.reduce(0.0) { $0 + Double($1) } / Double(max(grey.count, 1))
        let level = UInt8(Int(mean + 0.5))
        return blend(image, with: { _ in level }, factor: factor)
    }

    /// torchvision's `adjust_saturation`: blends with the image's own grey version.
    public static func adjustSaturation(_ image: DecodedImage, factor: Double) -> DecodedImage {
        guard image.channels == 3 else { return image }
        let grey = ImageFile.convert(image, to: 1).pixels
        return blend(image, with: { grey[$0 / 3] }, factor: factor)
    }

    /// torchvision's `adjust_hue` on a PIL image: to Pillow's 8-bit HSV, hue shifted by
    /// `uint8(int32(factor * 255))` with wrap-around, and back. Grey images are unchanged.
    public static func adjustHue(_ image: DecodedImage, factor: Double) -> DecodedImage {
        guard image.channels == 3 else { return image }
        let shift = UInt8(truncatingIfNeeded: Int32(factor * 255))
        var output = image.pixels
        for p in 0..<image.width * image.height {
            let (h, s, v) = rgbToHSV(image.pixels[p * 3], image.pixels[p * 3 + 1], image.pixels[p * 3 + 2])
            let (r, g, b) = hsvToRGB(h &+ shift, s, v)
            output[p * 3] = r
            output[p * 3 + 1] = g
            output[p * 3 + 2] = b
        }
        return DecodedImage(width: image.width, height: image.height, channels: 3, pixels: output)
    }

    /// Pillow's rgb2hsv (Convert.c).
    static func rgbToHSV(_ r: UInt8, _ g: UInt8, _ b: UInt8) -> (UInt8, UInt8, UInt8) {
        let maxc = max(r, g, b), minc = min(r, g, b)
        guard minc != maxc else { return (0, 0, maxc) }
        let cr = Float(maxc - minc)
        let s = cr / Float(maxc)
        let rc = Float(maxc - r) / cr, gc = Float(maxc - g) / cr, bc = Float(maxc - b) / cr
        var h: Float
        if r == maxc { h = bc - gc } else if g == maxc { h = 2 + rc - bc } else { h = 4 + gc - rc }
        // fmod((h / 6.0 + 1.0), 1.0) in double, as the C promotes it, stored back in a float.
        let hue = Double(Float((Double(h) / 6 + 1).truncatingRemainder(dividingBy: 1)))
        func clip8(_ value: Double) -> UInt8 { UInt8(min(max(Int(value), 0), 255)) }
        return (clip8(hue * 255), clip8(Double(s) * 255), maxc)
    }

    /// Pillow's hsv2rgb (Convert.c).
    static func hsvToRGB(_ h: UInt8, _ s: UInt8, _ v: UInt8) -> (UInt8, UInt8, UInt8) {
        guard s != 0 else { return (v, v, v) }
        let scaled = Double(Float(h)) * 6 / 255
        let i = Int(scaled.rounded(.down))
        let f = Float(scaled - Double(i))
        let fs = Float(Double(Float(s)) / 255)
        let value = Double(Float(v))
        func clip8(_ x: Double) -> UInt8 { UInt8(min(max(Int(x.rounded()), 0), 255)) }
        let p = clip8(value * (1 - Double(fs)))
        let q = clip8(value * (1 - Double(fs) * Double(f)))
        let t = clip8(value * (1 - Double(fs) * (1 - Double(f))))
        switch i % 6 {
        case 0: return (v, t, p)
        case 1: return (q, v, p)
        case 2: return (p, v, t)
        case 3: return (p, q, v)
        case 4: return (t, p, v)
        default: return (v, p, q)
        }
    }

    /// torchvision's `to_tensor` then `normalize`: channel c becomes (v / 255 - mean[c]) / std[c],
    /// written CHW into `output`; mirrored left-right and/or top-bottom on the way when asked
    /// (the same floats as flipping first).
    public static func normalise(
        _ image: DecodedImage, mean: [Float], standardDeviation: [Float], mirrorX: Bool = false, mirrorY: Bool = false,
        into output: UnsafeMutablePointer<Float>
    ) {
        let (width, height, channels) = (image.width, image.height, image.channels)
        let plane = width * height
        // The same table as the IDX loaders, so a folder loads to the same bits.
        var tables = [Float](repeating: 0, count: 256 * channels)
        for c in 0..<channels {
            for v in 0..<256 { tables[c * 256 + v] = (Float(v) / 255 - mean[c]) / standardDeviation[c] }
        }
        image.pixels.withUnsafeBufferPointer { source in
            tables.withUnsafeBufferPointer { tables in
                for y in 0..<height {
                    let sourceRow = source.baseAddress! + (mirrorY ? height - 1 - y : y) * width * channels
                    for c in 0..<channels {
                        let table = tables.baseAddress! + c * 256
                        let destination = output + c * plane + y * width
                        if mirrorX {
                            for x in 0..<width { destination[width - 1 - x] = table[Int(sourceRow[x * channels + c])] }
                        } else {
                            for x in 0..<width { destination[x] = table[Int(sourceRow[x * channels + c])] }
                        }
                    }
                }
            }
        }
    }

    /// torchvision's `erase(img, i, j, h, w, v)` on a normalised tensor: the rectangle set to `value`.
    public static func erase(
        _ sample: UnsafeMutablePointer<Float>, channels: Int, height: Int, width: Int,
        top: Int, left: Int, eraseHeight: Int, eraseWidth: Int, value: Float = 0
    ) {
        for c in 0..<channels {
            for y in top..<min(top + eraseHeight, height) {
                for x in left..<min(left + eraseWidth, width) { sample[(c * height + y) * width + x] = value }
            }
        }
    }
}
