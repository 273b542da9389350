import Foundation
import CNN
import TestSupport
import XCTest

/// The rounding to bf16 against hand-computed bit patterns, and bf16 products of every layer that
/// has them against Float32 references.
///
/// Tolerances, and why. A bf16 value has 8 significant bits, so rounding to nearest moves an
/// operand by at most 2^-9 of itself, and a product of two rounded operands by at most
/// 2^-8 + 2^-18 of itself; oneDNN sums the products in Float32 (relative error k 2^-24, far below).
/// An output that sums products a_i b_i therefore lies within about 2^-8 sum |a_i b_i| of the Float32
/// result; the tests allow 2^-7 sum |a_i| |b_i|, the bound computed by the Float32 layer itself on
/// |input|, |weights| and |output gradient|. A second, tight check runs the Float32 layer on
/// operands rounded beforehand: that must agree to Float32 rounding (1e-5 of the same bound),
/// which shows the rounding happens to exactly the operands of each product and nowhere else.
final class BFloat16Tests: XCTestCase {
    override func setUp() {
        super.setUp()
        BLAS.useSingleThread()
    }

    private func skipUnlessAvailable() throws {
        if !BFloat16Support.isAvailable { throw XCTSkip("no bf16 products here: \(BFloat16Support.missingReason)") }
    }

    // MARK: Rounding

    func testRoundingToBFloat16MatchesHandComputedBitPatterns() {
        let cases: [(UInt32, UInt16, String)] = [
            (0x3F80_0000, 0x3F80, "1 is exact"),
            (0xBFC0_0000, 0xBFC0, "-1.5 is exact"),
            (0x3F80_7FFF, 0x3F80, "below half an ulp rounds down"),
            (0x3F80_8001, 0x3F81, "above half an ulp rounds up"),
            (0x3F80_8000, 0x3F80, "a tie goes to the even neighbour (down)"),
            (0x3F81_8000, 0x3F82, "a tie goes to the even neighbour (up)"),
            (0xBF81_8000, 0xBF82, "ties to even, negative"),
            (0x3FFF_8000, 0x4000, "a tie carries into the exponent"),
            (0x7F7F_7FFF, 0x7F7F, "a large value just below the tie stays finite"),
            (0x7F7F_FFFF, 0x7F80, "the largest Float32 rounds to infinity"),
            (0x7F80_0000, 0x7F80, "+infinity"),
            (0xFF80_0000, 0xFF80, "-infinity"),
            (0x7FC0_0000, 0x7FC0, "quiet NaN"),
            (0x7F80_0001, 0x7FC0, "a signalling NaN with a low payload becomes quiet, not infinity"),
            (0x7F81_0000, 0x7FC1, "a signalling NaN keeps its top payload bits"),
            (0x7FFF_FFFF, 0x7FFF, "a NaN whose rounding would carry into the sign stays a positive NaN"),
            (0xFFC0_0001, 0xFFC0, "negative NaN"),
            (0x0000_0000, 0x0000, "+0"),
            (0x8000_0000, 0x8000, "-0"),
            (0x0000_0001, 0x0000, "the least subnormal rounds to zero"),
            (0x0000_8000, 0x0000, "a subnormal tie goes to even (zero)"),
            (0x0001_8000, 0x0002, "a subnormal tie goes to even (up)"),
            (0x0000_8001, 0x0001, "above half rounds up to the least bf16 subnormal"),
            (0x007F_FFFF, 0x0080, "the largest subnormal rounds to the least normal"),
            (0x8040_0000, 0x8040, "a negative subnormal that is exact"),
        ]
        for (input, expected, why) in cases {
            XCTAssertEqual(BFloat16.round(Float(bitPattern: input)), expected, "\(String(input, radix: 16)): \(why)")
        }
        XCTAssertEqual(BFloat16.float(0x3F82), 1.015625)
        XCTAssertEqual(BFloat16.rounded(1 + 1.0 / 512), 1)
    }

    func testVectorRoundingGivesTheScalarBitsForEveryKindOfValue() {
        // Random bit patterns cover NaNs, infinities and subnormals; 1031 values leave a tail.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        var values: [Float] = (0..<1031).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(bitPattern: UInt32(truncatingIfNeeded: state >> 32))
        }
        values += [Float.nan, -Float.nan, .infinity, -.infinity, 0, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude]
        var rounded = [UInt16](repeating: 0xFFFF, count: values.count)
        rounded.withUnsafeMutableBufferPointer { BFloat16.round(values, into: $0.baseAddress!, count: values.count) }
        for (index, value) in values.enumerated() where rounded[index] != BFloat16.round(value) {
            XCTFail("value \(index) (\(String(value.bitPattern, radix: 16))): \(String(rounded[index], radix: 16)) vs scalar \(String(BFloat16.round(value), radix: 16))")
            return
        }
    }

    func testBFloat16GEMMOfExactOperandsMatchesTheExactProductForEveryTransposition() throws {
        try skipUnlessAvailable()
        // Small integers are exact in bf16, and their sums of products exact in Float32.
        let m = 5, n = 7, k = 19
        let a = (0..<(m * k)).map { Float($0 % 7) - 3 }, b = (0..<(k * n)).map { Float($0 % 5) - 2 }
        func element(_ matrix: [Float], _ row: Int, _ column: Int, columns: Int) -> Float { matrix[row * columns + column] }
        for transposeA in [false, true] {
            for transposeB in [false, true] {
                // Store op(A) = A (m x k) transposed when asked, and likewise B.
                let storedA = transposeA ? (0..<(k * m)).map { element(a, $0 % m, $0 / m, columns: k) } : a
                let storedB = transposeB ? (0..<(n * k)).map { element(b, $0 % k, $0 / k, columns: n) } : b
                let roundedA = storedA.map(BFloat16.round), roundedB = storedB.map(BFloat16.round)
                var c = [Float](repeating: 1, count: m * n)
                BLAS.gemmBFloat16(
                    transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: 2, a: roundedA, lda: transposeA ? m : k,
                    b: roundedB, ldb: transposeB ? k : n, beta: 1, c: &c, ldc: n)
                for i in 0..<m {
                    for j in 0..<n {
                        let exact = 2 * (0..<k).reduce(Float(0)) { $0 + element(a, i, $1, columns: k) * element(b, $1, j, columns: n) } + 1
                        XCTAssertEqual(c[i * n + j], exact, "transposeA \(transposeA) transposeB \(transposeB) at (\(i), \(j))")
                    }
                }
            }
        }
    }

    // MARK: Layers against Float32

    func testConvolutionsInBFloat16MatchFloat32WithinTheBFloat16Bound() throws {
        try skipUnlessAvailable()
        // Convolutions of every configuration, in both bf16 kernels.
        let convolutionCases: [(String, () throws -> Conv2D)] = [
        ("stride 2, padding 1", { try Conv2D(input: FeatureShape(channels: 3, height: 9, width: 9), filters: 4, kernelHeight: 3, kernelWidth: 3, stride: 2, padding: 1) }),
        ("groups 2", { try Conv2D(input: FeatureShape(channels: 4, height: 8, width: 8), filters: 6, kernelHeight: 3, kernelWidth: 3, padding: 1, groups: 2) }),
        ("dilation 2, no bias", { try Conv2D(input: FeatureShape(channels: 2, height: 10, width: 10), filters: 3, kernelHeight: 3, kernelWidth: 3, padding: 2, dilation: 2, bias: false) }),
        ("5x3 kernel, stride 3", { try Conv2D(input: FeatureShape(channels: 3, height: 11, width: 12), filters: 5, kernelHeight: 5, kernelWidth: 3, stride: 3) }),
        ("wide rows (large plane)", { try Conv2D(input: FeatureShape(channels: 16, height: 40, width: 40), filters: 16, kernelHeight: 3, kernelWidth: 3, padding: 1) }),
        ("16-channel blocks, stride 2", { try Conv2D(input: FeatureShape(channels: 32, height: 8, width: 8), filters: 16, kernelHeight: 3, kernelWidth: 3, stride: 2, padding: 1) }),
    ]
        for kernel in [Conv2D.BFloat16Kernel.oneDNNConvolution, .im2colGEMM] {
            for (name, make) in convolutionCases {
                let probe = try make()
                probe.bfloat16Kernel = kernel
                probe.precision = .bf16
                // oneDNN compiles a kernel for every configuration here: none falls back.
                XCTAssertTrue(
                    probe.kernelDescription.hasPrefix(kernel == .oneDNNConvolution ? "oneDNN bf16 convolution (" : "im2col, bf16 GEMM"),
                    "\(name): \(probe.kernelDescription)")
                XCTAssertFalse(probe.kernelDescription.contains("ref"), "\(name): \(probe.kernelDescription)")
                try assertBFloat16MatchesFloat32({ let layer = try make(); layer.bfloat16Kernel = kernel; return layer }, batch: 3, "\(name), \(kernel)")
            }
        }
        // One input channel (LeNet-5's and Fashion-MNIST's first layers) computes with im2col,
        // where it runs faster.
        let single = try Conv2D(input: FeatureShape(channels: 1, height: 12, width: 12), filters: 6, kernelHeight: 5, kernelWidth: 5)
        single.precision = .bf16
        XCTAssertEqual(single.kernelDescription, "im2col, bf16 GEMM")
        let others: [(String, () throws -> Layer)] = [
            ("projection 1x1, stride 2", { try PointwiseConv2D(input: FeatureShape(channels: 6, height: 8, width: 8), filters: 5, stride: 2) }),
            ("dense", { try Dense(input: FeatureShape(channels: 3, height: 4, width: 5), units: 7) }),
        ]
        for (name, make) in others {
            try assertBFloat16MatchesFloat32(make, batch: 3, name)
        }
    }

    func testOneDNNConvolutionGivesTheSameBitsAcrossBatchSizesRepeatsAndConcurrentReplicas() throws {
        try skipUnlessAvailable()
        // ResNet-style shapes, with 16-channel blocks (nChw16c) and a bias.
        let input = FeatureShape(channels: 16, height: 12, width: 12)
        func make() throws -> Conv2D {
            let layer = try Conv2D(input: input, filters: 32, kernelHeight: 3, kernelWidth: 3, padding: 1)
            layer.precision = .bf16
            return layer
        }
        let parameters = TestArrays.normal(count: try make().parameterCount, seed: 11, stream: 1, scale: 0.3)
        let x = TestArrays.normal(count: 3 * input.count, seed: 11, stream: 2)
        let dy = TestArrays.normal(count: 3 * 32 * 144, seed: 11, stream: 3)
        let fresh = runPass(try make(), parameters: parameters, input: Array(x[..<(2 * input.count)]), outputGradient: Array(dy[..<(2 * 32 * 144)]), batch: 2)
        // A layer that computed a batch of 3 first (other primitives, larger buffers), then 2.
        let used = try make()
        _ = runPass(used, parameters: parameters, input: x, outputGradient: dy, batch: 3)
        let again = runPass(used, parameters: parameters, input: Array(x[..<(2 * input.count)]), outputGradient: Array(dy[..<(2 * 32 * 144)]), batch: 2)
        XCTAssertEqual(again.bits, fresh.bits, "a batch's results must not depend on what the layer computed before")
        // Replicas on two threads at once: oneDNN's primitive cache gives both the same primitives,
        // whose scratchpads must not be shared.
        let replicas = [try make(), try make()]
        let results = ResultBox(count: 2)
        let work = ReplicaWork { index in
            for _ in 0..<3 {
                results.set(index, self.runPass(replicas[index], parameters: parameters, input: x, outputGradient: dy, batch: 3).bits)
            }
        }
        DispatchQueue.concurrentPerform(iterations: 2) { work.run($0) }
        let serial = runPass(try make(), parameters: parameters, input: x, outputGradient: dy, batch: 3).bits
        XCTAssertEqual(results.get(0), serial, "replica 0 on its own thread")
        XCTAssertEqual(results.get(1), serial, "replica 1 on its own thread")
    }

    func testWinogradLayerComputesWithTheBFloat16ConvolutionInBFloat16() throws {
        try skipUnlessAvailable()
        let input = FeatureShape(channels: 8, height: 8, width: 8)
        let winograd = try Conv2D(input: input, filters: 8, kernelHeight: 3, kernelWidth: 3, padding: 1)
        try winograd.use(.winograd4x4)
        winograd.precision = .bf16
        XCTAssertEqual(winograd.algorithm, .winograd4x4)
        XCTAssertEqual(winograd.computedAlgorithm, .im2col)
        XCTAssertTrue(winograd.kernelDescription.hasPrefix("oneDNN bf16 convolution"), winograd.kernelDescription)
        let im2col = try Conv2D(input: input, filters: 8, kernelHeight: 3, kernelWidth: 3, padding: 1)
        try im2col.use(.im2col)
        im2col.precision = .bf16
        let parameters = TestArrays.normal(count: winograd.parameterCount, seed: 5, stream: 1, scale: 0.3)
        let x = TestArrays.normal(count: 2 * input.count, seed: 5, stream: 2)
        let dy = TestArrays.normal(count: 2 * winograd.outputShape.count, seed: 5, stream: 3)
        let a = runPass(winograd, parameters: parameters, input: x, outputGradient: dy, batch: 2)
        let b = runPass(im2col, parameters: parameters, input: x, outputGradient: dy, batch: 2)
        XCTAssertEqual(a.bits, b.bits, "a Winograd layer in bf16 must compute exactly as an im2col layer in bf16")
        // Back in fp32 it is Winograd again.
        winograd.precision = .fp32
        XCTAssertEqual(winograd.computedAlgorithm, .winograd4x4)
        XCTAssertEqual(winograd.kernelDescription, "winograd4x4")
    }

    func testSmallNetworkInBFloat16StaysCloseToFloat32() throws {
        try skipUnlessAvailable()
        let spec = ModelSpec(
            input: FeatureShape(channels: 3, height: 16, width: 16),
            layers: [
                .convolution(ConvolutionSpec(filters: 8, kernel: 3, padding: .same)), .batchNorm(BatchNormSpec()), .relu, .maxPool(size: 2, stride: nil, padding: 0),
                .convolution(ConvolutionSpec(filters: 16, kernel: 3, stride: 2, padding: .explicit(1))), .relu,
                .flatten, .dense(units: 32, bias: true), .relu, .dense(units: 10, bias: true),
            ])
        let images = TestArrays.normal(count: 16 * spec.input.count, seed: 9, stream: 1)
        let labels = TestArrays.labels(count: 16, classes: 10, seed: 9, stream: 2)
        let context = PassContext(mode: .training, seed: 9, sampleIndices: Array(0..<16))
        func run(_ precision: Precision) throws -> (loss: Double, gradients: [Float]) {
            let network = try Network(spec)
            network.initialise(seed: 9)
            network.use(precision: precision)
            let score = images.withUnsafeBufferPointer { x in
                labels.withUnsafeBufferPointer { y in
                    network.computeGradients(images: x.baseAddress!, labels: y.baseAddress!, batch: 16, context: context)
                }
            }
            return (score.meanLoss, Array(UnsafeBufferPointer(start: network.gradients.pointer, count: network.parameterCount)))
        }
        let fp32 = try run(.fp32), bf16 = try run(.bf16)
        XCTAssertNotEqual(fp32.gradients, bf16.gradients, "bf16 must change the arithmetic")
        // Four product layers forward and back, each within ~2^-8 relative: the loss within 1%,
        // the whole gradient within 4% (relative L2), with room for the layers' errors to add up.
        XCTAssertEqual(bf16.loss, fp32.loss, accuracy: 0.01 * fp32.loss)
        let difference = zip(bf16.gradients, fp32.gradients).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
        let norm = fp32.gradients.reduce(0.0) { $0 + Double($1) * Double($1) }
        XCTAssertLessThan((difference / norm).squareRoot(), 0.04)
    }

    // MARK: Helpers

    /// One layer's forward and backward outputs.
    private struct PassResult {
        var output: [Float]
        var inputGradient: [Float]
        var parameterGradients: [Float]
        var bits: [UInt32] { (output + inputGradient + parameterGradients).map(\.bitPattern) }
    }

    /// Results written from several threads, each to its own slot.
    private final class ResultBox: @unchecked Sendable {
        // Sendable: each thread writes only its own index, under the lock.
        private var values: [[UInt32]]
        private let lock = NSLock()
        init(count: Int) { values = Array(repeating: [], count: count) }
        func set(_ index: Int, _ value: [UInt32]) { lock.lock(); values[index] = value; lock.unlock() }
        func get(_ index: Int) -> [UInt32] { lock.lock(); defer { lock.unlock() }; return values[index] }
    }

    /// One replica's work, handed to a thread (each replica and its buffers are used by that thread only).
    private final class ReplicaWork: @unchecked Sendable {
        let run: (Int) -> Void
        init(_ run: @escaping (Int) -> Void) { self.run = run }
    }

    private func runPass(_ layer: Layer, parameters: [Float], input: [Float], outputGradient: [Float], batch: Int) -> PassResult {
        let weights = FloatBuffer(count: parameters.count), gradients = FloatBuffer(count: parameters.count)
        weights.pointer.update(from: parameters, count: parameters.count)
        layer.bind(parameters: weights.pointer, gradients: gradients.pointer)
        return input.withUnsafeBufferPointer { x in
            let y = layer.forward(x.baseAddress!, batch: batch, context: PassContext(mode: .training))
            let output = Array(UnsafeBufferPointer(start: y, count: batch * layer.outputShape.count))
            let dx = outputGradient.withUnsafeBufferPointer { layer.backward($0.baseAddress!, batch: batch) }
            return PassResult(
                output: output, inputGradient: Array(UnsafeBufferPointer(start: dx, count: batch * layer.inputShape.count)),
                parameterGradients: Array(UnsafeBufferPointer(start: gradients.pointer, count: parameters.count)))
        }
    }

    private func setPrecision(_ precision: Precision, of layer: Layer) {
        switch layer {
        case let convolution as Conv2D: convolution.precision = precision
        case let projection as PointwiseConv2D: projection.precision = precision
        case let dense as Dense: dense.precision = precision
        default: XCTFail("\(layer.summary) has no precision")
        }
    }

    /// The checks of the file comment on one layer: bf16 differs from fp32, stays within the
    /// bf16 bound, and equals fp32 on pre-rounded operands to Float32 rounding; bias gradients
    /// (Float32 sums of the output gradient) are exactly fp32's.
    private func assertBFloat16MatchesFloat32(_ make: () throws -> Layer, batch: Int, _ name: String) throws {
        let bf16 = try make(), fp32 = try make(), bound = try make(), rounded = try make()
        setPrecision(.bf16, of: bf16)
        XCTAssertEqual(bf16.parameterCount, fp32.parameterCount)
        let weightCount = bf16.parameterSpecs[0].count
        let parameters = TestArrays.normal(count: bf16.parameterCount, seed: 3, stream: 1, scale: 0.5)
        let input = TestArrays.normal(count: batch * bf16.inputShape.count, seed: 3, stream: 2)
        let outputGradient = TestArrays.normal(count: batch * bf16.outputShape.count, seed: 3, stream: 3)

        let low = runPass(bf16, parameters: parameters, input: input, outputGradient: outputGradient, batch: batch)
        let full = runPass(fp32, parameters: parameters, input: input, outputGradient: outputGradient, batch: batch)
        // Sums of |a| |b| for every output, from the Float32 layer on magnitudes (no bias: it is not a product).
        let magnitudes = parameters.enumerated().map { $0.offset < weightCount ? abs($0.element) : 0 }
        let limit = runPass(bound, parameters: magnitudes, input: input.map(abs), outputGradient: outputGradient.map(abs), batch: batch)
        let onRounded = runPass(
            rounded, parameters: parameters.enumerated().map { $0.offset < weightCount ? BFloat16.rounded($0.element) : $0.element },
            input: input.map(BFloat16.rounded), outputGradient: outputGradient.map(BFloat16.rounded), batch: batch)

        XCTAssertNotEqual(low.output, full.output, "\(name): bf16 must change the forward arithmetic")
        let weightRange = 0..<weightCount
        for (what, a, b, c, m) in [
            ("output", low.output, full.output, onRounded.output, limit.output),
            ("input gradient", low.inputGradient, full.inputGradient, onRounded.inputGradient, limit.inputGradient),
            ("weight gradient", Array(low.parameterGradients[weightRange]), Array(full.parameterGradients[weightRange]),
             Array(onRounded.parameterGradients[weightRange]), Array(limit.parameterGradients[weightRange])),
        ] {
            for i in a.indices {
                let allowed = m[i] / 128 + 1e-6
                if abs(a[i] - b[i]) > allowed {
                    XCTFail("\(name), \(what) \(i): bf16 \(a[i]), fp32 \(b[i]), beyond 2^-7 sum|a||b| = \(allowed)")
                    break
                }
                if abs(a[i] - c[i]) > m[i] * 1e-5 + 1e-7 {
                    XCTFail("\(name), \(what) \(i): bf16 \(a[i]), fp32 on rounded operands \(c[i]): the rounding is not where it should be")
                    break
                }
            }
        }
        // The bias gradient sums the output gradient in Float32 in both precisions.
        XCTAssertEqual(
            low.parameterGradients[weightCount...].map(\.bitPattern), full.parameterGradients[weightCount...].map(\.bitPattern),
            "\(name): bias gradient")
    }
}
