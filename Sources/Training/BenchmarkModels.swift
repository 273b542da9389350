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

    /// ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2) on 3x32x32: three stages of three
    /// basic blocks with 16, 32 and 64 filters, 1x1 projection shortcuts where the shape changes.
    public static let resnet20: ModelSpec? = {
        var layers: [LayerSpec] = [convolution(16, 3, padding: 1, bias: false), .batchNorm(BatchNormSpec()), .relu]
        for (stage, filters) in [16, 32, 64].enumerated() {
            for block in 0..<3 {
                layers.append(.basicBlock(filters: filters, stride: stage > 0 && block == 0 ? 2 : 1, projection: .auto))
            }
        }
        layers += [.globalAveragePool, .flatten, .dense(units: 10, bias: true)]
        return ModelSpec(input: FeatureShape(channels: 3, height: 32, width: 32), layers: layers)
    }()

    /// AlexNet on 3x227x227 in its single-tower form (no grouped convolutions), with local response
    /// normalisation after the first two convolutions and dropout after the first two dense
    /// layers: 62,378,344 parameters.
    public static let alexnet: ModelSpec? = {
        // PyTorch's convention divides alpha by the window size; 5e-4 is the paper's 1e-4.
        let normalisation = LayerSpec.localResponseNorm(LocalResponseNormSpec(size: 5, alpha: 5e-4, beta: 0.75, k: 2))
        let pool = LayerSpec.maxPool(size: 3, stride: 2, padding: 0)
        var layers: [LayerSpec] = [convolution(96, 11, stride: 4), .relu, normalisation, pool]
        layers += [convolution(256, 5, padding: 2), .relu, normalisation, pool]
        layers += [convolution(384, 3, padding: 1), .relu, convolution(384, 3, padding: 1), .relu,
                   convolution(256, 3, padding: 1), .relu, pool]
        layers += [.flatten, .dense(units: 4096, bias: true), .relu, .dropout(probability: 0.5),
                   .dense(units: 4096, bias: true), .relu, .dropout(probability: 0.5), .dense(units: 1000, bias: true)]
        return ModelSpec(input: FeatureShape(channels: 3, height: 227, width: 227), layers: layers)
    }()

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
