import CNN

/// The models `cnn bench` measures, written out layer by layer so that `scripts/pytorch_bench.py`
/// can build the very same networks.
public enum BenchmarkModels {
    private static func convolution(_ filters: Int, _ kernel: Int, stride: Int = 1, padding: Int = 0, bias: Bool = true) -> LayerSpec {
        .convolution(ConvolutionSpec(filters: filters, kernel: kernel, stride: stride, padding: .explicit(padding), bias: bias))
    }

    /// LeNet-5 on 1x32x32: 61,706 parameters.
    public static let lenet5 = ModelSpec(
        input: FeatureShape(channels: 1, height: 32, width: 32),
        layers: [
            convolution(6, 5), .relu, .maxPool(size: 2, stride: nil, padding: 0),
            convolution(16, 5), .relu, .maxPool(size: 2, stride: nil, padding: 0),
            .flatten,
            .dense(units: 120, bias: true), .relu,
            .dense(units: 84, bias: true), .relu,
            .dense(units: 10, bias: true),
        ])

    /// The Fashion-MNIST model of configs/fashion-mnist.yaml: two 3x3 convolution and pooling
    /// stages (32 and 64 filters), then dense 128 and 10.
    public static let fashionMNIST = ModelSpec(
        input: FeatureShape(channels: 1, height: 28, width: 28),
        layers: [
            convolution(32, 3, padding: 1), .relu, .maxPool(size: 2, stride: nil, padding: 0),
            convolution(64, 3, padding: 1), .relu, .maxPool(size: 2, stride: nil, padding: 0),
            .flatten,
            .dense(units: 128, bias: true), .relu,
            .dense(units: 10, bias: true),
        ])

    /// ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2); nil until the engine has batch
    /// normalisation, residual blocks and global average pooling.
    public static let resnet20: ModelSpec? = nil

    /// AlexNet on 3x227x227 in its single-tower form (no grouped convolutions): 62,378,344
    /// parameters; nil until the engine has local response normalisation and dropout.
    public static let alexnet: ModelSpec? = nil

    static func missingLayers(for name: String) -> String {
        switch name {
        case "resnet20":
            return "unavailable in this build: it needs batch normalisation, residual blocks and global average pooling, "
                + "which the engine does not have yet"
        default:
            return "unavailable in this build: it needs local response normalisation and dropout, which the engine does not have yet"
        }
    }
}
