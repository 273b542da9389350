import ArgumentParser
import CommandLineSupport
import ModelDescription
import Training

struct CNNTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cnn",
        abstract: "Tools for models and runs of the distributed CNN trainer.",
        version: Version.current,
        subcommands: [Summary.self, Evaluate.self, Predict.self, Plot.self, Viz.self, Bench.self, Keygen.self, DataCommand.self])
}

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Layers, output shapes, parameters, FLOPs and training memory of a config's model.")

    @Argument(help: "A YAML config.") var config: String
    @Flag(help: "The same figures as one JSON object.") var json = false

    func run() throws {
        let config = try TrainingConfig.load(path: self.config)
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
