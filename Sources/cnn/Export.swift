import ArgumentParser
import Checkpoint
import CommandLineSupport
import Foundation
import ModelExport
import Training

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Writes a trained model as an ONNX inference graph or as a plain safetensors weights file.",
        discussion: """
            The ONNX file (opset \(ONNXExport.opset)) takes "input" [N, C, H, W], normalised as in training, and gives \
            "logits" [N, classes]; batch normalisation uses the running statistics and dropout is left out. Its weights \
            keep the checkpoint's names. The safetensors file holds the weights and running statistics as PyTorch \
            names them, for load_state_dict or --init. A model with a layer ONNX cannot express is refused, naming the layer.
            """)

    @Option(help: "A checkpoint directory (runs/NAME/checkpoints/step-...) or a .safetensors weights file.") var checkpoint: String
    @Option(help: "The config (default for a checkpoint: config.yaml of its run; required for a weights file).") var config: String?
    @Option(help: "Where to write the ONNX model.") var onnx: String?
    @Option(help: "Where to write the weights as safetensors.") var safetensors: String?

    func validate() throws {
        if onnx == nil && safetensors == nil { throw ValidationError("say what to write: --onnx OUT.onnx and/or --safetensors OUT.safetensors") }
    }

    func run() throws {
        let model = try TrainedModel.load(checkpoint, configPath: config)
        let network = model.network
        // Both outputs are made before either is written, so a refused layer leaves no half-export.
        let onnxData = try onnx.map { _ in try ONNXExport.data(of: network, producerVersion: Version.current) }
        if let onnx, let onnxData {
            try onnxData.write(to: URL(fileURLWithPath: onnx), options: .atomic)
            let input = network.inputShape.dimensions.map(String.init).joined(separator: ", ")
            print("wrote \(onnx): ONNX opset \(ONNXExport.opset), \(network.parameterCount) parameters, input [N, \(input)], "
                + "output [N, \(network.outputShape.count)]")
        }
        if let safetensors {
            let tensors = model.state.modelTensors()
            try SafeTensors.write(tensors, metadata: ["format": "pt"], to: safetensors)
            print("wrote \(safetensors): \(tensors.count) tensors")
        }
    }
}
