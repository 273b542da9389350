import ArgumentParser
import CommandLineSupport
import Training

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A trained model rewritten for other uses.",
        discussion: """
            --fully-convolutional turns the model's dense layers into the convolutions they equal (a dense layer \
            on C x H x W becomes an H x W convolution, the next ones 1 x 1), so that `cnn predict --input-size H W` \
            slides it over larger images in one pass. It writes OUT/config.yaml and OUT/checkpoints/step-N.
            """)

    @Flag(help: "Turn dense layers into convolutions.") var fullyConvolutional = false
    @Argument(help: "A checkpoint directory (runs/NAME/checkpoints/step-...).") var checkpoint: String
    @Option(help: "The config (default: config.yaml of the checkpoint's run).") var config: String?
    @Option(help: "The directory to write.") var out: String

    func validate() throws {
        if !fullyConvolutional { throw ValidationError("say which conversion: --fully-convolutional") }
    }

    func run() throws {
        try ProcessSetup.prepare()
        let written = try FullyConvolutionalExport.run(checkpoint: checkpoint, configPath: config, out: out)
        print("wrote \(out)/config.yaml and \(written); predict on larger images with "
            + "`cnn predict --checkpoint \(written) --input-size H W IMAGE`")
    }
}
