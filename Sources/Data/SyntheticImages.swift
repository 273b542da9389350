import Randomness

/// Seeded, learnable image sets made in memory, for tests and benchmarks that need no files.
public enum SyntheticImages {
    /// Weight of the class pattern and of the noise; 0.8² + 0.6² = 1 keeps pixels near unit variance,
    /// like normalised real data, and the pattern strong enough that a small CNN learns it in steps.
    static let patternWeight: Float = 0.8
    static let noiseWeight: Float = 0.6

    /// A data set in which each class has its own smooth pattern (random values on a coarse 4x4 grid
    /// per channel, bilinearly upsampled, standardised) and every image is its class pattern plus
    /// independent uniform noise. Labels are balanced (every class appears when count >= classes)
    /// and shuffled. Everything is drawn from `CounterRandom` with purpose `.synthetic`, so the same
    /// arguments always give the same set.
    public static func make(
        count: Int, channels: Int, height: Int, width: Int, classes: Int, seed: UInt64
    ) throws -> ImageSet {
        let name = "synthetic/seed-\(seed)"
        for (setting, value) in [("count", count), ("channels", channels), ("height", height), ("width", width)]
        where value < 1 {
            throw DataError.invalidSetting(name: "\(name).\(setting)", value: "\(value)", allowed: "a positive number")
        }
        guard (1...Int(Int32.max)).contains(classes) else {
            throw DataError.invalidSetting(name: "\(name).classes", value: "\(classes)", allowed: "1 or more")
        }
        let sampleSize = channels * height * width
        let order = CounterRandom.permutation(count: count, seed: seed, purpose: .synthetic, 1)
        let labels = order.map { Int32($0 % classes) }
        // Only the classes drawn: a few ImageNet-shaped images of 1,000 classes would otherwise
        // make 600 MB of patterns, most of them never used.
        var patterns: [Int32: [Float]] = [:]
        for label in labels where patterns[label] == nil {
            patterns[label] = pattern(forClass: Int(label), channels: channels, height: height, width: width, seed: seed)
        }
        // sqrt(12) scales a uniform [-0.5, 0.5) draw to unit variance.
        let noiseScale = noiseWeight * Float(12.0.squareRoot())
        let pixels = [Float](unsafeUninitializedCapacity: count * sampleSize) { buffer, initialised in
            for sample in 0..<count {
                let pattern = patterns[labels[sample]]!
                let base = sample * sampleSize
                for element in 0..<sampleSize {
                    let u = CounterRandom.uniform(
                        seed: seed, purpose: .synthetic, 2, UInt64(sample), UInt64(element))
                    buffer[base + element] = patternWeight * pattern[element] + noiseScale * Float(u - 0.5)
                }
            }
            initialised = count * sampleSize
        }
        return ImageSet(
            unchecked: name, channels: channels, height: height, width: width, classes: classes,
            pixels: pixels, labels: labels)
    }

    /// One class's pattern, [channels, height, width], zero mean and unit variance where possible.
    static func pattern(forClass label: Int, channels: Int, height: Int, width: Int, seed: UInt64) -> [Float] {
        let gridHeight = min(height, 4)
        let gridWidth = min(width, 4)
        var pattern = [Float](repeating: 0, count: channels * height * width)
        for channel in 0..<channels {
            let grid = (0..<gridHeight * gridWidth).map {
                Float(CounterRandom.normal(
                    seed: seed, purpose: .synthetic, 0, UInt64(label), UInt64(channel), UInt64($0)))
            }
            for y in 0..<height {
                // Align corners: the grid's first and last rows land on the image's first and last rows.
                let gy = height > 1 ? Float(y * (gridHeight - 1)) / Float(height - 1) : 0
                let y0 = min(Int(gy), gridHeight - 1)
                let y1 = min(y0 + 1, gridHeight - 1)
                let fy = gy - Float(y0)
                for x in 0..<width {
                    let gx = width > 1 ? Float(x * (gridWidth - 1)) / Float(width - 1) : 0
                    let x0 = min(Int(gx), gridWidth - 1)
                    let x1 = min(x0 + 1, gridWidth - 1)
                    let fx = gx - Float(x0)
                    let top = grid[y0 * gridWidth + x0] * (1 - fx) + grid[y0 * gridWidth + x1] * fx
                    let bottom = grid[y1 * gridWidth + x0] * (1 - fx) + grid[y1 * gridWidth + x1] * fx
                    pattern[(channel * height + y) * width + x] = top * (1 - fy) + bottom * fy
                }
            }
        }
        let mean = pattern.reduce(0, +) / Float(pattern.count)
        let variance = pattern.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(pattern.count)
        // A single-pixel pattern has no variance to standardise; its raw value still tells classes apart.
        guard variance > 1e-12 else { return pattern }
        let scale = 1 / variance.squareRoot()
        return pattern.map { ($0 - mean) * scale }
    }
}
