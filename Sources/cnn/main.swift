import ArgumentParser
import CNN
import ConfigReading
import CommandLineSupport
import ModelDescription
import Training

struct CNNTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cnn",
        abstract: "Tools for models and runs of the distributed CNN trainer.",
        version: Version.current,
        subcommands: [Summary.self, Evaluate.self, Predict.self, Convert.self, Plot.self, Viz.self, Bench.self, Keygen.self])
}

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Layers, output shapes, parameters, FLOPs and training memory of a config's model.")

    @Argument(help: "A YAML config.") var config: String
    @Flag(help: "The same figures as one JSON object.") var json = false
    @Flag(help: "The model with its dense layers as convolutions (`cnn convert --fully-convolutional`).")
    var fullyConvolutional = false
    @Option(parsing: .upToNextOption, help: "H W: the (fully convolutional) model on H x W images.") var inputSize: [Int] = []

    func validate() throws {
        if !inputSize.isEmpty && (inputSize.count != 2 || inputSize.contains { $0 < 1 }) {
            throw ValidationError("--input-size takes two positive numbers, H W, got \(inputSize)")
        }
    }

    func run() throws {
        var config = try TrainingConfig.load(path: self.config)
        if fullyConvolutional {
            do {
                config.model = try FullyConvolutionalModel(converting: config.model).model
            } catch let error as ModelError {
                throw ConfigError(file: self.config, line: nil, message: "cannot make the model fully convolutional: \(error)")
            }
        }
        if inputSize.count == 2 {
            config.model.input.height = inputSize[0]
            config.model.input.width = inputSize[1]
        }
        let summary = try ModelSummary(config: config)
        print(json ? summary.json : summary.table)
    }
}

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval", abstract: "Test accuracy of a checkpoint, computed in this process.")

    @Option(help: "A checkpoint directory (runs/NAME/checkpoints/step-...).") var checkpoint: String
    @Option(help: "The config (default: config.yaml of the checkpoint's run).") var config: String?

    func run() throws {
        try ProcessSetup.prepare()
        let report = try CheckpointEvaluation.run(checkpoint: checkpoint, configPath: config)
        print(report.text)
    }
}

ExitCodes.main(CNNTool.self)
