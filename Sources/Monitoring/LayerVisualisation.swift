import CNN
import Foundation
import Training

/// `cnn viz`: the first convolution's filters and one sample's feature maps at a chosen layer,
/// laid out as image grids (a PNG, or an SVG with titles).
public struct LayerVisualisation: Sendable {
    /// One picture in a grid: `values` is [height, width] for a colour map, or [height, width, 3]
    /// when `rgb` (already 0...1).
    public struct Tile: Sendable {
        public var width: Int
        public var height: Int
        /// Row-major, [height, width] or [height, width, 3].
        public var values: [Float]
        /// Whether `values` holds RGB triples in 0...1 rather than values for a palette.
        public var rgb: Bool
    }

    /// How tile values become colours.
    public enum Palette: Sendable {
        /// Blue for negative, white for zero, red for positive, scaled by the largest magnitude.
        case diverging(scale: Float)
        /// Dark to bright between the given ends.
        case sequential(low: Float, high: Float)
        /// Values already in 0...1 (greyscale or RGB).
        case direct
    }

    /// A titled grid of tiles drawn with one palette, so tiles are comparable.
    public struct Section: Sendable {
        public var title: String
        public var tiles: [Tile]
        public var palette: Palette
        /// Pixels per tile pixel.
        public var scale: Int
        /// Tiles per row.
        public var columns: Int
    }

    /// Top to bottom: the input, the filters, the feature maps.
    public var sections: [Section]
    /// At most this many tiles are drawn per section.
    public static let maximumTiles = 256

    /// Builds the picture for a model, a layer name (nil: the first convolution) and an input.
    ///
    /// - Parameters:
    ///   - input: the model input [C, H, W] for the sample, already normalised.
    ///   - inputTitle: how to name the sample in titles.
    public static func make(model: CheckpointModel, layer name: String?, input: [Float], inputTitle: String) throws -> LayerVisualisation {
        let network = model.network
        let layers = network.layers
        guard let firstConvolution = layers.firstIndex(where: { $0 is Conv2D }) else {
            throw MonitoringError("the model has no convolution layer, so there are no filters to show; its layers are: "
                + layerList(network))
        }
        let target = try name.map { try resolve($0, in: network) } ?? firstConvolution
        var sections: [Section] = []

        // The input, min-max scaled per channel (normalisation makes raw values meaningless to the eye).
        let shape = network.inputShape
        sections.append(Section(
            title: "input: \(inputTitle) (\(shape.channels)x\(shape.height)x\(shape.width))",
            tiles: [imageTile(input, channels: shape.channels, height: shape.height, width: shape.width)],
            palette: .direct, scale: max(1, 112 / max(shape.height, 1)), columns: 1))

        // The first convolution's filters, [K, C/groups, kh, kw].
        let convolution = layers[firstConvolution] as! Conv2D
        let slot = network.parameterSlots.first { $0.name == "\(network.layerNames[firstConvolution]).weight" }!
        let weights = Array(UnsafeBufferPointer(start: network.parameters.pointer + slot.offset, count: slot.count))
        let (k, c, kh, kw) = (slot.shape[0], slot.shape[1], slot.shape[2], slot.shape[3])
        var filterTiles: [Tile] = []
        let largest = weights.map(abs).max() ?? 1
        if c == 3 {
            // Colour filters read best as colours: each weight mapped around mid-grey.
            for filter in 0..<k {
                var values = [Float](repeating: 0, count: kh * kw * 3)
                for channel in 0..<3 {
                    for p in 0..<(kh * kw) {
                        values[p * 3 + channel] = 0.5 + 0.5 * weights[(filter * 3 + channel) * kh * kw + p] / max(largest, 1e-12)
                    }
                }
                filterTiles.append(Tile(width: kw, height: kh, values: values, rgb: true))
            }
        } else {
            for filter in 0..<k {
                for channel in 0..<c {
                    let start = (filter * c + channel) * kh * kw
                    filterTiles.append(Tile(width: kw, height: kh, values: Array(weights[start..<(start + kh * kw)]), rgb: false))
                }
            }
        }
        let filterCount = filterTiles.count
        filterTiles = Array(filterTiles.prefix(maximumTiles))
        sections.append(Section(
            title: "layer \(firstConvolution) \(convolution.summary): \(k) filters of \(c)x\(kh)x\(kw)"
                + (filterCount > filterTiles.count ? " (first \(filterTiles.count) of \(filterCount) kernels)" : "")
                + (c == 3 ? ", RGB around grey" : ", blue < 0 < red"),
            tiles: filterTiles, palette: c == 3 ? .direct : .diverging(scale: largest),
            scale: max(4, 36 / max(kh, 1)), columns: c == 3 || c == 1 ? min(k, 16) : c))

        // Feature maps of the target layer for this input.
        var activation = input
        var outputShape = shape
        for index in 0...target {
            let layer = layers[index]
            let output = activation.withUnsafeBufferPointer { buffer in
                layer.forward(buffer.baseAddress!, batch: 1, context: .inference)
            }
            outputShape = layer.outputShape
            activation = Array(UnsafeBufferPointer(start: output, count: outputShape.count))
        }
        var mapTiles: [Tile] = []
        let title = "layer \(target) \(layers[target].summary): "
        if outputShape.height * outputShape.width > 1 {
            let plane = outputShape.height * outputShape.width
            for channel in 0..<min(outputShape.channels, maximumTiles) {
                mapTiles.append(Tile(width: outputShape.width, height: outputShape.height,
                                     values: Array(activation[(channel * plane)..<((channel + 1) * plane)]), rgb: false))
            }
            sections.append(Section(
                title: title + "\(outputShape.channels) feature maps of \(outputShape.height)x\(outputShape.width)"
                    + (outputShape.channels > maximumTiles ? " (first \(maximumTiles))" : ""),
                tiles: mapTiles, palette: .sequential(low: activation.min() ?? 0, high: activation.max() ?? 1),
                scale: max(1, 56 / max(outputShape.height, 1)), columns: min(outputShape.channels, 8)))
        } else {
            // A vector layer: its features as one square-ish tile.
            let count = outputShape.count
            let side = Int(Double(count).squareRoot().rounded(.up))
            var values = activation + [Float](repeating: activation.min() ?? 0, count: side * side - count)
            values = Array(values.prefix(side * side))
            sections.append(Section(
                title: title + "\(count) features as a \(side)x\(side) square",
                tiles: [Tile(width: side, height: side, values: values, rgb: false)],
                palette: .sequential(low: activation.min() ?? 0, high: activation.max() ?? 1),
                scale: max(2, 112 / side), columns: 1))
        }
        return LayerVisualisation(sections: sections)
    }

    /// Finds a layer by `N`, `layers[N]`, `model.layers[N]`, or `convN` (the Nth convolution, from 1).
    static func resolve(_ name: String, in network: Network) throws -> Int {
        let layers = network.layers
        var index: Int?
        let trimmed = name.replacingOccurrences(of: "model.", with: "")
        if let number = Int(trimmed) {
            index = number
        } else if trimmed.hasPrefix("layers["), trimmed.hasSuffix("]") {
            index = Int(trimmed.dropFirst("layers[".count).dropLast())
        } else if trimmed.hasPrefix("conv"), let ordinal = Int(trimmed.dropFirst(4)), ordinal >= 1 {
            let convolutions = layers.indices.filter { layers[$0] is Conv2D }
            index = ordinal <= convolutions.count ? convolutions[ordinal - 1] : -1
        }
        guard let index, layers.indices.contains(index) else {
            throw MonitoringError("no layer '\(name)' in this model; name one by index or as convN: " + layerList(network))
        }
        return index
    }

    private static func layerList(_ network: Network) -> String {
        network.layers.enumerated().map { "\($0.offset) \($0.element.summary)" }.joined(separator: ", ")
    }

    private static func imageTile(_ input: [Float], channels: Int, height: Int, width: Int) -> Tile {
        let plane = height * width
        var values = [Float](repeating: 0, count: plane * (channels == 3 ? 3 : 1))
        for channel in 0..<min(channels, 3) {
            let slice = input[(channel * plane)..<((channel + 1) * plane)]
            let low = slice.min() ?? 0, high = slice.max() ?? 1
            let range = max(high - low, 1e-12)
            for p in 0..<plane {
                let value = (input[channel * plane + p] - low) / range
                if channels == 3 { values[p * 3 + channel] = value } else { values[p] = value }
            }
        }
        return Tile(width: width, height: height, values: values, rgb: channels == 3)
    }

    // MARK: Drawing

    static let background: (UInt8, UInt8, UInt8) = (236, 236, 236)
    static let gap = 4
    static let sectionGap = 14

    /// One section drawn as an RGB image.
    public static func render(_ section: Section) -> RasterImage {
        let tileWidth = (section.tiles.map(\.width).max() ?? 1) * section.scale
        let tileHeight = (section.tiles.map(\.height).max() ?? 1) * section.scale
        let columns = max(1, min(section.columns, section.tiles.count))
        let rows = (section.tiles.count + columns - 1) / columns
        let width = columns * tileWidth + (columns + 1) * gap
        let height = rows * tileHeight + (rows + 1) * gap
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            pixels[3 * i] = background.0
            pixels[3 * i + 1] = background.1
            pixels[3 * i + 2] = background.2
        }
        for (number, tile) in section.tiles.enumerated() {
            let left = gap + (number % columns) * (tileWidth + gap)
            let top = gap + (number / columns) * (tileHeight + gap)
            for y in 0..<(tile.height * section.scale) {
                for x in 0..<(tile.width * section.scale) {
                    let p = (y / section.scale) * tile.width + x / section.scale
                    let colour = tile.rgb
                        ? (tile.values[3 * p], tile.values[3 * p + 1], tile.values[3 * p + 2])
                        : LayerVisualisation.colour(tile.values[p], section.palette)
                    let offset = ((top + y) * width + left + x) * 3
                    pixels[offset] = byte(colour.0)
                    pixels[offset + 1] = byte(colour.1)
                    pixels[offset + 2] = byte(colour.2)
                }
            }
        }
        return RasterImage(width: width, height: height, channels: 3, pixels: pixels)
    }

    /// Every section stacked into one RGB image (no titles: the SVG form has them).
    public func image() -> RasterImage {
        let parts = sections.map(LayerVisualisation.render)
        let width = parts.map(\.width).max() ?? 1
        let height = parts.map(\.height).reduce(0, +) + LayerVisualisation.sectionGap * max(parts.count - 1, 0)
        var pixels = [UInt8](repeating: 255, count: width * height * 3)
        var top = 0
        for part in parts {
            for y in 0..<part.height {
                let source = y * part.width * 3
                let destination = ((top + y) * width) * 3
                pixels.replaceSubrange(destination..<(destination + part.width * 3), with: part.pixels[source..<(source + part.width * 3)])
            }
            top += part.height + LayerVisualisation.sectionGap
        }
        return RasterImage(width: width, height: height, channels: 3, pixels: pixels)
    }

    /// An SVG page: each section's title above its grid (embedded as a PNG).
    public func svg() throws -> String {
        var body = ""
        var top = 10
        var width = 320
        for section in sections {
            let picture = LayerVisualisation.render(section)
            let png = try PNGCodec.encode(picture)
            body += "<text x=\"10\" y=\"\(top + 14)\" font-size=\"14\" fill=\"#111\">\(LineChart.escape(section.title))</text>\n"
            body += "<image x=\"10\" y=\"\(top + 22)\" width=\"\(picture.width)\" height=\"\(picture.height)\" "
                + "style=\"image-rendering:pixelated\" href=\"data:image/png;base64,\(Data(png).base64EncodedString())\"/>\n"
            top += 22 + picture.height + LayerVisualisation.sectionGap
            width = max(width, picture.width + 20, section.title.count * 8 + 20)
        }
        return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(top)\" "
            + "viewBox=\"0 0 \(width) \(top)\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
            + "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n" + body + "</svg>\n"
    }

    /// Writes the picture: SVG when `path` ends in .svg, else PNG.
    public func write(to path: String) throws {
        if path.lowercased().hasSuffix(".svg") {
            do {
                try svg().write(toFile: path, atomically: true, encoding: .utf8)
            } catch let error as MonitoringError {
                throw error
            } catch {
                throw MonitoringError("cannot write \(path) (\(error.localizedDescription)); check that the folder exists and is writable")
            }
        } else {
            try PNGCodec.write(image(), to: path)
        }
    }

    static func colour(_ value: Float, _ palette: Palette) -> (Float, Float, Float) {
        switch palette {
        case .direct:
            return (value, value, value)
        case .diverging(let scale):
            let t = max(min(value / max(scale, 1e-12), 1), -1)
            // White at zero, towards red (positive) or blue (negative).
            return t >= 0 ? (1, 1 - 0.85 * t, 1 - 0.85 * t) : (1 + 0.85 * t, 1 + 0.85 * t, 1)
        case .sequential(let low, let high):
            let t = max(min((value - low) / max(high - low, 1e-12), 1), 0)
            return LayerVisualisation.viridis(t)
        }
    }

    /// A few anchor colours of the viridis map, interpolated: perceptually even and readable in grey.
    static func viridis(_ t: Float) -> (Float, Float, Float) {
        let anchors: [(Float, Float, Float)] = [
            (0.267, 0.005, 0.329), (0.283, 0.141, 0.458), (0.254, 0.265, 0.530), (0.207, 0.372, 0.553),
            (0.164, 0.471, 0.558), (0.128, 0.567, 0.551), (0.135, 0.659, 0.518), (0.267, 0.749, 0.441),
            (0.478, 0.821, 0.318), (0.741, 0.873, 0.150), (0.993, 0.906, 0.144),
        ]
        let position = t * Float(anchors.count - 1)
        let index = min(Int(position), anchors.count - 2)
        let f = position - Float(index)
        let a = anchors[index], b = anchors[index + 1]
        return (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f, a.2 + (b.2 - a.2) * f)
    }

    private static func byte(_ value: Float) -> UInt8 {
        UInt8(max(min((value * 255).rounded(), 255), 0))
    }
}
