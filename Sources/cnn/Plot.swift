import ArgumentParser
import Monitoring

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "SVG charts of a run: training loss, training and test accuracy, and throughput against steps.")

    @Argument(help: "A run directory (the --run-dir of cnn-coord) holding metrics.jsonl.") var runDirectory: String
    @Option(name: .shortAndLong, help: "The SVG file to write (default: RUN_DIR/training.svg).") var output: String?

    func run() throws {
        let path = try RunPlot.write(runDirectory: runDirectory, output: output)
        print("wrote \(path); open it in a browser")
    }
}
