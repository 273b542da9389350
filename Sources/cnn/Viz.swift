import ArgumentParser
import CommandLineSupport
import Foundation
import Monitoring
import Training

struct Viz: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The first convolution's filters and a sample's feature maps at a layer, as an image grid (PNG or SVG).")

    @Option(help: "A checkpoint directory (runs/NAME/checkpoints/step-...).") var checkpoint: String
    @Option(help: "The config (default: config.yaml of the checkpoint's run).") var config: String?
    @Option(help: "The layer whose feature maps to show: its index (as in `cnn summary`), layers[N], or convN (default: conv1).")
    var layer: String?
    @Option(help: "The input: a PNG/PGM/PPM file or IDX-FILE:N (default: sample --index of the run's test set).") var image: String?
    @Option(help: "Test-set sample to show when no --image is given.") var index: Int = 0
    @Option(name: .shortAndLong, help: "Output file: .png (libpng) or .svg (with titles). Default: viz-layer-NAME.png.") var output: String?

    func validate() throws {
        if index < 0 { throw ValidationError("--index must not be negative, got \(index)") }
    }

    func run() throws {
        try ProcessSetup.prepare()
        let model = try CheckpointModel(checkpoint: checkpoint, configPath: config)
        let input: [Float]
        let title: String
        if let image {
            let reference = ImageReference(image)
            input = try model.input(for: reference)
            title = reference.description + (reference.label().map { " (\(model.className($0)))" } ?? "")
        } else {
            let test = try DataSource.load(model.config).test
            guard index < test.count else {
                throw ValidationError("--index \(index) is past the \(test.count) test samples of \(test.name)")
            }
            var pixels = [Float](repeating: 0, count: test.sampleSize)
            var label: Int32 = 0
            pixels.withUnsafeMutableBufferPointer { test.copyBatch([index], images: $0.baseAddress!, labels: &label) }
            input = pixels
            title = "\(test.name) sample \(index) (\(model.className(Int(label))))"
        }
        let picture = try LayerVisualisation.make(model: model, layer: layer, input: input, inputTitle: title)
        let path = output ?? "viz-layer-\(layer ?? "conv1").png"
        try picture.write(to: path)
        print("wrote \(path): " + picture.sections.map(\.title).joined(separator: "; "))
    }
}
