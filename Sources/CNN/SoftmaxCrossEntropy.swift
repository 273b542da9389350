/// The result of scoring one batch: summed loss (so micro-batches combine exactly), correct
/// predictions and the number of samples.
public struct BatchScore: Sendable, Equatable {
    public var lossSum: Double
    public var correct: Int
    /// Samples whose true class is among the five highest scores (ILSVRC's top-5; every sample
    /// when there are five classes or fewer).
    public var topFiveCorrect: Int
    public var samples: Int

    public init(lossSum: Double = 0, correct: Int = 0, topFiveCorrect: Int = 0, samples: Int = 0) {
        self.lossSum = lossSum
        self.correct = correct
        self.topFiveCorrect = topFiveCorrect
        self.samples = samples
    }

    public static func + (a: BatchScore, b: BatchScore) -> BatchScore {
        BatchScore(lossSum: a.lossSum + b.lossSum, correct: a.correct + b.correct,
                   topFiveCorrect: a.topFiveCorrect + b.topFiveCorrect, samples: a.samples + b.samples)
    }

    public var meanLoss: Double { samples == 0 ? 0 : lossSum / Double(samples) }
    public var accuracy: Double { samples == 0 ? 0 : Double(correct) / Double(samples) }
    public var topFiveAccuracy: Double { samples == 0 ? 0 : Double(topFiveCorrect) / Double(samples) }

    /// The true class's place among `scores` from 0: how many classes score strictly higher (a
    /// tie counts for the true class, as `torch.topk` may order ties either way).
    public static func rank(of truth: Int, in scores: UnsafePointer<Float>, classes: Int) -> Int {
        var higher = 0
        for j in 0..<classes where scores[j] > scores[truth] { higher += 1 }
        return higher
    }
}

/// Softmax followed by cross-entropy against integer labels, fused for numerical stability:
/// log-softmax is computed as (x - max) - log(sum(exp(x - max))), so logits of +-1e4 stay finite.
/// With `labelSmoothing` e, the target is (1 - e) on the label plus e / classes everywhere.
public struct SoftmaxCrossEntropy: Sendable {
    public var labelSmoothing: Float

    public init(labelSmoothing: Float = 0) {
        self.labelSmoothing = labelSmoothing
    }

    /// Scores `batch` rows of `classes` logits and, if `gradient` is given, writes
    /// d(mean loss)/d(logits) into it ([N, classes]); the mean is over this batch.
    @discardableResult
    public func evaluate(
        logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, batch: Int, classes: Int,
        gradient: UnsafeMutablePointer<Float>?
    ) -> BatchScore {
        var score = BatchScore(samples: batch)
        let offTarget = labelSmoothing / Float(classes)
        let onTarget = 1 - labelSmoothing + offTarget
        let scale = 1 / Float(batch)
        for n in 0..<batch {
            let row = logits + n * classes
            let label = Int(labels[n])
            var maximum = row[0]
            var best = 0
            for j in 1..<classes where row[j] > maximum {
                maximum = row[j]
                best = j
            }
            if best == label { score.correct += 1 }
            if BatchScore.rank(of: label, in: row, classes: classes) < 5 { score.topFiveCorrect += 1 }
            var sum: Float = 0
            for j in 0..<classes { sum += expf(row[j] - maximum) }
            let logSum = logf(sum)
            // loss = -sum_j target_j * log_softmax_j
            var loss: Float = 0
            for j in 0..<classes {
                let logProbability = row[j] - maximum - logSum
                let target = j == label ? onTarget : offTarget
                if target != 0 { loss -= target * logProbability }
                if let gradient {
                    gradient[n * classes + j] = (expf(logProbability) - target) * scale
                }
            }
            score.lossSum += Double(loss)
        }
        return score
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
