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
        subcommands: [Summary.self, Evaluate.self, Predict.self, Convert.self, Export.self, Plot.self, Viz.self, Bench.self, Keygen.self,
                      DataCommand.self])
}

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Layers, output shapes, parameters, FLOPs and training memory of a config's model.")

    @Argument(help: "A YAML config.") var config: String?
    @Flag(help: "The same figures as one JSON object.") var json = false
    @Flag(help: "The model with its dense layers as convolutions (`cnn convert --fully-convolutional`).")
    var fullyConvolutional = false
    @Option(parsing: .upToNextOption, help: "H W: the model on H x W images (a fully convolutional one).") var inputSize: [String] = []

    /// The config, wherever ArgumentParser put it.
    private func configPath() throws -> String {
        let paths = (config.map { [$0] } ?? []) + (try InputSizeOption(inputSize).following)
        guard paths.count == 1 else { throw ValidationError(paths.isEmpty ? "give a YAML config" : "give one config, found \(paths)") }
        return paths[0]
    }

    func validate() throws { _ = try configPath() }

    func run() throws {
        let path = try configPath()
        var config = try TrainingConfig.load(path: path)
        if fullyConvolutional {
            do {
                config.model = try FullyConvolutionalModel(converting: config.model).model
            } catch let error as ModelError {
                throw ConfigError(file: path, line: nil, message: "cannot make the model fully convolutional: \(error)")
            }
        }
        if let size = try InputSizeOption(inputSize).size {
            config.model.input.height = size.height
            config.model.input.width = size.width
        }
        let summary = try ModelSummary(config: config)
        print(json ? summary.json : summary.table)
    }
}

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval", abstract: "Test accuracy of a checkpoint, computed in this process.")

    @Option(help: "A checkpoint directory (runs/NAME/checkpoints/step-...) or a .safetensors weights file (with --config).")
    var checkpoint: String
    @Option(help: "The config (default: config.yaml of the checkpoint's run; required for a weights file).") var config: String?

    func run() throws {
        try ProcessSetup.prepare()
        let report = try CheckpointEvaluation.run(checkpoint: checkpoint, configPath: config)
        print(report.text)
    }
}

ExitCodes.main(CNNTool.self)
