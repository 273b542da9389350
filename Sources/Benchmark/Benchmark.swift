import AllReduce
import CNN
import Data
import Dispatch
import Foundation
import Hashing
import ModelDescription
import Training
import Wire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A model `cnn bench` measures, at the batch the benchmark fixes for it, or a config's model at
/// the config's batch.
public struct BenchmarkModel: Sendable {
    /// The name given to `--model`, or the path given to `--config`.
    public var name: String
    /// The global batch of one training step.
    public var batch: Int
    public var spec: ModelSpec
    /// The config the model comes from (`cnn bench --config`): its optimiser, schedule, frozen
    /// layers and micro-batch are what the benchmark trains with, on synthetic data. Nil for the
    /// built-in models, which train with SGD and momentum.
    public var config: TrainingConfig?

    public init(name: String, batch: Int, spec: ModelSpec, config: TrainingConfig? = nil) {
        self.name = name
        self.batch = batch
        self.spec = spec
        self.config = config
    }

    /// The model of the config at `path`, at its batch: what a distributed run of that config
    /// computes, to compare with in one process.
    public static func fromConfig(path: String) throws -> BenchmarkModel {
        let config = try TrainingConfig.load(path: path)
        return BenchmarkModel(name: path, batch: config.train.batch, spec: config.model, config: config)
    }

    /// The micro-batch the benchmark cuts the batch into at `threads` threads: `chosen` (the
    /// `--micro-batch` option) if given, else the config's, else one micro-batch per thread.
    public func microBatch(threads: Int, chosen: Int?) -> Int {
        chosen ?? config?.train.microBatch ?? Benchmark.defaultMicroBatch(batch: batch, threads: threads)
    }

    /// Every model `cnn bench` knows, in the order it runs them.
    public static let names = ["lenet5", "fashion-mnist", "resnet20", "alexnet"]

    /// The batch `cnn bench` trains each model at.
    public static let batches = ["lenet5": 64, "fashion-mnist": 128, "resnet20": 128, "alexnet": 8]

    /// The model called `name`, or why it cannot be built.
    public static func named(_ name: String) -> Result<BenchmarkModel, BenchmarkUnavailable> {
        guard let batch = batches[name] else {
            return .failure(BenchmarkUnavailable(
                model: name, reason: "unknown model; choose one of \(names.joined(separator: ", "))"))
        }
        do {
            return .success(BenchmarkModel(name: name, batch: batch, spec: try BenchmarkModels.spec(name)))
        } catch {
            return .failure(BenchmarkUnavailable(model: name, reason: "cannot be built in this build: \(error)"))
        }
    }
}

/// A model the benchmark cannot run in this build, and why.
public struct BenchmarkUnavailable: Error, Sendable, CustomStringConvertible {
    public var model: String
    public var reason: String

    public var description: String { "\(model): \(reason)" }
}

/// What to measure and how long.
public struct BenchmarkSettings: Sendable {
    /// Model names, from `BenchmarkModel.names`.
    public var models: [String] = BenchmarkModel.names
    /// Config files whose models are measured after the named ones (`cnn bench --config`).
    public var configPaths: [String] = []
    /// Thread counts; each gets its own engine with that many replicas.
    public var threads: [Int] = [1, 2]
    /// The precisions of the products, each measured beside the others at every thread count.
    public var precisions: [Precision] = [.fp32]
    /// Samples per micro-batch; nil cuts the batch into one micro-batch per thread, as a trainer
    /// with that many threads would (the whole batch at 1 thread, halves at 2).
    public var microBatch: Int?
    /// Timed repetitions; the median is reported.
    public var repetitions: Int = 5
    /// Roughly how long one repetition runs (whole steps, at least one).
    public var secondsPerRepetition: Double = 0.4
    /// Untimed steps before timing; the weights digest is taken after them.
    public var warmupSteps: Int = 2
    /// Whether to time each convolution layer against a plain GEMM of its shape and precision.
    public var measureConvolutions = true
    /// Whether to measure the peak resident memory of training (in a child process, see
    /// `memoryProbeCommand`).
    public var measureMemory = true
    /// The command that runs `Benchmark.runMemoryProbe` in a fresh process and prints its JSON
    /// line; given the model and thread count. Nil skips the memory figure.
    public var memoryProbeCommand: (@Sendable (BenchmarkModel, Int) -> [String])?

    public init() {}
}

/// Training throughput of one model at one thread count.
public struct ThroughputMeasurement: Sendable {
    public var model: String
    public var batch: Int
    public var microBatch: Int
    public var threads: Int
    public var precision: Precision
    /// Median over the repetitions.
    public var imagesPerSecond: Double
    public var secondsPerStep: Double
    public var repetitions: Int
    public var stepsPerRepetition: Int
    /// XXHash64 of the parameters after the warm-up steps: equal for every thread count when the
    /// micro-batches are the same.
    public var weightsDigest: UInt64
    /// Mean training loss of the last warm-up step.
    public var loss: Double
}

/// One convolution layer's forward and backward pass against plain GEMM calls of the same shapes
/// and precision, both on one thread: sgemm (same library) in fp32, oneDNN's bf16 GEMM on operands
/// rounded beforehand in bf16 (so the layer's own rounding counts against it).
public struct ConvolutionMeasurement: Sendable {
    public var model: String
    public var precision: Precision
    /// Where the layer sits ("3", "5.layers.0").
    public var layer: String
    public var summary: String
    public var microBatch: Int
    /// The forward GEMM per group: [m x k] x [k x n] with m = filters / groups,
    /// k = (channels / groups) * kh * kw and n = micro-batch * OH * OW.
    public var m: Int
    public var n: Int
    public var k: Int
    public var groups: Int
    /// Whether the layer computes its input gradient: all but a network's first layer, which
    /// skips it in training (nothing before it learns), and is timed the same way.
    public var computesInputGradient: Bool
    /// Forward, weight-gradient and (where computed) input-gradient multiply-adds, counted as 2
    /// FLOPs each.
    public var flops: Double
    public var seconds: Double
    /// Seconds of the plain GEMMs: sgemm in fp32, the bf16 GEMM in bf16.
    public var sgemmSeconds: Double

    public var gigaflopsPerSecond: Double { flops / seconds / 1e9 }
    public var sgemmGigaflopsPerSecond: Double { flops / sgemmSeconds / 1e9 }
    /// The layer's rate as a fraction of the plain GEMMs'.
    public var ratio: Double { sgemmSeconds / seconds }
}

/// Peak resident memory of training against what training must hold.
public struct MemoryMeasurement: Sendable {
    public var model: String
    public var batch: Int
    public var threads: Int
    public var parameterBytes: Int
    public var gradientBytes: Int
    public var optimizerStateBytes: Int
    /// What the layers keep for backward over the whole batch (`savedFloatsPerSample`, plus the input).
    public var activationBytes: Int
    public var peakResidentBytes: Int

    public var requiredBytes: Int { parameterBytes + gradientBytes + optimizerStateBytes + activationBytes }
    public var ratio: Double { Double(peakResidentBytes) / Double(requiredBytes) }
}

/// Everything measured for one model.
public struct ModelBenchmark: Sendable {
    public var model: String
    public var batch: Int
    public var parameters: Int
    public var forwardFLOPsPerSample: Int
    public var throughput: [ThroughputMeasurement] = []
    public var convolutions: [ConvolutionMeasurement] = []
    public var memory: [MemoryMeasurement] = []
    /// Why a part could not be measured (a memory probe that failed, say).
    public var notes: [String] = []
    /// The weights after the warm-up at each thread count, all with the same micro-batches: one
    /// check per precision.
    public var determinism: [DeterminismCheck] = []
}

/// The weights after the same warm-up steps, with the same micro-batches, computed at several
/// thread counts: the step contract says they are bit-identical.
public struct DeterminismCheck: Sendable {
    public var precision: Precision
    public var microBatch: Int
    /// XXHash64 of the parameters, by thread count.
    public var digests: [Int: UInt64]

    public var identical: Bool { Set(digests.values).count <= 1 }
}

/// `cnn bench`: training images per second of the model zoo at 1 and 2 threads, each convolution
/// layer against sgemm, and the memory of training. Synthetic, seeded data; no files.
///
/// Timing uses a monotonic clock over several repetitions after a warm-up and reports the median,
/// which shrugs off the odd repetition that another process disturbed.
public enum Benchmark {
    /// Runs the benchmark; `report` receives each model's figures as soon as they exist, and
    /// `unavailable` each model that cannot be built in this build.
    public static func run(
        _ settings: BenchmarkSettings,
        report: (ModelBenchmark) -> Void,
        unavailable: (BenchmarkUnavailable) -> Void
    ) throws {
        for name in settings.models {
            switch BenchmarkModel.named(name) {
            case .failure(let why):
                unavailable(why)
            case .success(let model):
                report(try measure(model, settings: settings))
            }
        }
        for path in settings.configPaths {
            report(try measure(try BenchmarkModel.fromConfig(path: path), settings: settings))
        }
    }

    /// All figures for one model.
    public static func measure(_ model: BenchmarkModel, settings: BenchmarkSettings) throws -> ModelBenchmark {
        let network = try Network(model.spec)
        var result = ModelBenchmark(
            model: model.name, batch: model.batch, parameters: network.parameterCount,
            forwardFLOPsPerSample: network.layers.reduce(0) { $0 + $1.forwardFLOPs })
        // The precisions side by side at each thread count, so that each ratio sees one state of the machine.
        for threads in settings.threads {
            let microBatch = model.microBatch(threads: threads, chosen: settings.microBatch)
            for precision in settings.precisions {
                result.throughput.append(
                    try measureThroughput(model, threads: threads, microBatch: microBatch, precision: precision, settings: settings))
            }
        }
        // The micro-batch of the most threads: what each thread computes there.
        let mostThreads = settings.threads.max() ?? 1
        let sharedMicroBatch = model.microBatch(threads: mostThreads, chosen: settings.microBatch)
        if settings.threads.count > 1 {
            for precision in settings.precisions {
                var digests: [Int: UInt64] = [:]
                for run in result.throughput where run.microBatch == sharedMicroBatch && run.precision == precision {
                    digests[run.threads] = run.weightsDigest
                }
                for threads in settings.threads where digests[threads] == nil {
                    let trainer = try BenchmarkTrainer(model: model, microBatch: sharedMicroBatch, threads: threads, precision: precision)
                    for _ in 0..<max(1, settings.warmupSteps) { _ = try trainer.step() }
                    digests[threads] = trainer.parameterDigest()
                }
                result.determinism.append(DeterminismCheck(precision: precision, microBatch: sharedMicroBatch, digests: digests))
            }
        }
        if settings.measureConvolutions {
            for precision in settings.precisions {
                result.convolutions += try measureConvolutions(model, microBatch: sharedMicroBatch, precision: precision, settings: settings)
            }
        }
        if settings.measureMemory, let command = settings.memoryProbeCommand {
            for threads in settings.threads {
                do {
                    result.memory.append(try runMemoryProbeProcess(command(model, threads), model: model, threads: threads))
                } catch {
                    result.notes.append("memory at \(threads) thread(s) not measured: \(error)")
                }
            }
        }
        return result
    }

    // MARK: Training throughput

    /// One micro-batch per thread when the batch divides evenly, else the whole batch as one.
    public static func defaultMicroBatch(batch: Int, threads: Int) -> Int {
        threads >= 1 && batch % threads == 0 ? batch / threads : batch
    }

    /// The training configuration the benchmark uses for a model: SGD with momentum (what the
    /// PyTorch side runs too), or a config's own training settings, no augmentation, the batch
    /// cut into micro-batches.
    public static func config(for model: BenchmarkModel, microBatch: Int, precision: Precision = .fp32) throws -> TrainingConfig {
        guard microBatch >= 1, model.batch % microBatch == 0 else {
            throw BenchmarkUnavailable(
                model: model.name,
                reason: "micro-batch \(microBatch) does not divide the batch \(model.batch); choose a divisor of \(model.batch)")
        }
        if var config = model.config {
            config.train.microBatch = microBatch
            config.train.precision = precision == .bf16 ? .bf16 : .fp32
            var data = DataConfig()
            data.dataset = "synthetic"
            data.shuffle = false
            config.data = data
            return config
        }
        var train = TrainConfig()
        train.batch = model.batch
        train.microBatch = microBatch
        train.seed = 1
        train.optimizer.name = "sgd"
        train.optimizer.learningRate = 0.01
        train.optimizer.momentum = 0.9
        train.precision = precision == .bf16 ? .bf16 : .fp32
        var data = DataConfig()
        data.dataset = "synthetic"
        data.shuffle = false
        return TrainingConfig(model: model.spec, data: data, train: train)
    }

    /// One batch of seeded synthetic images shaped for the model (the same batch every step: the
    /// benchmark measures arithmetic, not data loading).
    static func syntheticData(for model: BenchmarkModel) throws -> DataSource {
        let input = model.spec.input
        // Ten class patterns suffice for timing and keep the set small even for 1000-way models.
        let set = try SyntheticImages.make(
            count: model.batch, channels: input.channels, height: input.height, width: input.width, classes: 10, seed: 7)
        return DataSource(train: set, test: set)
    }

    static func measureThroughput(
        _ model: BenchmarkModel, threads: Int, microBatch: Int, precision: Precision, settings: BenchmarkSettings
    ) throws -> ThroughputMeasurement {
        let trainer = try BenchmarkTrainer(model: model, microBatch: microBatch, threads: threads, precision: precision)
        var loss = 0.0
        for _ in 0..<max(1, settings.warmupSteps) { loss = try trainer.step() }
        let digest = trainer.parameterDigest()
        // One more untimed step to calibrate how many steps fill a repetition.
        let start = monotonicSeconds()
        _ = try trainer.step()
        let calibration = monotonicSeconds() - start
        let steps = max(1, Int((settings.secondsPerRepetition / max(calibration, 1e-6)).rounded()))
        var perStep: [Double] = []
        for _ in 0..<max(1, settings.repetitions) {
            let begin = monotonicSeconds()
            for _ in 0..<steps { _ = try trainer.step() }
            perStep.append((monotonicSeconds() - begin) / Double(steps))
        }
        let median = medianOf(perStep)
        return ThroughputMeasurement(
            model: model.name, batch: model.batch, microBatch: microBatch, threads: threads, precision: precision,
            imagesPerSecond: Double(model.batch) / median, secondsPerStep: median, repetitions: perStep.count,
            stepsPerRepetition: steps, weightsDigest: digest, loss: loss)
    }

    // MARK: Memory

    /// Trains `model` for a few steps at `threads` threads in this process and returns its peak
    /// resident memory beside what training must hold. Meant to run alone in a fresh process
    /// (`cnn bench --memory-probe`), so that nothing else counts towards the peak.
    public static func runMemoryProbe(model: BenchmarkModel, threads: Int, microBatch: Int?, steps: Int = 3) throws -> MemoryMeasurement {
        let micro = model.microBatch(threads: threads, chosen: microBatch)
        let trainer = try BenchmarkTrainer(model: model, microBatch: micro, threads: threads)
        for _ in 0..<max(1, steps) { _ = try trainer.step() }
        var measurement = try requiredMemory(model: model, threads: threads, microBatch: micro)
        measurement.peakResidentBytes = peakResidentBytes()
        return measurement
    }

    /// Parameters, gradients, optimiser state (momentum) and saved activations of training `model`
    /// at its batch, as `cnn summary` counts them.
    public static func requiredMemory(model: BenchmarkModel, threads: Int, microBatch: Int) throws -> MemoryMeasurement {
        let summary = try ModelSummary(config: config(for: model, microBatch: microBatch))
        let floatBytes = MemoryLayout<Float>.stride
        return MemoryMeasurement(
            model: model.name, batch: model.batch, threads: threads,
            parameterBytes: floatBytes * (summary.parameters + summary.state),
            gradientBytes: floatBytes * summary.parameters,
            optimizerStateBytes: floatBytes * summary.parameters * summary.optimizerStatePerParameter,
            activationBytes: model.batch * summary.activationBytesPerSample,
            peakResidentBytes: 0)
    }

    /// The process's peak resident set size (VmHWM), in bytes.
    public static func peakResidentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            return Int(usage.ru_maxrss) * 1024
        }
        let kilobytes = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kilobytes * 1024
    }

    private static func runMemoryProbeProcess(_ arguments: [String], model: BenchmarkModel, threads: Int) throws -> MemoryMeasurement {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: output, as: UTF8.self)
        guard process.terminationStatus == 0,
              let line = text.split(separator: "\n").last(where: { $0.contains("peak_resident_bytes") }),
              let object = try JSONSerialization.jsonObject(with: Foundation.Data(line.utf8)) as? [String: Any],
              let peak = object["peak_resident_bytes"] as? Int else {
            throw BenchmarkUnavailable(
                model: model.name,
                reason: "the memory probe (\(arguments.joined(separator: " "))) exited with \(process.terminationStatus) and printed no figure")
        }
        let micro = model.microBatch(threads: threads, chosen: object["micro_batch"] as? Int)
        var measurement = try requiredMemory(model: model, threads: threads, microBatch: micro)
        measurement.peakResidentBytes = peak
        return measurement
    }

    /// Median seconds of one call of `first` and of `second`, over the settings' repetitions,
    /// after a warm-up call of each. Their repetitions alternate, so that both figures of a
    /// ratio see the machine in the same state (on a shared machine it drifts within seconds).
    static func timeMedians(settings: BenchmarkSettings, _ first: () -> Void, _ second: () -> Void) -> (Double, Double) {
        func callsPerRepetition(_ body: () -> Void) -> Int {
            body()
            let start = monotonicSeconds()
            body()
            let once = max(monotonicSeconds() - start, 1e-7)
            // Shorter repetitions than training: a layer is a small part of a step.
            return max(1, Int((settings.secondsPerRepetition / 4 / once).rounded()))
        }
        func secondsPerCall(_ body: () -> Void, calls: Int) -> Double {
            let begin = monotonicSeconds()
            for _ in 0..<calls { body() }
            return (monotonicSeconds() - begin) / Double(calls)
        }
        let firstCalls = callsPerRepetition(first), secondCalls = callsPerRepetition(second)
        var firstSamples: [Double] = [], secondSamples: [Double] = []
        for _ in 0..<max(1, settings.repetitions) {
            firstSamples.append(secondsPerCall(first, calls: firstCalls))
            secondSamples.append(secondsPerCall(second, calls: secondCalls))
        }
        return (medianOf(firstSamples), medianOf(secondSamples))
    }

    static func fillRandom(_ values: UnsafeMutablePointer<Float>, count: Int, scale: Float) {
        // A fixed linear congruential sequence: reproducible and cheap; any values will do.
        var state: UInt32 = 12345
        for i in 0..<count {
            state = state &* 1_664_525 &+ 1_013_904_223
            values[i] = (Float(state >> 8) / Float(1 << 24) - 0.5) * 2 * scale
        }
    }
}

/// Runs training steps exactly as the single-process reference does: compute the micro-batches
/// on T threads (the replicas reading the master weights in place), reduce their gradients along
/// the fixed tree, and apply the optimiser.
final class BenchmarkTrainer {
    let state: ModelState
    let engine: MicroBatchEngine
    let work: [MicroBatch]
    private let reduction = TreeReduction()

    init(model: BenchmarkModel, microBatch: Int, threads: Int, precision: Precision = .fp32) throws {
        let config = try Benchmark.config(for: model, microBatch: microBatch, precision: precision)
        state = try ModelState(config: config)
        engine = try MicroBatchEngine(config: config, data: try Benchmark.syntheticData(for: model), threads: threads)
        engine.shareWeights(of: state.network)
        work = (0..<(model.batch / microBatch)).map { j in
            MicroBatch(index: j, samples: Array((j * microBatch)..<((j + 1) * microBatch)))
        }
    }

    /// XXHash64 of the parameters.
    func parameterDigest() -> UInt64 {
        XXHash64.hash(UnsafeRawPointer(state.network.parameters.pointer), count: state.parameterCount * MemoryLayout<Float>.stride)
    }

    /// One optimiser step; returns the mean training loss.
    func step() throws -> Double {
        let output = engine.compute(work, training: true, epoch: 0, step: state.step)
        let mean = try reduceInPlace(output, microBatches: work.count, length: state.leafLength, reduction: reduction)
        withExtendedLifetime(output) { state.apply(meanGradient: mean, stepsPerEpoch: Int.max) }
        return work.indices.map { output.scores[$0]! }.reduce(BatchScore(), +).meanLoss
    }
}

func medianOf(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}
