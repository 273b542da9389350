import CNN
import TestSupport
import XCTest

/// y = scale * x with one learnable scalar, and switchable mistakes, to show the gradient checker
/// tells right from wrong (a checker that cannot fail proves nothing about the layers).
private final class ScaleLayer: Layer {
    enum Fault {
        case none
        case doubledInputGradient
        case overwrittenParameterGradient
        case oneWrongInputElement(Int)
        case unusedParameter
    }

    let inputShape: FeatureShape
    var outputShape: FeatureShape { inputShape }
    let fault: Fault
    private var scale: UnsafeMutablePointer<Float>!
    private var scaleGradient: UnsafeMutablePointer<Float>!
    private var savedInput: UnsafePointer<Float>!
    private let output = FloatBuffer()
    private let inputGradient = FloatBuffer()

    init(input: FeatureShape, fault: Fault) {
        inputShape = input
        self.fault = fault
    }

    var summary: String { "Scale(\(fault))" }
    var parameterSpecs: [ParameterSpec] { [ParameterSpec(name: "scale", shape: [1], initialiser: .constant(1.5))] }

    func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        scale = parameters
        scaleGradient = gradients
    }

    func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        savedInput = input
        let count = batch * inputShape.count
        let out = output.reserve(count)
        let factor: Float
        if case .unusedParameter = fault { factor = 1.5 } else { factor = scale[0] }
        for i in 0..<count { out[i] = factor * input[i] }
        return out
    }

    func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let dInput = inputGradient.reserve(count)
        var sum: Float = 0
        for i in 0..<count {
            dInput[i] = scale[0] * outputGradient[i]
            sum += outputGradient[i] * savedInput[i]
        }
        switch fault {
        case .none, .unusedParameter:
            scaleGradient[0] += sum
        case .doubledInputGradient:
            for i in 0..<count { dInput[i] *= 2 }
            scaleGradient[0] += sum
        case .overwrittenParameterGradient:
            scaleGradient[0] = sum
        case .oneWrongInputElement(let index):
            dInput[index] += 0.5
            scaleGradient[0] += sum
        }
        return dInput
    }
}

final class GradientCheckerTests: XCTestCase {
    private let shape = FeatureShape(channels: 2, height: 3, width: 2)

    private func check(_ fault: ScaleLayer.Fault) -> GradientCheckReport {
        let layer = ScaleLayer(input: shape, fault: fault)
        return checkLayerGradients(BoundLayer(layer), input: TestArrays.normal(count: 2 * shape.count, seed: 70), batch: 2)
    }

    func testCheckerAcceptsACorrectLayer() {
        let report = check(.none)
        XCTAssertTrue(report.passed, report.description)
        XCTAssertEqual(report.comparisons.map(\.tensor), ["input", "scale"])
        XCTAssertEqual(report.comparison("scale")?.relativeError ?? 1, 0, accuracy: 1e-4)
    }

    func testCheckerRejectsAWrongInputGradientAndSaysWhichTensor() {
        let report = check(.doubledInputGradient)
        XCTAssertFalse(report.passed)
        XCTAssertFalse(report.comparison("input")?.passed ?? true)
        XCTAssertTrue(report.comparison("scale")?.passed ?? false, report.description)
        XCTAssertTrue(report.description.contains("input: relative error"), report.description)
    }

    func testCheckerRejectsAParameterGradientThatOverwritesInsteadOfAdding() {
        let report = check(.overwrittenParameterGradient)
        XCTAssertFalse(report.comparison("scale")?.passed ?? true, report.description)
        XCTAssertTrue(report.comparison("input")?.passed ?? false, report.description)
    }

    func testCheckerFindsASingleWrongElementAndNamesItsIndex() {
        // Flat index 17 of a [2, 2, 3, 2] input is sample 1, channel 0, row 2, column 1.
        let report = check(.oneWrongInputElement(17))
        let input = report.comparison("input")
        XCTAssertFalse(input?.passed ?? true, report.description)
        XCTAssertEqual(input?.worstIndex, 17)
        XCTAssertTrue(report.description.contains("input[1, 0, 2, 1]"), report.description)
        XCTAssertTrue(report.description.contains("analytic") && report.description.contains("numerical"), report.description)
    }

    func testCheckerCallsAGradientOfAParameterThatNeverReachesTheLossVacuous() {
        let report = check(.unusedParameter)
        let scale = report.comparison("scale")
        XCTAssertFalse(scale?.passed ?? true, report.description)
        XCTAssertTrue(scale?.failure?.contains("proves nothing") ?? false, report.description)
    }
}
