import CNN

/// How a gradient check perturbs and what it accepts.
///
/// Forward passes run in Float32, so the loss difference of a central difference carries rounding
/// of about 1e-7 of the loss; dividing by 2h magnifies it by 1/(2h). A step of 1e-2 (relative to
/// the value, at least 1e-2 absolute) keeps that noise near 1e-5 while the truncation error, h^2
/// times the third derivative, stays far below the tolerances for the smooth pieces of these layers.
public struct GradientCheckOptions: Sendable {
    /// h = step * max(1, |x|).
    public var step: Double
    /// Bound on ||analytic - numerical|| / max(||analytic||, ||numerical||) for each tensor.
    public var relativeTolerance: Double
    /// Bound on |a_i - n_i| / max(|a_i|, |n_i|, elementFloor * max_j |n_j|) for every element.
    public var elementTolerance: Double
    /// Elements far smaller than the tensor's largest are judged against this fraction of the
    /// largest, so that Float rounding in near-zero entries does not fail the check.
    public var elementFloor: Double
    /// A tensor whose numerical gradient is exactly zero proves nothing; by default that fails.
    public var allowsZeroGradient: Bool

    public init(
        step: Double = 1e-2, relativeTolerance: Double = 1e-2, elementTolerance: Double = 5e-2,
        elementFloor: Double = 1e-2, allowsZeroGradient: Bool = false
    ) {
        self.step = step
        self.relativeTolerance = relativeTolerance
        self.elementTolerance = elementTolerance
        self.elementFloor = elementFloor
        self.allowsZeroGradient = allowsZeroGradient
    }
}

/// The analytic and numerical gradient of one tensor, and how far apart they are.
public struct GradientComparison: Sendable, CustomStringConvertible {
    /// "input", "weight", "bias", or a network slot such as "3.weight".
    public var tensor: String
    public var shape: [Int]
    public var analytic: [Double]
    public var numerical: [Double]
    /// ||analytic - numerical|| / max(||analytic||, ||numerical||); 0 when both are zero.
    public var relativeError: Double
    /// The flat index of the element with the largest scaled error.
    public var worstIndex: Int
    /// That element's error, scaled as `GradientCheckOptions.elementTolerance` describes.
    public var worstElementError: Double
    /// Why this tensor failed, or nil when it passed.
    public var failure: String?

    public var passed: Bool { failure == nil }

    /// Compares two gradients of a tensor of the given shape under `options`' tolerances.
    public init(tensor: String, shape: [Int], analytic: [Double], numerical: [Double], options: GradientCheckOptions = GradientCheckOptions()) {
        precondition(analytic.count == numerical.count && analytic.count == shape.reduce(1, *))
        self.tensor = tensor
        self.shape = shape
        self.analytic = analytic
        self.numerical = numerical
        var difference = 0.0, analyticNorm = 0.0, numericalNorm = 0.0, largest = 0.0
        for i in analytic.indices {
            let d = analytic[i] - numerical[i]
            difference += d * d
            analyticNorm += analytic[i] * analytic[i]
            numericalNorm += numerical[i] * numerical[i]
            largest = max(largest, abs(numerical[i]))
        }
        let scale = max(analyticNorm, numericalNorm).squareRoot()
        relativeError = scale == 0 ? 0 : difference.squareRoot() / scale
        let floor = max(options.elementFloor * largest, 1e-12)
        worstIndex = 0
        worstElementError = 0
        for i in analytic.indices {
            let error = abs(analytic[i] - numerical[i]) / max(abs(analytic[i]), abs(numerical[i]), floor)
            if error > worstElementError || !error.isFinite {
                worstElementError = error
                worstIndex = i
                if !error.isFinite { break }
            }
        }
        let worst = "worst element \(tensor)\(GradientComparison.format(index: worstIndex, shape: shape)): "
            + "analytic \(analytic[worstIndex]), numerical \(numerical[worstIndex])"
        if analytic.contains(where: { !$0.isFinite }) || numerical.contains(where: { !$0.isFinite }) {
            failure = "\(tensor): gradient is not finite; \(worst)"
        } else if numericalNorm == 0 && !options.allowsZeroGradient {
            failure = "\(tensor): the numerical gradient is all zero, so the check proves nothing "
                + "(analytic norm \(analyticNorm.squareRoot())); choose inputs through which this tensor reaches the loss"
        } else if !(relativeError < options.relativeTolerance) {
            failure = "\(tensor): relative error of the whole gradient \(relativeError) exceeds "
                + "\(options.relativeTolerance); \(worst)"
        } else if !(worstElementError < options.elementTolerance) {
            failure = "\(tensor): element error \(worstElementError) exceeds \(options.elementTolerance); \(worst)"
        } else {
            failure = nil
        }
    }

    public var description: String {
        let verdict = failure == nil ? "ok" : "FAILED"
        return "\(tensor) \(shape): relative error \(relativeError), worst element "
            + "\(GradientComparison.format(index: worstIndex, shape: shape)) error \(worstElementError) "
            + "(analytic \(analytic[worstIndex]), numerical \(numerical[worstIndex])): \(verdict)"
    }

    /// "[1, 0, 2, 3]" for a flat index into a row-major tensor of the given shape.
    static func format(index: Int, shape: [Int]) -> String {
        var remainder = index
        var coordinates = [Int](repeating: 0, count: shape.count)
        for axis in shape.indices.reversed() {
            coordinates[axis] = remainder % max(shape[axis], 1)
            remainder /= max(shape[axis], 1)
        }
        return "[" + coordinates.map(String.init).joined(separator: ", ") + "]"
    }
}

/// The outcome of a gradient check: one comparison per tensor and any other problem found.
public struct GradientCheckReport: Sendable, CustomStringConvertible {
    /// What was checked: a layer's summary or "network".
    public var subject: String
    public var comparisons: [GradientComparison]
    /// Failures that belong to no single tensor (a loss that disagrees with its reference, ...).
    public var problems: [String]

    public var passed: Bool { problems.isEmpty && comparisons.allSatisfy(\.passed) }

    public func comparison(_ tensor: String) -> GradientComparison? {
        comparisons.first { $0.tensor == tensor }
    }

    /// Every failure first, then every tensor's figures, so an assertion message says it all.
    public var description: String {
        var lines = ["gradient check of \(subject): " + (passed ? "passed" : "FAILED")]
        lines += problems.map { "  " + $0 }
        lines += comparisons.compactMap(\.failure).map { "  " + $0 }
        lines += comparisons.map { "  " + $0.description }
        return lines.joined(separator: "\n")
    }
}

/// The central difference (f(x + h) - f(x - h)) / (x+ - x-) of `evaluate` in the Float at
/// `pointer`, restoring it afterwards. Dividing by the Float values actually stored, not by 2h,
/// removes the error of rounding x +- h to Float.
func centralDifference(at pointer: UnsafeMutablePointer<Float>, step: Double, evaluate: () -> Double) -> Double {
    let original = pointer.pointee
    let h = step * max(1, abs(Double(original)))
    let plus = Float(Double(original) + h)
    let minus = Float(Double(original) - h)
    pointer.pointee = plus
    let above = evaluate()
    pointer.pointee = minus
    let below = evaluate()
    pointer.pointee = original
    return (above - below) / (Double(plus) - Double(minus))
}

/// The numerical gradient of `function` at `point` by central differences, one element at a time;
/// `function` sees the perturbed values through the pointer it is given.
public func numericalGradient(at point: [Float], step: Double = 1e-2, of function: (UnsafePointer<Float>) -> Double) -> [Double] {
    let values = UnsafeMutablePointer<Float>.allocate(capacity: max(point.count, 1))
    defer { values.deallocate() }
    values.initialize(from: point, count: point.count)
    return (0..<point.count).map { i in
        centralDifference(at: values + i, step: step) { function(values) }
    }
}

/// Checks one layer's backward pass against central differences.
///
/// The loss is sum(r * forward(x)) for a fixed random projection r of the output, so d(loss)/d(output)
/// = r is what `backward` receives. The input gradient `backward` returns and the parameter
/// gradients it adds are compared, tensor by tensor, with numerical derivatives of that loss taken
/// in Double around Float forward passes. The gradient buffers are filled with random values before
/// `backward`, and only the change is compared, so a layer that overwrites instead of adding fails.
public func checkLayerGradients(
    _ bound: BoundLayer, input: [Float], batch: Int, context: PassContext = PassContext(mode: .training),
    projectionSeed: UInt64 = 0x5EED, options: GradientCheckOptions = GradientCheckOptions()
) -> GradientCheckReport {
    let layer = bound.layer
    precondition(input.count == batch * layer.inputShape.count, "input has \(input.count) values, \(layer.summary) wants \(batch) x \(layer.inputShape)")
    let outputCount = batch * layer.outputShape.count
    let projection = TestArrays.normal(count: outputCount, seed: projectionSeed, stream: 7)
    let previous = TestArrays.normal(count: bound.parameterCount, seed: projectionSeed, stream: 8)

    let x = UnsafeMutablePointer<Float>.allocate(capacity: max(input.count, 1))
    defer { x.deallocate() }
    x.initialize(from: input, count: input.count)

    func loss() -> Double {
        let out = layer.forward(x, batch: batch, context: context)
        var sum = 0.0
        for i in 0..<outputCount { sum += Double(projection[i]) * Double(out[i]) }
        return sum
    }

    // Analytic: one forward at x, then backward with d(loss)/d(output) = r.
    bound.gradients.pointer.update(from: previous, count: previous.count)
    _ = loss()
    let analyticInput: [Double] = projection.withUnsafeBufferPointer { r in
        let dx = layer.backward(r.baseAddress!, batch: batch)
        return (0..<input.count).map { Double(dx[$0]) }
    }
    let analyticParameters: [Double] = (0..<bound.parameterCount).map {
        Double(bound.gradients.pointer[$0]) - Double(previous[$0])
    }

    let numericalInput = (0..<input.count).map { i in
        centralDifference(at: x + i, step: options.step, evaluate: loss)
    }
    let numericalParameters = (0..<bound.parameterCount).map { i in
        centralDifference(at: bound.parameters.pointer + i, step: options.step, evaluate: loss)
    }

    let inputShape = [batch] + layer.inputShape.dimensions
    var comparisons = [GradientComparison(
        tensor: "input", shape: inputShape, analytic: analyticInput, numerical: numericalInput, options: options)]
    for tensor in bound.tensors {
        let range = tensor.offset..<(tensor.offset + tensor.count)
        comparisons.append(GradientComparison(
            tensor: tensor.name, shape: tensor.shape, analytic: Array(analyticParameters[range]),
            numerical: Array(numericalParameters[range]), options: options))
    }
    return GradientCheckReport(subject: layer.summary, comparisons: comparisons, problems: [])
}

/// The mean softmax cross-entropy of `batch` rows of logits, computed in Double as the reference
/// for `SoftmaxCrossEntropy`: target (1 - e) on the label plus e / classes everywhere.
public func referenceCrossEntropy(logits: [Float], labels: [Int32], classes: Int, labelSmoothing: Double = 0) -> Double {
    let batch = labels.count
    precondition(logits.count == batch * classes)
    var total = 0.0
    for n in 0..<batch {
        let row = logits[(n * classes)..<((n + 1) * classes)].map(Double.init)
        let maximum = row.max()!
        let logSum = maximum + log(row.reduce(0) { $0 + exp($1 - maximum) })
        for j in 0..<classes {
            let target = (j == Int(labels[n]) ? 1 - labelSmoothing : 0) + labelSmoothing / Double(classes)
            total -= target * (row[j] - logSum)
        }
    }
    return total / Double(batch)
}

/// Checks a whole network's `computeGradients` (softmax cross-entropy, mean over the batch)
/// against central differences of the mean loss, for every parameter slot.
///
/// The numerical loss is computed in Double from the Float logits by `referenceCrossEntropy`, so
/// the check also catches a loss whose gradient and value disagree; the loss `computeGradients`
/// reports must match that reference too.
public func checkNetworkGradients(
    _ network: Network, images: [Float], labels: [Int32], context: PassContext = PassContext(mode: .training),
    loss: SoftmaxCrossEntropy = SoftmaxCrossEntropy(), options: GradientCheckOptions = GradientCheckOptions()
) -> GradientCheckReport {
    let batch = labels.count
    let classes = network.outputShape.count
    precondition(images.count == batch * network.inputShape.count, "images have \(images.count) values, the network wants \(batch) x \(network.inputShape)")
    let smoothing = Double(loss.labelSmoothing)
    var problems: [String] = []

    return images.withUnsafeBufferPointer { imageBuffer in
        let x = imageBuffer.baseAddress!
        func meanLoss() -> Double {
            let logits = network.forward(x, batch: batch, context: context)
            let values = Array(UnsafeBufferPointer(start: logits, count: batch * classes))
            return referenceCrossEntropy(logits: values, labels: labels, classes: classes, labelSmoothing: smoothing)
        }

        let score = labels.withUnsafeBufferPointer { y in
            network.computeGradients(images: x, labels: y.baseAddress!, batch: batch, context: context, loss: loss)
        }
        let analytic = (0..<network.parameterCount).map { Double(network.gradients.pointer[$0]) }
        let reference = meanLoss()
        if !(abs(score.meanLoss - reference) <= 1e-5 * max(1, abs(reference))) {
            problems.append("loss: computeGradients reports mean loss \(score.meanLoss), the Double reference is \(reference)")
        }
        if score.samples != batch {
            problems.append("loss: computeGradients reports \(score.samples) samples for a batch of \(batch)")
        }

        let numerical = (0..<network.parameterCount).map { i in
            centralDifference(at: network.parameters.pointer + i, step: options.step, evaluate: meanLoss)
        }
        let comparisons = network.parameterSlots.map { slot in
            let range = slot.offset..<(slot.offset + slot.count)
            return GradientComparison(
                tensor: slot.name, shape: slot.shape, analytic: Array(analytic[range]),
                numerical: Array(numerical[range]), options: options)
        }
        return GradientCheckReport(subject: "network", comparisons: comparisons, problems: problems)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
