import ArgumentParser
import Benchmark
import CNN
import CommandLineSupport
import Foundation
import JSONWriting
import ModelDescription
import Training

/// `cnn bench`: training throughput, convolution layers against sgemm, and training memory.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Training images per second at 1 and 2 threads, each convolution layer against sgemm, and training memory.",
        discussion: """
            Models: \(BenchmarkModel.names.joined(separator: ", ")), or a config's model at its batch, micro-batch and \
            optimiser (--config), to compare a distributed run of that config with one process. Data are synthetic \
            and seeded. Each figure is the median of several timed repetitions after a warm-up; compare only figures \
            from one quiet run.
            """)

    @Option(name: .long, help: "A model to measure (repeatable; default: all of \(BenchmarkModel.names.joined(separator: ", "))).")
    var model: [String] = []

    @Option(name: .long, help: "A training config whose model to measure at its batch, micro-batch and optimiser, on synthetic data (repeatable; with no --model, only these).")
    var config: [String] = []

    @Option(name: .long, help: "A thread count to measure (repeatable; default: 1 and 2).")
    var threads: [Int] = []

    @Option(name: .long, help: "The precision of the products: fp32, bf16, or several side by side (fp32,bf16; default fp32).")
    var precision: String = "fp32"

    @Flag(name: .long, help: "One JSON object per line (model, batch, threads, images_per_second, ...).")
    var json = false

    @Option(name: .customLong("micro-batch"), help: "Samples per micro-batch (default: a config's micro_batch, else the batch cut into one micro-batch per thread).")
    var microBatch: Int?

    @Option(name: .long, help: "Timed repetitions per figure; the median is reported.")
    var repetitions = 5

    @Option(name: .long, help: "Seconds per timed repetition (whole steps, at least one).")
    var seconds = 0.4

    @Flag(name: .customLong("no-convolutions"), help: "Skip timing each convolution layer against sgemm.")
    var skipConvolutions = false

    @Flag(name: .customLong("no-memory"), help: "Skip measuring the peak resident memory of training.")
    var skipMemory = false

    @Flag(name: .customLong("memory-probe"), help: .hidden)
    var memoryProbe = false

    func validate() throws {
        for name in model where !BenchmarkModel.names.contains(name) {
            throw ValidationError("--model \(name): unknown model; choose one of \(BenchmarkModel.names.joined(separator: ", "))")
        }
        for count in threads where count < 1 {
            throw ValidationError("--threads \(count): a thread count must be at least 1")
        }
        if let microBatch, microBatch < 1 { throw ValidationError("--micro-batch \(microBatch): must be at least 1") }
        guard repetitions >= 1 else { throw ValidationError("--repetitions \(repetitions): must be at least 1") }
        guard seconds > 0 else { throw ValidationError("--seconds \(seconds): must be positive") }
        _ = try precisions()
        if memoryProbe, model.count + config.count != 1 || threads.count != 1 {
            throw ValidationError("--memory-probe needs exactly one --model or --config and one --threads")
        }
    }

    func run() throws {
        try ProcessSetup.prepare()
        if memoryProbe {
            try runMemoryProbe()
            return
        }
        // A config that cannot be read is refused before anything is measured.
        for path in config { _ = try BenchmarkModel.fromConfig(path: path) }
        var settings = BenchmarkSettings()
        if !model.isEmpty || !config.isEmpty { settings.models = model }
        settings.configPaths = config
        if !threads.isEmpty { settings.threads = threads }
        settings.microBatch = microBatch
        settings.precisions = try precisions()
        if settings.precisions.contains(.bf16) && !BFloat16Support.isAvailable {
            throw ValidationError("--precision bf16 needs bf16 matrix products, and this machine has none (\(BFloat16Support.missingReason))")
        }
        settings.repetitions = repetitions
        settings.secondsPerRepetition = seconds
        settings.measureConvolutions = !skipConvolutions
        settings.measureMemory = !skipMemory
        let microBatch = self.microBatch
        settings.memoryProbeCommand = { model, threads in
            ["/proc/self/exe", "bench", "--memory-probe", model.config == nil ? "--model" : "--config", model.name, "--threads", "\(threads)"]
                + (microBatch.map { ["--micro-batch", "\($0)"] } ?? [])
        }
        if !json {
            emit("\(ProcessSetup.kernelDescription); \(ProcessInfo.processInfo.activeProcessorCount) CPUs; "
                + "median of \(repetitions) repetitions of ~\(seconds) s after a warm-up")
            if let advice = ProcessSetup.kernelAdvice { emit("note: \(advice)") }
            if settings.precisions.contains(.bf16) {
                emit("bf16 products: \(BFloat16Support.kernelName); Winograd layers compute with oneDNN's bf16 convolutions in bf16")
            }
        }
        try Benchmark.run(settings, report: { result in
            if json { emitJSON(result) } else { emitText(result) }
        }, unavailable: { why in
            if json {
                emit(JSONObject().string("model", why.model).bool("available", false).string("reason", why.reason).text)
            } else {
                emit("\(why.model): \(why.reason)\n")
            }
        })
    }

    /// The precisions `--precision` names, in its order.
    private func precisions() throws -> [Precision] {
        let names = precision.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        var chosen: [Precision] = []
        for name in names {
            guard let value = Precision(rawValue: name) else {
                throw ValidationError("--precision \(precision): '\(name)' is not a precision; use fp32, bf16 or fp32,bf16")
            }
            if !chosen.contains(value) { chosen.append(value) }
        }
        guard !chosen.isEmpty else { throw ValidationError("--precision is empty; use fp32, bf16 or fp32,bf16") }
        return chosen
    }

    private func runMemoryProbe() throws {
        let chosen: BenchmarkModel
        if let path = config.first {
            chosen = try BenchmarkModel.fromConfig(path: path)
        } else if case .success(let named) = BenchmarkModel.named(model[0]) {
            chosen = named
        } else {
            throw ValidationError("--model \(model[0]) cannot be built in this build")
        }
        let measurement = try Benchmark.runMemoryProbe(model: chosen, threads: threads[0], microBatch: microBatch)
        emit(JSONObject()
            .string("model", measurement.model).int("batch", measurement.batch).int("threads", measurement.threads)
            .int("micro_batch", chosen.microBatch(threads: threads[0], chosen: microBatch))
            .int("peak_resident_bytes", measurement.peakResidentBytes).text)
    }

    private func emitText(_ result: ModelBenchmark) {
        var lines: [String] = []
        lines.append("\(result.model): batch \(result.batch), \(grouped(result.parameters)) parameters, "
            + "\(fixed(Double(result.forwardFLOPsPerSample) / 1e6, 1)) MFLOP forward per sample")
        let severalPrecisions = Set(result.throughput.map(\.precision)).count > 1
        for t in result.throughput {
            let precision = severalPrecisions || t.precision != .fp32 ? " " + pad(t.precision.rawValue, -4) : ""
            lines.append("  \(t.threads) thread\(t.threads == 1 ? " " : "s")\(precision): \(pad(fixed(t.imagesPerSecond, 1), 10)) images/s  "
                + "(\(fixed(t.secondsPerStep * 1000, 2)) ms/step, \(t.batch / t.microBatch) micro-batch\(t.batch == t.microBatch ? "" : "es") of \(t.microBatch), "
                + "\(t.repetitions)x\(t.stepsPerRepetition) steps; weights digest \(hex(t.weightsDigest)))")
        }
        for check in result.determinism {
            let counts = check.digests.keys.sorted().map(String.init).joined(separator: ", ")
            lines.append("  \(check.precision.rawValue): micro-batches of \(check.microBatch) at \(counts) threads: weights after the warm-up are "
                + (check.identical ? "bit-identical" : "DIFFERENT: \(check.digests.sorted { $0.key < $1.key }.map { hex($0.value) })"))
        }
        for precision in Precision.allCases {
            let convolutions = result.convolutions.filter { $0.precision == precision }
            guard !convolutions.isEmpty else { continue }
            let reference = precision == .bf16 ? "bf16 GEMM" : "sgemm"
            lines.append("  convolution layers in \(precision.rawValue) (one thread, micro-batch \(convolutions[0].microBatch); forward + both gradients):")
            lines.append("    layer  " + pad("kind", -26) + pad("GEMM m x n x k", 22) + pad("layer GFLOP/s", 15)
                + pad("\(reference) GFLOP/s", 19) + pad("ratio", 8))
            for c in convolutions {
                let shape = "\(c.m) x \(c.n) x \(c.k)" + (c.groups > 1 ? " x\(c.groups)" : "")
                lines.append("    " + pad(c.layer, -7) + pad(c.summary + (c.computesInputGradient ? "" : " *"), -26) + pad(shape, 22)
                    + pad(fixed(c.gigaflopsPerSecond, 1), 15) + pad(fixed(c.sgemmGigaflopsPerSecond, 1), 19)
                    + pad(fixed(c.ratio * 100, 0) + "%", 8))
            }
            if convolutions.contains(where: { !$0.computesInputGradient }) {
                lines.append("    * the first layer: no input gradient, as in training; forward and weight gradient against those two GEMMs")
            }
        }
        for m in result.memory {
            lines.append("  memory at \(m.threads) thread\(m.threads == 1 ? "" : "s"): peak resident \(mebibytes(m.peakResidentBytes)); "
                + "parameters \(mebibytes(m.parameterBytes)) + gradients \(mebibytes(m.gradientBytes)) + optimizer state "
                + "\(mebibytes(m.optimizerStateBytes)) + saved activations \(mebibytes(m.activationBytes)) = "
                + "\(mebibytes(m.requiredBytes)); peak / sum = \(fixed(m.ratio, 2))")
        }
        for note in result.notes { lines.append("  note: \(note)") }
        emit(lines.joined(separator: "\n") + "\n")
    }

    private func emitJSON(_ result: ModelBenchmark) {
        let convolutions: [(precision: Precision, text: String)] = result.convolutions.map { c in
            let object = JSONObject().string("layer", c.layer).string("kind", c.summary).int("micro_batch", c.microBatch)
                .int("m", c.m).int("n", c.n).int("k", c.k).int("groups", c.groups)
                .double("gflops", c.gigaflopsPerSecond).double("sgemm_gflops", c.sgemmGigaflopsPerSecond)
                .double("ratio", c.ratio).bool("input_gradient", c.computesInputGradient)
            return (c.precision, object.text)
        }
        for t in result.throughput {
            var line = JSONObject()
                .string("model", t.model).int("batch", t.batch).int("threads", t.threads).string("precision", t.precision.rawValue)
                .double("images_per_second", t.imagesPerSecond).int("micro_batch", t.microBatch)
                .double("seconds_per_step", t.secondsPerStep).int("repetitions", t.repetitions)
                .int("steps_per_repetition", t.stepsPerRepetition).string("weights_digest", hex(t.weightsDigest))
                .double("warmup_loss", t.loss).int("parameters", result.parameters)
                .int("forward_flops_per_sample", result.forwardFLOPsPerSample).string("blas_kernel", BLAS.kernelName).string("engine_build", EngineBuild.name)
            if let m = result.memory.first(where: { $0.threads == t.threads }) {
                line = line.int("peak_resident_bytes", m.peakResidentBytes).int("parameter_bytes", m.parameterBytes)
                    .int("gradient_bytes", m.gradientBytes).int("optimizer_state_bytes", m.optimizerStateBytes)
                    .int("activation_bytes", m.activationBytes).int("required_bytes", m.requiredBytes)
                    .double("memory_ratio", m.ratio)
            }
            if t.precision == .bf16 { line = line.string("bf16_kernel", BFloat16Support.kernelName) }
            if let check = result.determinism.first(where: { $0.precision == t.precision }) {
                line = line.int("determinism_micro_batch", check.microBatch).bool("bit_identical_across_threads", check.identical)
            }
            let mine = convolutions.filter { $0.precision == t.precision }.map { $0.text }
            if !mine.isEmpty { line = line.raw("convolutions", "[" + mine.joined(separator: ",") + "]") }
            emit(line.text)
        }
    }

    private func emit(_ text: String) {
        // Flushed line by line: the output is often a pipe into a comparison script.
        printProgress(text)
    }
}

private func fixed(_ value: Double, _ decimals: Int) -> String {
    String(format: "%.\(decimals)f", value)
}

private func hex(_ value: UInt64) -> String {
    String(format: "%016llx", value)
}

private func mebibytes(_ bytes: Int) -> String {
    fixed(Double(bytes) / 1_048_576, 1) + " MiB"
}

/// Right-aligned to `width` (left-aligned for a negative width).
private func pad(_ text: String, _ width: Int) -> String {
    let room = abs(width) - text.count
    guard room > 0 else { return text + " " }
    return width < 0 ? text + String(repeating: " ", count: room) : String(repeating: " ", count: room) + text
}
