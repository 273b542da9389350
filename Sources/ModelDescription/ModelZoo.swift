import CNN
import ConfigReading

/// Options a zoo model accepts in a config (`model: {zoo: resnet20, classes: 10, input: [3, 32, 32]}`);
/// nil keeps the model's default. Which keys a model takes is in its `ZooEntry.optionKeys`.
public struct ZooOptions: Sendable, Equatable {
    /// Outputs of the last layer.
    public var classes: Int?
    public var input: FeatureShape?
    /// `batch_norm`: batch normalisation after each convolution (lenet5, vgg16).
    public var batchNorm: Bool?
    /// `dropout`: probability of the classifier's dropout layers (alexnet, vgg16, googlenet).
    public var dropout: Double?
    /// `activation`: `relu` or `tanh` (lenet5).
    public var activation: String?
    /// `pooling`: `max` or `average` (lenet5).
    public var pooling: String?
    /// `first_padding`: padding of the first convolution (lenet5).
    public var firstPadding: Int?
    /// `depth`: 6n + 2 layers (resnet20 family: 20, 32, 44, 56, 110).
    public var depth: Int?
    /// `lrn`: local response normalisation after the first two convolutions (alexnet).
    public var localResponseNorm: Bool?

    public init(classes: Int? = nil, input: FeatureShape? = nil) {
        self.classes = classes
        self.input = input
    }
}

/// One model of the zoo: what it is, its defaults and what its published parameter count is.
public struct ZooEntry: Sendable {
    /// The name used in configs: `model: resnet18`.
    public var name: String
    /// One line: the paper or library layout it follows.
    public var title: String
    public var defaultInput: FeatureShape
    public var defaultClasses: Int
    /// Keys the entry accepts besides `zoo`, `classes` and `input`.
    public var optionKeys: [String]
    /// Parameters with the default options, as published (and checked in the tests).
    public var parameters: Int
    fileprivate var build: @Sendable (ResolvedZooOptions) throws -> [LayerSpec]
}

/// Options after defaults, as the builders read them.
struct ResolvedZooOptions {
    var classes: Int
    var input: FeatureShape
    var given: ZooOptions
}

/// Models from the literature, laid out as their papers or torchvision build them.
///
/// The torchvision models (alexnet, vgg16, resnet18/34/50, googlenet) name and lay out their tensors
/// as torchvision does (`features.0.weight`, `layer1.0.conv1.weight`, `inception3a.branch2.1.bn.bias`,
/// `fc.weight`; see `ModuleNaming`), so a torchvision `state_dict` saved with safetensors loads by
/// `--init` as it is, and a checkpoint loads into the torchvision model with
/// `load_state_dict(strict=True)` (googlenet: built with `aux_logits=False`). The others (lenet5,
/// resnet20, alexnet2012) have no torchvision counterpart and are named as a flat `nn.Sequential`
/// of their layers ("0.weight", "4.conv1.weight").
public enum ModelZoo {
    public static let entries: [ZooEntry] = [
        ZooEntry(
            name: "lenet5",
            title: "LeNet-5 (LeCun et al. 1998) with ReLU and max pooling: conv 6@5x5, pool, conv 16@5x5, pool, FC 120, 84, classes",
            defaultInput: FeatureShape(channels: 1, height: 32, width: 32), defaultClasses: 10,
            optionKeys: ["activation", "pooling", "batch_norm", "first_padding"], parameters: 61_706, build: lenet5),
        ZooEntry(
            name: "alexnet",
            title: "AlexNet as torchvision builds it (Krizhevsky 2014, \"one weird trick\"): 64/192/384/256/256 filters, "
                + "no LRN, dropout before the first two FC layers, 224x224 input",
            defaultInput: FeatureShape(channels: 3, height: 224, width: 224), defaultClasses: 1000,
            optionKeys: ["dropout"], parameters: 61_100_840, build: alexnet),
        ZooEntry(
            name: "alexnet2012",
            title: "AlexNet (Krizhevsky et al. 2012), one tower without grouping, 227x227 input, LRN after conv1 and conv2",
            defaultInput: FeatureShape(channels: 3, height: 227, width: 227), defaultClasses: 1000,
            optionKeys: ["dropout", "lrn"], parameters: 62_378_344, build: alexnet2012),
        ZooEntry(
            name: "vgg16",
            title: "VGG-16 (Simonyan & Zisserman 2015, configuration D) as torchvision builds it",
            defaultInput: FeatureShape(channels: 3, height: 224, width: 224), defaultClasses: 1000,
            optionKeys: ["dropout", "batch_norm"], parameters: 138_357_544, build: vgg16),
        ZooEntry(
            name: "resnet18",
            title: "ResNet-18 (He et al. 2016) as torchvision builds it: BasicBlocks [2, 2, 2, 2]",
            defaultInput: FeatureShape(channels: 3, height: 224, width: 224), defaultClasses: 1000,
            optionKeys: [], parameters: 11_689_512, build: { try imagenetResNet($0, blocks: [2, 2, 2, 2], bottleneck: false) }),
        ZooEntry(
            name: "resnet34",
            title: "ResNet-34 (He et al. 2016) as torchvision builds it: BasicBlocks [3, 4, 6, 3]",
            defaultInput: FeatureShape(channels: 3, height: 224, width: 224), defaultClasses: 1000,
            optionKeys: [], parameters: 21_797_672, build: { try imagenetResNet($0, blocks: [3, 4, 6, 3], bottleneck: false) }),
        ZooEntry(
            name: "resnet50",
            title: "ResNet-50 (He et al. 2016) as torchvision builds it: Bottlenecks [3, 4, 6, 3], stride on the 3x3 (v1.5)",
            defaultInput: FeatureShape(channels: 3, height: 224, width: 224), defaultClasses: 1000,
            optionKeys: [], parameters: 25_557_032, build: { try imagenetResNet($0, blocks: [3, 4, 6, 3], bottleneck: true) }),
        ZooEntry(
            name: "resnet20",
            title: "ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2): 3 stages of 3 BasicBlocks, 16/32/64 filters, "
                + "1x1 projection shortcuts where the shape changes (option B)",
            defaultInput: FeatureShape(channels: 3, height: 32, width: 32), defaultClasses: 10,
            optionKeys: ["depth"], parameters: 272_474, build: cifarResNet),
        ZooEntry(
            name: "googlenet",
            title: "GoogLeNet (Szegedy et al. 2015) as torchvision builds it: conv+BN units, nine inception modules, "
                + "ceil-mode pooling, no auxiliary classifiers (they only train)",
            defaultInput: FeatureShape(channels: 3, height: 224, width: 224), defaultClasses: 1000,
            optionKeys: ["dropout"], parameters: 6_624_904, build: googlenet),
    ]

    /// The zoo's model names.
    public static var names: [String] { entries.map(\.name) }

    public static func entry(named name: String) -> ZooEntry? {
        entries.first { $0.name == name.lowercased() }
    }

    /// Builds a zoo model; throws a `ModelError` for an unknown name or impossible options.
    public static func model(_ name: String, options: ZooOptions = ZooOptions()) throws -> ModelSpec {
        guard let entry = entry(named: name) else {
            var message = "'\(name)' is not a model of the zoo"
            if let guess = closest(name, among: names) { message += " (did you mean '\(guess)'?)" }
            message += "; the zoo has \(names.joined(separator: ", "))"
            throw ModelError(layer: "model.zoo", message: message)
        }
        let input = options.input ?? entry.defaultInput
        let resolved = ResolvedZooOptions(classes: options.classes ?? entry.defaultClasses, input: input, given: options)
        guard resolved.classes >= 1 else { throw ModelError(layer: "model.classes", message: "must be at least 1") }
        return ModelSpec(input: input, layers: try entry.build(resolved))
    }
}

// MARK: - Builders

private func convolution(_ filters: Int, _ kernel: Int, stride: Int = 1, padding: Int = 0, bias: Bool = true) -> LayerSpec {
    .convolution(ConvolutionSpec(filters: filters, kernel: kernel, stride: stride, padding: .explicit(padding), bias: bias))
}

@Sendable private func lenet5(_ o: ResolvedZooOptions) throws -> [LayerSpec] {
    let activation: LayerSpec
    switch o.given.activation ?? "relu" {
    case "relu": activation = .relu
    case "tanh": activation = .tanh
    case let other: throw ModelError(layer: "model.activation", message: "must be relu or tanh, found '\(other)'")
    }
    let pool: LayerSpec
    switch o.given.pooling ?? "max" {
    case "max": pool = .maxPool(size: 2, stride: nil, padding: 0)
    case "average": pool = .averagePool(size: 2, stride: nil, padding: 0)
    case let other: throw ModelError(layer: "model.pooling", message: "must be max or average, found '\(other)'")
    }
    // The network was designed for 32x32 digits; a smaller input (28x28 MNIST) is padded by the
    // first convolution so that every later shape, and the parameter count, stay the same.
    let padding = o.given.firstPadding ?? max(0, (32 - min(o.input.height, o.input.width)) / 2)
    let norm = o.given.batchNorm ?? false
    var layers: [LayerSpec] = [convolution(6, 5, padding: padding)]
    if norm { layers.append(.batchNorm(BatchNormSpec())) }
    layers += [activation, pool, convolution(16, 5)]
    if norm { layers.append(.batchNorm(BatchNormSpec())) }
    layers += [activation, pool, .flatten, .dense(units: 120, bias: true)]
    if norm { layers.append(.batchNorm(BatchNormSpec())) }
    layers += [activation, .dense(units: 84, bias: true)]
    if norm { layers.append(.batchNorm(BatchNormSpec())) }
    layers += [activation, .dense(units: o.classes, bias: true)]
    return layers
}

/// torchvision's AlexNet: `features` (convolutions, ReLUs, pools), then `classifier`. torchvision's
/// adaptive average pool to 6x6 between them is the identity on 224x224 input (and on 227x227) and
/// is left out, as in vgg16.
@Sendable private func alexnet(_ o: ResolvedZooOptions) throws -> [LayerSpec] {
    let p = try dropoutProbability(o, default: 0.5)
    let pool = LayerSpec.maxPool(size: 3, stride: 2, padding: 0)
    let features: [LayerSpec] = [
        convolution(64, 11, stride: 4, padding: 2), .relu, pool, convolution(192, 5, padding: 2), .relu, pool,
        convolution(384, 3, padding: 1), .relu, convolution(256, 3, padding: 1), .relu, convolution(256, 3, padding: 1), .relu, pool,
    ]
    let classifier: [LayerSpec] = [
        .dropout(probability: p), .dense(units: 4096, bias: true), .relu,
        .dropout(probability: p), .dense(units: 4096, bias: true), .relu, .dense(units: o.classes, bias: true),
    ]
    return ModuleNaming.sequential("features", layers: features) + [.flatten] + ModuleNaming.sequential("classifier", layers: classifier)
}

/// The paper's AlexNet, laid out in the same two modules (`features`, `classifier`).
@Sendable private func alexnet2012(_ o: ResolvedZooOptions) throws -> [LayerSpec] {
    let p = try dropoutProbability(o, default: 0.5)
    // The paper's alpha = 1e-4 multiplies the plain sum of squares; PyTorch's convention divides
    // alpha by the size, so the same normalisation is alpha = 5 * 1e-4 here. k = 2 as in the paper.
    let lrn: [LayerSpec] = (o.given.localResponseNorm ?? true)
        ? [.localResponseNorm(LocalResponseNormSpec(size: 5, alpha: 5e-4, beta: 0.75, k: 2))] : []
    let pool = LayerSpec.maxPool(size: 3, stride: 2, padding: 0)
    var features: [LayerSpec] = [convolution(96, 11, stride: 4), .relu] + lrn + [pool]
    features += [convolution(256, 5, padding: 2), .relu] + lrn + [pool]
    features += [convolution(384, 3, padding: 1), .relu, convolution(384, 3, padding: 1), .relu, convolution(256, 3, padding: 1), .relu, pool]
    // "We use dropout in the first two fully-connected layers": on their outputs.
    let classifier: [LayerSpec] = [.dense(units: 4096, bias: true), .relu, .dropout(probability: p),
                                   .dense(units: 4096, bias: true), .relu, .dropout(probability: p), .dense(units: o.classes, bias: true)]
    return ModuleNaming.sequential("features", layers: features) + [.flatten] + ModuleNaming.sequential("classifier", layers: classifier)
}

@Sendable private func vgg16(_ o: ResolvedZooOptions) throws -> [LayerSpec] {
    let p = try dropoutProbability(o, default: 0.5)
    let norm = o.given.batchNorm ?? false
    var features: [LayerSpec] = []
    for (filters, count) in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)] {
        for _ in 0..<count {
            features.append(convolution(filters, 3, padding: 1))
            if norm { features.append(.batchNorm(BatchNormSpec())) }
            features.append(.relu)
        }
        features.append(.maxPool(size: 2, stride: 2, padding: 0))
    }
    // torchvision's adaptive average pool to 7x7 is the identity on 224x224 input and is left out.
    let classifier: [LayerSpec] = [.dense(units: 4096, bias: true), .relu, .dropout(probability: p),
                                   .dense(units: 4096, bias: true), .relu, .dropout(probability: p), .dense(units: o.classes, bias: true)]
    return ModuleNaming.sequential("features", layers: features) + [.flatten] + ModuleNaming.sequential("classifier", layers: classifier)
}

/// torchvision's ResNet: stem `conv1` `bn1` `relu` `maxpool`, stages `layer1`..`layer4` (each an
/// `nn.Sequential` of blocks), `avgpool`, `fc`.
@Sendable private func imagenetResNet(_ o: ResolvedZooOptions, blocks: [Int], bottleneck: Bool) throws -> [LayerSpec] {
    var layers = ModuleNaming.module("conv1", [convolution(64, 7, stride: 2, padding: 3, bias: false)])
        + ModuleNaming.module("bn1", [.batchNorm(BatchNormSpec())]) + ModuleNaming.module("relu", [.relu])
        + ModuleNaming.module("maxpool", [.maxPool(size: 3, stride: 2, padding: 1)])
    for (stage, count) in blocks.enumerated() {
        let filters = 64 << stage
        let stageBlocks: [LayerSpec] = (0..<count).map { index in
            let stride = stage > 0 && index == 0 ? 2 : 1
            return bottleneck ? .bottleneck(filters: filters, stride: stride, expansion: 4, projection: .auto)
                : .basicBlock(filters: filters, stride: stride, projection: .auto)
        }
        layers += ModuleNaming.sequential("layer\(stage + 1)", layers: stageBlocks)
    }
    layers += ModuleNaming.module("avgpool", [.globalAveragePool]) + [.flatten]
        + ModuleNaming.module("fc", [.dense(units: o.classes, bias: true)])
    return layers
}

@Sendable private func cifarResNet(_ o: ResolvedZooOptions) throws -> [LayerSpec] {
    let depth = o.given.depth ?? 20
    guard depth >= 8, (depth - 2) % 6 == 0 else {
        throw ModelError(layer: "model.depth", message: "must be 6n + 2 (20, 32, 44, 56, 110), found \(depth)")
    }
    let perStage = (depth - 2) / 6
    var layers: [LayerSpec] = [convolution(16, 3, padding: 1, bias: false), .batchNorm(BatchNormSpec()), .relu]
    for (stage, filters) in [16, 32, 64].enumerated() {
        for index in 0..<perStage {
            // Option B: a 1x1 projection (with batch norm) where the shape changes, the identity elsewhere.
            layers.append(.basicBlock(filters: filters, stride: stage > 0 && index == 0 ? 2 : 1, projection: .auto))
        }
    }
    layers += [.globalAveragePool, .flatten, .dense(units: o.classes, bias: true)]
    return layers
}

/// torchvision's GoogLeNet: `BasicConv2d` units (`conv`, `bn`, then ReLU as a function), inception
/// modules of four branches (`branch1` a unit, the others `nn.Sequential`s of units and a pool),
/// ceil-mode pools, `avgpool`, `dropout`, `fc`.
@Sendable private func googlenet(_ o: ResolvedZooOptions) throws -> [LayerSpec] {
    let p = try dropoutProbability(o, default: 0.2)
    // BasicConv2d: convolution without bias, batch norm (eps 0.001), ReLU.
    func unit(_ filters: Int, _ kernel: Int, stride: Int = 1, padding: Int = 0) -> [LayerSpec] {
        ModuleNaming.module("conv", [convolution(filters, kernel, stride: stride, padding: padding, bias: false)])
            + ModuleNaming.module("bn", [.batchNorm(BatchNormSpec(epsilon: 0.001))]) + [.relu]
    }
    func pool(_ size: Int) -> LayerSpec { .maxPool(size: size, stride: 2, padding: 0, ceilMode: true) }
    func inception(_ name: String, _ c1: Int, _ c3r: Int, _ c3: Int, _ c5r: Int, _ c5: Int, _ poolProjection: Int) -> [LayerSpec] {
        // torchvision's third branch uses a 3x3 convolution where the paper has 5x5 (kept for
        // compatibility with its published weights); so does this one, to match its tensors.
        ModuleNaming.module(name, [.concat(branches: [
            unit(c1, 1),
            ModuleNaming.sequential("", [unit(c3r, 1), unit(c3, 3, padding: 1)]),
            ModuleNaming.sequential("", [unit(c5r, 1), unit(c5, 3, padding: 1)]),
            ModuleNaming.sequential("", [[.maxPool(size: 3, stride: 1, padding: 1, ceilMode: true)], unit(poolProjection, 1)]),
        ])])
    }
    var layers = ModuleNaming.module("conv1", unit(64, 7, stride: 2, padding: 3)) + ModuleNaming.module("maxpool1", [pool(3)])
    layers += ModuleNaming.module("conv2", unit(64, 1)) + ModuleNaming.module("conv3", unit(192, 3, padding: 1))
        + ModuleNaming.module("maxpool2", [pool(3)])
    layers += inception("inception3a", 64, 96, 128, 16, 32, 32) + inception("inception3b", 128, 128, 192, 32, 96, 64)
        + ModuleNaming.module("maxpool3", [pool(3)])
    layers += inception("inception4a", 192, 96, 208, 16, 48, 64) + inception("inception4b", 160, 112, 224, 24, 64, 64)
        + inception("inception4c", 128, 128, 256, 24, 64, 64) + inception("inception4d", 112, 144, 288, 32, 64, 64)
        + inception("inception4e", 256, 160, 320, 32, 128, 128) + ModuleNaming.module("maxpool4", [pool(2)])
    layers += inception("inception5a", 256, 160, 320, 32, 128, 128) + inception("inception5b", 384, 192, 384, 48, 128, 128)
    layers += ModuleNaming.module("avgpool", [.globalAveragePool]) + [.flatten]
        + ModuleNaming.module("dropout", [.dropout(probability: p)]) + ModuleNaming.module("fc", [.dense(units: o.classes, bias: true)])
    return layers
}

private func dropoutProbability(_ o: ResolvedZooOptions, default fallback: Double) throws -> Double {
    let p = o.given.dropout ?? fallback
    guard p >= 0, p < 1 else { throw ModelError(layer: "model.dropout", message: "must be at least 0 and below 1, found \(p)") }
    return p
}
