import CNN
import ConfigReading
import Data
import Hashing
import ModelDescription
import Yams

/// Everything a run needs, resolved from the YAML file and the command line. Workers receive
/// its `yaml` rendering, so a worker computes exactly what the coordinator planned.
public struct TrainingConfig: Sendable, Equatable {
    public var model: ModelSpec
    public var data: DataConfig
    public var train: TrainConfig
    public var distributed: DistributedConfig
    public var checkpoint: CheckpointConfig
    /// Where the config came from, for messages.
    public var source: String = "config"

    public init(model: ModelSpec, data: DataConfig = DataConfig(), train: TrainConfig = TrainConfig(),
                distributed: DistributedConfig = DistributedConfig(), checkpoint: CheckpointConfig = CheckpointConfig()) {
        self.model = model
        self.data = data
        self.train = train
        self.distributed = distributed
        self.checkpoint = checkpoint
    }
}

public struct DataConfig: Sendable, Equatable {
    /// fashion-mnist, mnist (IDX files), cifar10 (binary batches), synthetic, idx (samples of the
    /// model's input shape, sequences and volumes too: `IDXSamples`) or folder (JPEG and PNG files in
    /// torchvision's ImageFolder layout: path/train/CLASS/..., path/val/CLASS/...).
    public var dataset: String = "fashion-mnist"
    /// Folder holding the data set's files.
    public var path: String = FashionMNIST.defaultDirectory
    /// false keeps samples in file order.
    public var shuffle: Bool = true
    public var augmentation = Augmentation()
    /// Sizes of the synthetic data set.
    public var syntheticTrain: Int = 2048
    public var syntheticTest: Int = 512
    /// Image folders: per-channel normalisation (nil: ImageNet's for RGB), and whether a file that
    /// does not decode is left out with a warning instead of stopping the run.
    public var mean: [Float]?
    public var standardDeviation: [Float]?
    public var skipBadFiles: Bool = false
    /// Image folders: torchvision's transforms (`data.transforms`); nil: none. Its mean and std
    /// are unused here (`mean`, `standardDeviation` above hold them).
    public var transforms: ImagePipeline?
    /// Image folders: micro-batches a worker decodes ahead, on a background thread (0: none).
    public var prefetch: Int = 2

    public init() {}
}

public struct OptimizerConfig: Sendable, Equatable {
    /// sgd, adam or adamw.
    public var name: String = "sgd"
    public var learningRate: Double = 0.05
    public var momentum: Double = 0.9
    public var nesterov: Bool = false
    public var weightDecay: Double = 0
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var epsilon: Double = 1e-8

    public init() {}
}

extension OptimizerConfig {
    /// Floats of optimiser state per parameter (SGD with momentum: 1, plain SGD: 0, Adam: 2).
    public var statePerParameter: Int { name == "sgd" ? (momentum > 0 ? 1 : 0) : 2 }
}

public struct TrainConfig: Sendable, Equatable {
    public var epochs: Int = 3
    /// Samples per optimiser step (the global batch).
    public var batch: Int = 128
    /// Samples per micro-batch: the unit of work and of determinism. Must divide `batch`.
    public var microBatch: Int = 32
    public var seed: UInt64 = 1
    public var optimizer = OptimizerConfig()
    public var schedule = Schedule.constant
    /// Log a metrics line every this many steps.
    public var logEvery: Int = 50
    /// Samples per evaluation micro-batch.
    public var evalBatch: Int = 500
    /// Stop after this many steps in all (0: run every epoch).
    public var maxSteps: Int = 0
    /// Scale the mean gradient down to this global L2 norm when it is larger (0: off).
    public var clipGradientNorm: Double = 0
    /// Layers (name prefixes such as "0" or "3.conv1") whose parameters do not train.
    public var freeze: [String] = []
    /// With `--init`, keep the initial values of tensors whose shape differs in the file (a new
    /// classifier head) instead of refusing the file.
    public var initSkipMismatched: Bool = false
    /// The arithmetic of the convolutions' and dense layers' matrix products (`train.precision`).
    public var precision: PrecisionSetting = .fp32

    public init() {}

    public var microBatchesPerStep: Int { batch / microBatch }
}

public struct DistributedConfig: Sendable, Equatable {
    /// Seconds without any message before a worker is declared dead.
    public var workerTimeout: Double = 10
    /// Seconds between heartbeats, both ways.
    public var heartbeatInterval: Double = 1
    /// Seconds to wait for the expected number of workers before the first step.
    public var joinTimeout: Double = 60
    /// What to do with a gradient holding NaN or infinity: `recompute` the micro-batches on
    /// another worker (stopping if the copy is not finite either), or `stop` at once.
    public var nonFinite: NonFinitePolicy = .recompute
    /// Workers admitted at once; more are turned away.
    public var maxWorkers: Int = 256
    /// Messages a second a worker may send (heartbeats and results); a worker above it is evicted.
    public var maxMessagesPerSecond: Int = 2000
    /// Where gradients are reduced and the optimiser runs: `sharded` among the workers, or
    /// `central` at the coordinator (docs/scaling.md). Both give the same bits; `sharded` is the
    /// default since it was as fast as `central` on one host too (README, "Speed").
    public var reduction: ReductionKind = .sharded
    /// How gradients travel and how the fixed tree rounds them (`fp32`, or `bf16`: every tree
    /// node rounded to bf16, half the bytes). Both strategies, any worker count: the same bits.
    public var wirePrecision: WirePrecision = .fp32

    public init() {}
}

/// The reduction strategies a config can name (`distributed.reduction`).
public enum ReductionKind: String, Sendable, CaseIterable, Equatable {
    /// The coordinator completes the tree, runs the optimiser and sends the weights.
    case central
    /// Slice owners among the workers do, and send each other the weights (docs/scaling.md).
    case sharded
}

public struct CheckpointConfig: Sendable, Equatable {
    /// Write a checkpoint every this many steps (0: only the final one).
    public var every: Int = 0
    /// How many checkpoints to keep.
    public var keep: Int = 3

    public init() {}
}

extension ModelSummary {
    /// The summary of `config`'s model, trained with its batch, micro-batch and optimiser.
    public init(config: TrainingConfig) throws {
        let optimizer = config.train.optimizer
        try self.init(model: config.model, batch: config.train.batch, microBatch: config.train.microBatch,
                      optimizerName: optimizer.name, optimizerStatePerParameter: optimizer.statePerParameter)
    }
}

extension TrainingConfig {
    /// Parses a YAML config; `source` names it in errors (usually the file path).
    public static func parse(yaml text: String, source: String) throws -> TrainingConfig {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ConfigError(file: source, line: nil, message: "the config is empty; see configs/fashion-mnist.yaml for an example")
            }
            root = node
        } catch let error as ConfigError {
            throw error
        } catch let error as YamlError {
            throw ConfigError(file: source, line: yamlErrorLine(error), message: "not valid YAML: \(yamlProblem(error))")
        }
        let top = ConfigNode(node: root, path: "", file: source)
        try top.expectKeys(["model", "data", "train", "distributed", "checkpoint"])
        guard let modelNode = try top.child("model") else {
            throw top.error("the config has no 'model' section; add one with 'input' and 'layers'")
        }
        var config = TrainingConfig(model: try ModelConfig.parseModel(modelNode))
        config.source = source
        if let node = try top.child("data") { config.data = try parseData(node) }
        if let node = try top.child("train") { config.train = try parseTrain(node) }
        if let node = try top.child("distributed") { config.distributed = try parseDistributed(node) }
        if let node = try top.child("checkpoint") { config.checkpoint = try parseCheckpoint(node) }
        if config.train.batch % config.train.microBatch != 0 {
            let node = try top.child("train")
            throw ConfigError(
                file: source, line: node?.line,
                message: "train.batch (\(config.train.batch)) must be a multiple of train.micro_batch (\(config.train.microBatch)); "
                    + "for example micro_batch: \(largestDivisor(of: config.train.batch, atMost: config.train.microBatch))")
        }
        // parseModel has already checked every shape; a network (with its parameter buffers) is
        // built only when frozen layer names need checking against it.
        guard !config.train.freeze.isEmpty else { return config }
        let network: Network
        do {
            network = try Network(config.model)
        } catch let error as ModelError {
            throw ConfigError(file: source, line: modelNode.line, message: error.description)
        }
        do {
            _ = try network.frozenParameterRanges(config.train.freeze)
        } catch let error as ModelError {
            throw ConfigError(file: source, line: try top.child("train")?.line, message: "train.freeze: '\(error.layer)': \(error.message)")
        }
        return config
    }

    /// Reads and parses a config file.
    public static func load(path: String) throws -> TrainingConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError(file: path, line: nil, message: "cannot read the config file; check the path (configs/ holds examples)")
        }
        return try parse(yaml: text, source: path)
    }

    /// A stable hash of everything that changes the numbers a run computes. How long the run goes
    /// (`train.steps`), how often it logs, checkpoints or evaluates, and its timeouts are left out,
    /// so a resumed run may be given more steps or other timeouts; so is `train.precision`, so that
    /// a run may resume in the other precision, and the whole `distributed` section, whose
    /// `reduction` and `wire_precision` a resumed run may change too.
    public var hash: String {
        var numerics = self
        numerics.train.maxSteps = 0
        numerics.train.logEvery = TrainConfig().logEvery
        numerics.train.evalBatch = TrainConfig().evalBatch
        numerics.distributed = DistributedConfig()
        numerics.checkpoint = CheckpointConfig()
        // The precision only rounds the products; weights, gradients and optimiser state are
        // Float32 in both, so a checkpoint of either resumes in the other.
        numerics.train.precision = .fp32
        let value = XXHash64.hash(array: Array(numerics.yaml.utf8))
        return String(value, radix: 16)
    }

    private static func parseData(_ node: ConfigNode) throws -> DataConfig {
        try node.expectKeys(["dataset", "path", "shuffle", "augment", "synthetic_train", "synthetic_test",
                             "mean", "std", "skip_bad_files", "transforms", "prefetch"])
        var data = DataConfig()
        if let n = try node.child("dataset") { data.dataset = try n.oneOf(["fashion-mnist", "mnist", "cifar10", "synthetic", "idx", "folder"]) }
        if let n = try node.child("mean") { data.mean = try n.items().map { Float(try $0.double(minimum: 0, maximum: 1)) } }
        if let n = try node.child("std") { data.standardDeviation = try n.items().map { Float(try $0.double(minimum: 0, exclusiveMinimum: true)) } }
        if let n = try node.child("skip_bad_files") { data.skipBadFiles = try n.bool() }
        if let n = try node.child("transforms") { data.transforms = try parseTransforms(n) }
        if let n = try node.child("prefetch") { data.prefetch = try n.int(minimum: 0, maximum: 64) }
        if let n = try node.child("path") { data.path = try n.string() }
        if let n = try node.child("shuffle") { data.shuffle = try n.bool() }
        if let n = try node.child("synthetic_train") { data.syntheticTrain = try n.int(minimum: 1) }
        if let n = try node.child("synthetic_test") { data.syntheticTest = try n.int(minimum: 1) }
        if let n = try node.child("augment") {
            if n.isScalar {
                guard try n.string() == "none" else { throw n.error("data.augment must be 'none' or a mapping of augmentations") }
            } else {
                try n.expectKeys(["crop_padding", "horizontal_flip", "vertical_flip", "max_translation", "brightness", "contrast"])
                var a = Augmentation()
                if let v = try n.child("crop_padding") { a.cropPadding = try v.int(minimum: 0) }
                if let v = try n.child("horizontal_flip") { a.horizontalFlip = try v.bool() }
                if let v = try n.child("vertical_flip") { a.verticalFlip = try v.bool() }
                if let v = try n.child("max_translation") { a.maxTranslation = try v.int(minimum: 0) }
                if let v = try n.child("brightness") { a.brightness = Float(try v.double(minimum: 0)) }
                if let v = try n.child("contrast") { a.contrast = Float(try v.double(minimum: 0, maximum: 1)) }
                data.augmentation = a
            }
        }
        return data
    }

    private static func parseTrain(_ node: ConfigNode) throws -> TrainConfig {
        try node.expectKeys(["epochs", "batch", "micro_batch", "seed", "optimizer", "schedule", "log_every", "eval_batch", "steps",
                             "clip_grad_norm", "freeze", "init_skip_mismatched", "precision"])
        var train = TrainConfig()
        if let n = try node.child("epochs") { train.epochs = try n.int(minimum: 1, maximum: 1_000_000) }
        if let n = try node.child("batch") { train.batch = try n.int(minimum: 1) }
        train.microBatch = train.batch
        if let n = try node.child("micro_batch") { train.microBatch = try n.int(minimum: 1) }
        if train.microBatch > train.batch {
            throw node.error("train.micro_batch (\(train.microBatch)) cannot exceed train.batch (\(train.batch))")
        }
        if let n = try node.child("seed") { train.seed = UInt64(try n.int(minimum: 0)) }
        if let n = try node.child("log_every") { train.logEvery = try n.int(minimum: 1) }
        if let n = try node.child("eval_batch") { train.evalBatch = try n.int(minimum: 1) }
        if let n = try node.child("steps") { train.maxSteps = try n.int(minimum: 0) }
        if let n = try node.child("clip_grad_norm") { train.clipGradientNorm = try n.double(minimum: 0) }
        if let n = try node.child("freeze") { train.freeze = try n.items().map { try $0.string() } }
        if let n = try node.child("init_skip_mismatched") { train.initSkipMismatched = try n.bool() }
        if let n = try node.child("precision") {
            train.precision = PrecisionSetting(rawValue: try n.oneOf(PrecisionSetting.allCases.map(\.rawValue)))!
        }
        if let n = try node.child("optimizer") {
            try n.expectKeys(["name", "lr", "momentum", "nesterov", "weight_decay", "beta1", "beta2", "epsilon"])
            var o = OptimizerConfig()
            if let v = try n.child("name") { o.name = try v.oneOf(["sgd", "adam", "adamw"]) }
            if o.name != "sgd" { o.momentum = 0 }
            if let v = try n.child("lr") { o.learningRate = try v.double(minimum: 0, exclusiveMinimum: true) }
            if let v = try n.child("momentum") { o.momentum = try v.double(minimum: 0, maximum: 1) }
            if let v = try n.child("nesterov") { o.nesterov = try v.bool() }
            if let v = try n.child("weight_decay") { o.weightDecay = try v.double(minimum: 0) }
            if let v = try n.child("beta1") { o.beta1 = try v.double(minimum: 0, maximum: 1) }
            if let v = try n.child("beta2") { o.beta2 = try v.double(minimum: 0, maximum: 1) }
            if let v = try n.child("epsilon") { o.epsilon = try v.double(minimum: 0, exclusiveMinimum: true) }
            if o.nesterov && o.momentum == 0 {
                throw n.error("train.optimizer.nesterov needs a momentum above 0 (as in PyTorch)")
            }
            train.optimizer = o
        }
        if let n = try node.child("schedule") { train.schedule = try Schedule.parse(n) }
        return train
    }

    private static func parseDistributed(_ node: ConfigNode) throws -> DistributedConfig {
        try node.expectKeys(["worker_timeout", "heartbeat_interval", "join_timeout", "nonfinite_gradients", "max_workers",
                             "max_messages_per_second", "reduction", "wire_precision"])
        var d = DistributedConfig()
        if let n = try node.child("worker_timeout") { d.workerTimeout = try n.double(minimum: 0.1) }
        if let n = try node.child("heartbeat_interval") { d.heartbeatInterval = try n.double(minimum: 0.01) }
        if let n = try node.child("join_timeout") { d.joinTimeout = try n.double(minimum: 0.1) }
        if let n = try node.child("nonfinite_gradients") { d.nonFinite = NonFinitePolicy(rawValue: try n.oneOf(["recompute", "stop"]))! }
        if let n = try node.child("max_workers") { d.maxWorkers = try n.int(minimum: 1) }
        if let n = try node.child("max_messages_per_second") { d.maxMessagesPerSecond = try n.int(minimum: 10) }
        if let n = try node.child("reduction") { d.reduction = ReductionKind(rawValue: try n.oneOf(ReductionKind.allCases.map(\.rawValue)))! }
        if let n = try node.child("wire_precision") {
            d.wirePrecision = WirePrecision(rawValue: try n.oneOf(WirePrecision.allCases.map(\.rawValue)))!
        }
        if d.heartbeatInterval >= d.workerTimeout {
            throw node.error("distributed.heartbeat_interval (\(d.heartbeatInterval) s) must be shorter than worker_timeout (\(d.workerTimeout) s)")
        }
        return d
    }

    private static func parseCheckpoint(_ node: ConfigNode) throws -> CheckpointConfig {
        try node.expectKeys(["every", "keep"])
        var c = CheckpointConfig()
        if let n = try node.child("every") { c.every = try n.int(minimum: 0) }
        if let n = try node.child("keep") { c.keep = try n.int(minimum: 1) }
        return c
    }

    private static func largestDivisor(of value: Int, atMost limit: Int) -> Int {
        var d = min(limit, value)
        while d > 1 && value % d != 0 { d -= 1 }
        return d
    }
}

private func yamlErrorLine(_ error: YamlError) -> Int? {
    switch error {
    case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): return mark.line
    default: return nil
    }
}

private func yamlProblem(_ error: YamlError) -> String {
    switch error {
    case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
        return "\(problem) at column \(mark.column)"
    default:
        return "\(error)"
    }
}
