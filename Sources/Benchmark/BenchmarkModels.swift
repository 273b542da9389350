import CNN
import ModelDescription

/// The models `cnn bench` measures. LeNet-5, ResNet-20 and AlexNet (2012) come from the model zoo
/// (`ModelZoo`); `scripts/pytorch_bench.py` builds the same networks layer for layer.
public enum BenchmarkModels {
    private static func convolution(_ filters: Int, _ kernel: Int, padding: Int = 0) -> LayerSpec {
        .convolution(ConvolutionSpec(filters: filters, kernel: kernel, padding: .explicit(padding)))
    }

    /// The plain Fashion-MNIST CNN the speed targets name (the one PyTorch's reference figures
    /// use): two 3x3 convolution and pooling stages (32 and 64 filters), then dense 128 and 10;
    /// 421,642 parameters. configs/fashion-mnist.yaml trains a larger variant (batch
    /// normalisation, dropout) for accuracy.
    public static let fashionMNIST = ModelSpec(
        input: FeatureShape(channels: 1, height: 28, width: 28),
        layers: [
            convolution(32, 3, padding: 1), .relu, .maxPool(size: 2, stride: nil, padding: 0),
            convolution(64, 3, padding: 1), .relu, .maxPool(size: 2, stride: nil, padding: 0),
            .flatten,
            .dense(units: 128, bias: true), .relu,
            .dense(units: 10, bias: true),
        ])

    /// The spec of a benchmark model: the zoo's with its default options, or the Fashion-MNIST model.
    /// "alexnet" is the paper's (zoo `alexnet2012`, 227x227, LRN), which the benchmark has always
    /// measured and `scripts/pytorch_bench.py` builds; the zoo's `alexnet` is torchvision's.
    static func spec(_ name: String) throws -> ModelSpec {
        switch name {
        case "fashion-mnist": return fashionMNIST
        case "alexnet": return try ModelZoo.model("alexnet2012")
        default: return try ModelZoo.model(name)
        }
    }
}
