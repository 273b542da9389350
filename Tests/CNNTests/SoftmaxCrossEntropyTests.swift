import CNN
import TestSupport
import XCTest

final class SoftmaxCrossEntropyTests: XCTestCase {
    /// Evaluates `loss` on rows of logits; returns the score and d(mean loss)/d(logits).
    private func evaluate(_ loss: SoftmaxCrossEntropy, logits: [Float], labels: [Int32], classes: Int) -> (BatchScore, [Float]) {
        var gradient = [Float](repeating: .nan, count: logits.count)
        let score = logits.withUnsafeBufferPointer { x in
            labels.withUnsafeBufferPointer { y in
                gradient.withUnsafeMutableBufferPointer { g in
                    loss.evaluate(logits: x.baseAddress!, labels: y.baseAddress!, batch: labels.count, classes: classes, gradient: g.baseAddress!)
                }
            }
        }
        return (score, gradient)
    }

    func testLossOfSmallBatchMatchesHandComputation() {
        // Row 0: logits 1, 2, 3, label 2: -log(e^3 / (e + e^2 + e^3)) = log(1 + e^-1 + e^-2).
        // Row 1: logits 3, 1, 0, label 1: -log(e / (e^3 + e + 1)) = log(e^2 + 1 + e^-1).
        let (score, _) = evaluate(SoftmaxCrossEntropy(), logits: [1, 2, 3, 3, 1, 0], labels: [2, 1], classes: 3)
        let expected = log(1 + exp(-1.0) + exp(-2.0)) + log(exp(2.0) + 1 + exp(-1.0))
        XCTAssertEqual(score.lossSum, expected, accuracy: 1e-5)
        XCTAssertEqual(score.meanLoss, expected / 2, accuracy: 1e-5)
        XCTAssertEqual(score.samples, 2)
        XCTAssertEqual(score.correct, 1)
    }

    func testGradientIsSoftmaxMinusOneHotOverBatch() {
        let (_, gradient) = evaluate(SoftmaxCrossEntropy(), logits: [1, 2, 3, 3, 1, 0], labels: [2, 1], classes: 3)
        let first = [1.0, 2, 3].map { exp($0) / (exp(1.0) + exp(2.0) + exp(3.0)) }
        let second = [3.0, 1, 0].map { exp($0) / (exp(3.0) + exp(1.0) + 1) }
        let expected = [first[0], first[1], first[2] - 1, second[0], second[1] - 1, second[2]].map { $0 / 2 }
        for i in expected.indices {
            XCTAssertEqual(Double(gradient[i]), expected[i], accuracy: 1e-6, "element \(i)")
        }
    }

    private func checkAgainstFiniteDifferences(labelSmoothing: Float, file: StaticString = #filePath, line: UInt = #line) {
        let classes = 5, batch = 3
        let loss = SoftmaxCrossEntropy(labelSmoothing: labelSmoothing)
        let logits = TestArrays.normal(count: batch * classes, seed: 31, scale: 2)
        let labels = TestArrays.labels(count: batch, classes: classes, seed: 31)
        let (_, gradient) = evaluate(loss, logits: logits, labels: labels, classes: classes)
        let numerical = labels.withUnsafeBufferPointer { y in
            numericalGradient(at: logits) { x in
                loss.evaluate(logits: x, labels: y.baseAddress!, batch: batch, classes: classes, gradient: nil).meanLoss
            }
        }
        let comparison = GradientComparison(
            tensor: "logits", shape: [batch, classes], analytic: gradient.map(Double.init), numerical: numerical)
        XCTAssertTrue(comparison.passed, comparison.description, file: file, line: line)
    }

    func testGradientMatchesFiniteDifferences() {
        checkAgainstFiniteDifferences(labelSmoothing: 0)
    }

    func testGradientWithLabelSmoothingMatchesFiniteDifferences() {
        checkAgainstFiniteDifferences(labelSmoothing: 0.1)
    }

    func testLossAndGradientStayFiniteForLogitsOfTenThousand() {
        // Row 0 puts +1e4 on a wrong class: loss 2e4, the true class's gradient -1, the winner's +1.
        // Row 1 puts +1e4 on the label: loss 0, gradient 0.
        let (score, gradient) = evaluate(SoftmaxCrossEntropy(), logits: [1e4, -1e4, 0, -1e4, 1e4, 0], labels: [1, 1], classes: 3)
        XCTAssertTrue(score.lossSum.isFinite)
        XCTAssertEqual(score.lossSum, 2e4, accuracy: 1)
        XCTAssertTrue(gradient.allSatisfy(\.isFinite), "\(gradient)")
        let expected: [Float] = [0.5, -0.5, 0, 0, 0, 0]
        for i in expected.indices { XCTAssertEqual(gradient[i], expected[i], accuracy: 1e-6, "element \(i)") }
        XCTAssertEqual(score.correct, 1)
    }

    func testLabelSmoothingFollowsTheFormula() {
        // With smoothing e over K classes: loss = (1 - e) * CE(label) + (e / K) * sum_j -log p_j.
        let e = 0.2
        let logits: [Float] = [0.5, -1, 2, 0, 1, 3, -2, 0]
        let labels: [Int32] = [2, 0]
        let (plain, _) = evaluate(SoftmaxCrossEntropy(), logits: logits, labels: labels, classes: 4)
        let (smoothed, _) = evaluate(SoftmaxCrossEntropy(labelSmoothing: Float(e)), logits: logits, labels: labels, classes: 4)
        var expected = 0.0
        for n in 0..<2 {
            let row = logits[(n * 4)..<(n * 4 + 4)].map(Double.init)
            let logSum = log(row.reduce(0) { $0 + exp($1) })
            let negativeLogProbabilities = row.map { logSum - $0 }
            expected += (1 - e) * negativeLogProbabilities[Int(labels[n])] + e / 4 * negativeLogProbabilities.reduce(0, +)
        }
        XCTAssertEqual(smoothed.lossSum, expected, accuracy: 1e-5)
        XCTAssertEqual(smoothed.lossSum, referenceCrossEntropy(logits: logits, labels: labels, classes: 4, labelSmoothing: e) * 2, accuracy: 1e-5)
        XCTAssertNotEqual(smoothed.lossSum, plain.lossSum, accuracy: 1e-3)
    }

    func testCorrectCountsRowsWhoseFirstMaximumIsTheLabel() {
        let logits: [Float] = [
            0, 5, 1,  // argmax 1, label 1: correct
            9, 5, 1,  // argmax 0, label 2: wrong
            2, 2, 1,  // tie: the first maximum (0) counts, label 1: wrong
            0, 1, 7,  // argmax 2, label 2: correct
        ]
        let (score, _) = evaluate(SoftmaxCrossEntropy(), logits: logits, labels: [1, 2, 1, 2], classes: 3)
        XCTAssertEqual(score.correct, 2)
        XCTAssertEqual(score.accuracy, 0.5)
    }

    func testBatchScoresAddAcrossMicroBatches() {
        let loss = SoftmaxCrossEntropy()
        let logits = TestArrays.normal(count: 4 * 3, seed: 32)
        let labels = TestArrays.labels(count: 4, classes: 3, seed: 32)
        let (whole, _) = evaluate(loss, logits: logits, labels: labels, classes: 3)
        let (first, _) = evaluate(loss, logits: Array(logits[0..<6]), labels: Array(labels[0..<2]), classes: 3)
        let (second, _) = evaluate(loss, logits: Array(logits[6..<12]), labels: Array(labels[2..<4]), classes: 3)
        let sum = first + second
        XCTAssertEqual(sum.samples, whole.samples)
        XCTAssertEqual(sum.correct, whole.correct)
        XCTAssertEqual(sum.lossSum, whole.lossSum, accuracy: 1e-9)
    }

    func testTopFiveCountsTheTrueClassAmongTheFiveHighestScoresAndTiesForIt() {
        // Seven classes, scores 0...6 by class; the true class ranks 0 (class 6), 4 (class 2),
        // 5 (class 1); and a tie with the fifth highest counts for the true class.
        let row: [Float] = [0, 1, 2, 3, 4, 5, 6]
        let tie: [Float] = [0, 2, 2, 3, 4, 5, 6]
        let (score, _) = evaluate(SoftmaxCrossEntropy(), logits: row + row + row + tie, labels: [6, 2, 1, 1], classes: 7)
        XCTAssertEqual(score.correct, 1)
        XCTAssertEqual(score.topFiveCorrect, 3)
        XCTAssertEqual(score.topFiveAccuracy, 0.75)
        XCTAssertEqual((score + score).topFiveCorrect, 6, "top-5 counts add up with the rest of a score")
    }
}
