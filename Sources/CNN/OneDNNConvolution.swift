import COneDNN

/// Convolution in bf16 (`Precision.bf16`) through oneDNN's convolution primitives (forward,
/// backward data, backward weights), instead of im2col and bf16 GEMMs.
///
/// Why: on AVX-512-BF16 oneDNN's direct convolutions (`jit_bf16:avx512_core_bf16`) read each
/// input once, in a channel-blocked layout (nChw16c), where im2col writes and reads a matrix up
/// to 9x the input for every pass, and rounds it to bf16 in yet another pass. The layer's
/// tensors stay Float32 NCHW for the layers around it; the edges convert:
/// - forward: input NCHW f32 -> the primitive's bf16 layout (this rounds the input, to nearest
///   even, once for forward and backward weights, which reads it again: it is kept until
///   backward, half the bytes of the input), weights -> bf16, output <- Float32 sums (with the
///   bias added in Float32);
/// - backward: the output gradient NCHW f32 -> bf16 (rounded once for both products), weights
///   -> bf16 in the backward-data layout; the input gradient and the weight gradient come back as
///   Float32 sums and are put into NCHW / OIHW, the weight gradient added into the layer's.
/// The bias gradient is the plane sums of the Float32 output gradient, summed exactly as the
/// im2col path sums them.
///
/// Determinism: each pass runs on the calling thread alone (`OneDNNPrimitive`), with oneDNN's
/// work split for one thread, so its sums run in an order fixed by the shapes; and rounding is a
/// pure function of each value. A micro-batch's results depend on it and the weights only.
final class OneDNNConvolution: ConvolutionComputation {
    let geometry: ConvolutionGeometry
    var workspace: LayerWorkspace
    private let stream = OneDNNStream()
    /// The primitives for each batch size met, made on first use.
    private var plans: [Int: Plan] = [:]
    /// The last forward pass's input in bf16, in the forward primitive's layout, for backward's
    /// weight gradient.
    private let keptInput = FloatBuffer()
    private let biasScratch = FloatBuffer()  // [K]: the bias gradient of one backward pass

    /// A convolution of `geometry` through oneDNN in bf16, or nil when oneDNN has no compiled
    /// (jit or GEMM-based) bf16 kernel for it here, only its slow reference code.
    init?(geometry: ConvolutionGeometry, workspace: LayerWorkspace) {
        self.geometry = geometry
        self.workspace = workspace
        guard BFloat16Support.isAvailable, let probe = try? Plan(geometry: geometry, batch: 1, bias: false),
              !probe.usesReferenceCode
        else { return nil }
        plans[1] = probe
        implementation = probe.forward.implementation
    }

    /// Whether oneDNN's bf16 convolution suits a layer of `geometry` better than im2col with bf16
    /// GEMMs: unless it has one input channel per group. oneDNN's kernels work on blocks of 16
    /// channels, and a single input channel leaves them little to work on, where im2col's
    /// matrix is then only kh x kw rows (`cnn bench --precision bf16`, one thread: LeNet-5's first
    /// layer 21 against 49 GFLOP/s with im2col, Fashion-MNIST's 38 against 55; with three input
    /// channels, ResNet-20's first layer 92 against 68, AlexNet's 243 against 229).
    static func suits(_ geometry: ConvolutionGeometry) -> Bool {
        geometry.inputShape.channels / geometry.groups > 1
    }

    /// The implementation oneDNN runs the forward pass with, such as "jit_bf16:avx512_core_bf16".
    private(set) var implementation = ""

    /// Half the input's floats, in bf16 and its layout's padding of channels to 16.
    var keptFloatsPerSample: Int {
        let input = geometry.inputShape
        return ((input.channels + 15) / 16 * 16 * input.height * input.width + 1) / 2
    }

    private func plan(batch: Int, bias: Bool) -> Plan {
        if let plan = plans[batch], plan.hasBias == bias || !bias { return plan }
        // Shapes were checked when the layer was built, and the probe at batch 1 succeeded.
        let plan = try! Plan(geometry: geometry, batch: batch, bias: bias)
        plans[batch] = plan
        return plan
    }

    func forward(
        _ input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        into out: UnsafeMutablePointer<Float>
    ) {
        guard batch > 0 else { return }
        let plan = plan(batch: batch, bias: bias != nil)
        let stream = stream.stream
        let kept = UnsafeMutableRawPointer(keptInput.reserve((plan.source.bytes + 3) / 4))
        // Scratch: [bf16 weights | Float32 output in the primitive's layout | the primitives' scratchpads].
        var scratch = Scratch(workspace.unfoldedInput)
        let weightsOffset = scratch.place(plan.forwardWeights.bytes)
        let outputOffset = plan.outputLayout == nil ? nil : scratch.place(plan.output.bytes)
        let padOffset = scratch.place(plan.forwardScratchpadBytes)
        let base = scratch.base()
        let roundedWeights = base + weightsOffset, pad = base + padOffset
        let blockedOutput = outputOffset.map { base + $0 } ?? UnsafeMutableRawPointer(out)

        plan.roundInput.execute(
            on: stream, [(DNNL_ARG_FROM, plan.userInput.bind(input)), (DNNL_ARG_TO, plan.source.bind(kept))], scratch: pad)
        plan.roundForwardWeights.execute(
            on: stream, [(DNNL_ARG_FROM, plan.userWeights.bind(weights)), (DNNL_ARG_TO, plan.forwardWeights.bind(roundedWeights))],
            scratch: pad)
        var arguments = [
            (DNNL_ARG_SRC, plan.source.bind(kept)), (DNNL_ARG_WEIGHTS, plan.forwardWeights.bind(roundedWeights)),
            (DNNL_ARG_DST, plan.output.bind(blockedOutput)),
        ]
        if let bias, let biasMemory = plan.bias { arguments.append((DNNL_ARG_BIAS, biasMemory.bind(bias))) }
        plan.forward.execute(on: stream, arguments, scratch: pad)
        if let layout = plan.outputLayout {
            layout.execute(
                on: stream, [(DNNL_ARG_FROM, plan.output.bind(blockedOutput)), (DNNL_ARG_TO, plan.userOutput.bind(out))], scratch: pad)
        }
    }

    func backward(
        _ outputGradient: UnsafePointer<Float>, input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>,
        weightGradients: UnsafeMutablePointer<Float>, biasGradients: UnsafeMutablePointer<Float>?,
        inputGradient dInput: UnsafeMutablePointer<Float>?
    ) {
        guard batch > 0 else { return }
        let plan = plan(batch: batch, bias: false)
        let stream = stream.stream
        let filters = geometry.filters, plane = geometry.outputPlane, outputCount = geometry.outputShape.count
        if let biasGradients {
            // Per filter, the plane sums of samples 0, 1, ... added in that order, as im2col does.
            let totals = biasScratch.reserve(filters)
            totals.update(repeating: 0, count: filters)
            for n in 0..<batch {
                for k in 0..<filters { totals[k] += VectorKernels.sum(outputGradient + n * outputCount + k * plane, count: plane) }
            }
            for k in 0..<filters { biasGradients[k] += totals[k] }
        }
        let kept = UnsafeRawPointer(keptInput.pointer)
        var scratch = Scratch(workspace.unfoldedInput)
        let gradientOffset = scratch.place(plan.gradient.bytes)
        let weightSourceOffset = plan.sourceForWeights == nil ? nil : scratch.place(plan.weightsSource.bytes)
        let weightGradientOffset = plan.gradientForWeights == nil ? nil : scratch.place(plan.weightsGradient.bytes)
        let blockedWeightGradientsOffset = scratch.place(plan.weightGradients.bytes)
        let plainWeightGradientsOffset = plan.weightGradientLayout == nil ? nil : scratch.place(plan.userWeights.bytes)
        let roundedWeightsOffset = dInput == nil ? nil : scratch.place(plan.dataPassWeights.bytes)
        let blockedInputGradientOffset = dInput == nil || plan.inputGradientLayout == nil ? nil : scratch.place(plan.inputGradient.bytes)
        let padOffset = scratch.place(plan.backwardScratchpadBytes)
        let base = scratch.base()
        let roundedGradient = base + gradientOffset, pad = base + padOffset
        let weightSource = weightSourceOffset.map { base + $0 }, weightGradient = weightGradientOffset.map { base + $0 }
        let blockedWeightGradients = base + blockedWeightGradientsOffset
        let plainWeightGradients = plainWeightGradientsOffset.map { base + $0 }
        let roundedWeights = roundedWeightsOffset.map { base + $0 }
        let blockedInputGradient = blockedInputGradientOffset.map { base + $0 }

        plan.roundGradient.execute(
            on: stream, [(DNNL_ARG_FROM, plan.userOutput.bind(outputGradient)), (DNNL_ARG_TO, plan.gradient.bind(roundedGradient))],
            scratch: pad)
        // The weight gradient, from the kept bf16 input and the rounded output gradient.
        if let layout = plan.sourceForWeights, let weightSource {
            layout.execute(on: stream, [(DNNL_ARG_FROM, plan.source.bind(kept)), (DNNL_ARG_TO, plan.weightsSource.bind(weightSource))], scratch: pad)
        }
        if let layout = plan.gradientForWeights, let weightGradient {
            layout.execute(
                on: stream, [(DNNL_ARG_FROM, plan.gradient.bind(roundedGradient)), (DNNL_ARG_TO, plan.weightsGradient.bind(weightGradient))],
                scratch: pad)
        }
        plan.backwardWeights.execute(
            on: stream,
            [
                (DNNL_ARG_SRC, plan.weightsSource.bind(weightSource.map(UnsafeRawPointer.init) ?? kept)),
                (DNNL_ARG_DIFF_DST, plan.weightsGradient.bind(weightGradient ?? roundedGradient)),
                (DNNL_ARG_DIFF_WEIGHTS, plan.weightGradients.bind(blockedWeightGradients)),
            ],
            scratch: pad)
        var plain = blockedWeightGradients
        if let layout = plan.weightGradientLayout, let plainWeightGradients {
            layout.execute(
                on: stream,
                [(DNNL_ARG_FROM, plan.weightGradients.bind(blockedWeightGradients)), (DNNL_ARG_TO, plan.userWeights.bind(plainWeightGradients))],
                scratch: pad)
            plain = plainWeightGradients
        }
        VectorKernels.add(
            plain.assumingMemoryBound(to: Float.self), to: weightGradients, count: filters * geometry.patchSize)

        // The input gradient, from the rounded output gradient and the weights in bf16.
        guard let dInput, let roundedWeights else { return }
        plan.roundBackwardWeights.execute(
            on: stream, [(DNNL_ARG_FROM, plan.userWeights.bind(weights)), (DNNL_ARG_TO, plan.dataPassWeights.bind(roundedWeights))],
            scratch: pad)
        let target = blockedInputGradient ?? UnsafeMutableRawPointer(dInput)
        plan.backwardData.execute(
            on: stream,
            [
                (DNNL_ARG_DIFF_DST, plan.gradient.bind(roundedGradient)), (DNNL_ARG_WEIGHTS, plan.dataPassWeights.bind(roundedWeights)),
                (DNNL_ARG_DIFF_SRC, plan.inputGradient.bind(target)),
            ],
            scratch: pad)
        if let layout = plan.inputGradientLayout {
            layout.execute(on: stream, [(DNNL_ARG_FROM, plan.inputGradient.bind(target)), (DNNL_ARG_TO, plan.userInput.bind(dInput))], scratch: pad)
        }
    }
}

/// Offsets of consecutive 64-byte aligned pieces of one workspace buffer (dead between calls,
/// see `LayerWorkspace`): placed first, then made room for at once, so no piece moves.
private struct Scratch {
    let buffer: FloatBuffer
    private var total = 0

    init(_ buffer: FloatBuffer) { self.buffer = buffer }

    /// Where a piece of `bytes` will start.
    mutating func place(_ bytes: Int) -> Int {
        let offset = total
        total += (bytes + 63) / 64 * 64
        return offset
    }

    /// The buffer, grown to hold every piece placed.
    func base() -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(buffer.reserve(max(total, 64) / 4)) }
}
