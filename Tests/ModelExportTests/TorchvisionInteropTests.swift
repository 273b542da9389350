import CNN
import Checkpoint
import Foundation
import ModelDescription
import TestSupport
import Training
import XCTest

/// The zoo against torchvision: its `state_dict` loads into our models by name, gives its logits,
/// and ours loads back into torchvision with `strict=True`.
///
/// The suite compares ResNet-18 at full size (224x224, batch 2); AlexNet, GoogLeNet, ResNet-50 and
/// VGG-16 (553 MB of weights) are compared too with
/// `CNN_TORCHVISION_ALL=1 swift test --filter TorchvisionInteropTests` (about a minute).
final class TorchvisionInteropTests: XCTestCase {
    static var comparedModels: [String] {
        ProcessInfo.processInfo.environment["CNN_TORCHVISION_ALL"] == "1"
            ? ["resnet18", "alexnet", "googlenet", "resnet50", "vgg16"] : ["resnet18"]
    }

    /// Random weights, random batch-norm affine parameters and running statistics, eval mode; the
    /// state_dict as safetensors, a random input and torchvision's logits as raw Float32.
    /// First, every torchvision zoo model's state_dict keys and shapes (built on the meta device:
    /// no weights, no time), one "keys NAME KEY D0,D1,..." line each.
    static let torchvisionScript = """
        import sys, torch, torchvision
        from safetensors.torch import save_file
        for name in ["alexnet", "vgg16", "resnet18", "resnet34", "resnet50", "googlenet"]:
            with torch.device("meta"):
                kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
                model = getattr(torchvision.models, name)(weights=None, **kwargs)
            for key, tensor in model.state_dict().items():
                print("keys", name, key, ",".join(str(d) for d in tensor.shape))
        torch.manual_seed(0)
        folder = sys.argv[1]
        for name in sys.argv[2:]:
            # GoogLeNet's auxiliary heads only train; torchvision drops them from its published model too.
            kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
            model = getattr(torchvision.models, name)(weights=None, **kwargs)
            with torch.no_grad():
                for module in model.modules():
                    if isinstance(module, torch.nn.BatchNorm2d):
                        module.weight.uniform_(0.5, 1.5)
                        module.bias.uniform_(-0.5, 0.5)
                        module.running_mean.uniform_(-0.5, 0.5)
                        module.running_var.uniform_(0.5, 1.5)
                        module.num_batches_tracked.fill_(7)
                model.eval()
                x = torch.randn(2, 3, 224, 224)
                logits = model(x)
            save_file(model.state_dict(), f"{folder}/{name}.safetensors")
            x.numpy().tofile(f"{folder}/{name}.input")
            logits.numpy().tofile(f"{folder}/{name}.logits")
            print(name, tuple(logits.shape))
        """

    /// Loads our checkpoint's weights into a fresh torchvision model with strict=True and checks
    /// that it gives the same logits as before.
    static let strictLoadScript = """
        import sys, numpy as np, torch, torchvision
        from safetensors.torch import load_file
        folder = sys.argv[1]
        for name in sys.argv[2:]:
            kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
            model = getattr(torchvision.models, name)(weights=None, **kwargs)
            model.load_state_dict(load_file(f"{folder}/{name}.ours.safetensors"), strict=True)
            model.eval()
            x = torch.from_numpy(np.fromfile(f"{folder}/{name}.input", dtype=np.float32).reshape(2, 3, 224, 224))
            with torch.no_grad():
                logits = model(x).numpy()
            before = np.fromfile(f"{folder}/{name}.logits", dtype=np.float32).reshape(logits.shape)
            assert np.array_equal(logits, before), (name, np.abs(logits - before).max())
            print(name, "loaded strictly, same logits")
        """

    /// The zoo's six torchvision models have torchvision's state_dict keys and shapes, key for key;
    /// torchvision's weights give torchvision's logits in ours; our checkpoint loads back strictly.
    func testTorchvisionStateDictsLoadAsTheyAreGiveItsLogitsAndOurCheckpointsLoadBackStrictly() throws {
        try ExportSupport.requirePython()
        let folder = try LocalCluster.temporaryDirectory("torchvision")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let models = Self.comparedModels
        let made = try PythonEnvironment.run(Self.torchvisionScript, arguments: [folder] + models, seconds: 600)
        XCTAssertEqual(made.status, 0, made.combined)
        guard made.status == 0 else { return }

        var theirs: [String: [String]] = [:]
        for line in made.output.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 4, parts[0] == "keys" else { continue }
            theirs[parts[1], default: []].append("\(parts[2]) [\(parts[3])]")
        }
        for name in ["alexnet", "vgg16", "resnet18", "resnet34", "resnet50", "googlenet"] {
            XCTAssertEqual(Self.tensorList(try ModelZoo.model(name)), (theirs[name] ?? []).sorted(), name)
        }

        for name in models {
            let state = try ExportSupport.model("model: {zoo: \(name)}\n")
            let report = try state.loadInitialWeights(from: "\(folder)/\(name).safetensors", skipMismatched: false)
            XCTAssertTrue(report.skipped.isEmpty && report.missingState.isEmpty && report.unused.isEmpty, "\(name): \(report.lines)")
            let input = try ExportSupport.readFloats("\(folder)/\(name).input")
            let ours = ExportSupport.logits(state.network, input, batch: 2)
            let theirLogits = try ExportSupport.readFloats("\(folder)/\(name).logits")
            let error = ExportSupport.relativeError(ours, theirLogits)
            XCTAssertLessThanOrEqual(error, 1e-4, "\(name): our logits differ from torchvision's by \(error) relative")
            print("\(name): torchvision's weights, our logits vs torchvision's: max relative difference \(error)")
            try SafeTensors.write(state.modelTensors(), metadata: ["format": "pt"], to: "\(folder)/\(name).ours.safetensors")
        }
        let loaded = try PythonEnvironment.run(Self.strictLoadScript, arguments: [folder] + models, seconds: 600)
        XCTAssertEqual(loaded.status, 0, loaded.combined)
    }

    /// "name [d0,d1,...]" of every tensor in checkpoint order, without allocating the weights.
    static func tensorList(_ spec: ModelSpec) -> [String] {
        var shape = spec.input
        var parameters: [String] = [], state: [String] = []
        for (index, layerSpec) in spec.layers.enumerated() {
            let layer = try! layerSpec.makeLayer(input: shape, name: "model.layers[\(index)]")
            let prefix = layerSpec.tensorName ?? "\(index)"
            parameters += layer.parameterSpecs.map { "\(prefix).\($0.name) [\($0.shape.map(String.init).joined(separator: ","))]" }
            state += layer.stateSpecs.map { "\(prefix).\($0.name) [\($0.shape.map(String.init).joined(separator: ","))]" }
            shape = layer.outputShape
        }
        // torchvision's state_dict interleaves parameters and buffers module by module; compare as sets in order of names.
        return (parameters + state).sorted()
    }
}
