import CNN
import TestSupport
import XCTest

/// Fails at the first element where `actual` and `expected` differ by more than
/// tolerance * max(1, |expected|), naming the element.
func assertClose(
    _ actual: [Float], _ expected: [Double], tolerance: Double = 1e-5, _ message: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line
) {
    guard actual.count == expected.count else {
        XCTFail("\(message()): \(actual.count) values, expected \(expected.count)", file: file, line: line)
        return
    }
    for i in expected.indices where !(abs(Double(actual[i]) - expected[i]) <= tolerance * max(1, abs(expected[i]))) {
        XCTFail("\(message()): element \(i) is \(actual[i]), expected \(expected[i])", file: file, line: line)
        return
    }
}

/// Checks every gradient of `layer` (input and each parameter) against central differences on
/// `input` (random normal when nil), with parameters drawn N(0, 0.5^2) unless `fill` says otherwise.
@discardableResult
func assertGradientsMatch(
    _ layer: Layer, batch: Int, input: [Float]? = nil, seed: UInt64, fill: ParameterFill = .normal(scale: 0.5),
    context: PassContext = PassContext(mode: .training), options: GradientCheckOptions = GradientCheckOptions(),
    prepare: (BoundLayer) -> Void = { _ in }, _ message: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line
) -> GradientCheckReport {
    let bound = BoundLayer(layer, seed: seed, fill: fill)
    prepare(bound)
    let values = input ?? TestArrays.normal(count: batch * layer.inputShape.count, seed: seed, stream: 1)
    let report = checkLayerGradients(bound, input: values, batch: batch, context: context, projectionSeed: seed, options: options)
    XCTAssertTrue(report.passed, "\(message()) \(layer.summary), batch \(batch), input \(layer.inputShape)\n\(report)", file: file, line: line)
    return report
}
