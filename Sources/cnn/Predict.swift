import ArgumentParser
import CommandLineSupport
import Monitoring
import Training

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The most probable classes of images under a checkpoint's model.",
        discussion: """
            IMAGE is a PNG, PGM or PPM file of the model's input size, or FILE:N for sample N (from 0) of an \
            MNIST-format IDX images file, gzipped or not; for IDX samples with a labels file beside them the \
            true class is shown too. Pixels are normalised as the run's data set was.
            """)

    @Option(help: "A checkpoint directory (runs/NAME/checkpoints/step-...).") var checkpoint: String
    @Option(help: "The config (default: config.yaml of the checkpoint's run).") var config: String?
    @Option(help: "How many classes to show per image.") var top: Int = 5
    @Option(parsing: .upToNextOption,
            help: "H W: run a fully convolutional model (`cnn convert --fully-convolutional`) on H x W images; prints the grid of top classes and the averaged prediction.")
    var inputSize: [String] = []
    @Argument(help: "Images: FILE.png, FILE.pgm, FILE.ppm or IDX-FILE:N.") var images: [String] = []

    /// The images, with those ArgumentParser read as values of --input-size.
    private var allImages: [String] { ((try? InputSizeOption(inputSize).following) ?? []) + images }

    func validate() throws {
        if allImages.isEmpty { throw ValidationError("give at least one IMAGE (a PNG/PGM/PPM file or IDX-FILE:N)") }
        if top < 1 { throw ValidationError("--top must be at least 1, got \(top)") }
        _ = try InputSizeOption(inputSize)
    }

    func run() throws {
        try ProcessSetup.prepare()
        if let size = try InputSizeOption(inputSize).size {
            let model = try CheckpointModel(checkpoint: checkpoint, configPath: config, inputSize: size)
            let texts = try allImages.map { try GridPrediction.run(model, image: ImageReference($0)).text(classNames: model.classNames, top: top) }
            print(texts.joined(separator: "\n\n"))
            return
        }
        let model = try CheckpointModel(checkpoint: checkpoint, configPath: config)
        var texts: [String] = []
        for image in allImages {
            let prediction = try Prediction.run(model, image: ImageReference(image), top: top)
            texts.append(prediction.text(classNames: model.classNames))
        }
        print(texts.joined(separator: "\n\n"))
    }
}
