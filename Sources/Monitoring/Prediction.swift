import CNN
import Foundation
import JSONWriting

/// `cnn predict`: the most probable classes of one image under a checkpoint's model.
public struct Prediction: Sendable {
    /// One class and its softmax probability.
    public struct Candidate: Sendable, Equatable {
        public var classIndex: Int
        public var name: String
        /// Softmax probability, 0...1.
        public var probability: Double
    }

    /// The image as named on the command line.
    public var source: String
    /// Best first.
    public var candidates: [Candidate]
    /// The true class, when known (IDX samples with a labels file beside them).
    public var trueClass: Int?
    /// Softmax over all classes, in class order.
    public var probabilities: [Double]

    /// Runs the model on one image and keeps the `top` most probable classes.
    public static func run(_ model: CheckpointModel, image: ImageReference, top: Int = 5) throws -> Prediction {
        let input = try model.input(for: image)
        let classes = model.network.outputShape.count
        let logits = input.withUnsafeBufferPointer { buffer in
            Array(UnsafeBufferPointer(start: model.network.forward(buffer.baseAddress!, batch: 1, context: .inference), count: classes))
        }
        let probabilities = softmax(logits)
        let ranked = probabilities.indices.sorted { probabilities[$0] != probabilities[$1] ? probabilities[$0] > probabilities[$1] : $0 < $1 }
        let candidates = ranked.prefix(max(top, 1)).map {
            Candidate(classIndex: $0, name: model.className($0), probability: probabilities[$0])
        }
        return Prediction(source: image.description, candidates: candidates, trueClass: image.label(), probabilities: probabilities)
    }

    /// Softmax in Double, shifted by the maximum so large logits stay finite.
    static func softmax(_ logits: [Float]) -> [Double] {
        let highest = Double(logits.max() ?? 0)
        let exponentials = logits.map { exp(Double($0) - highest) }
        let total = exponentials.reduce(0, +)
        return exponentials.map { $0 / total }
    }

    /// `cnn predict --json`: one JSON object for this image, with every class's probability in
    /// class order (`probabilities`) and the top candidates.
    public func json(classNames: [String]) -> String {
        func name(_ index: Int) -> String { index < classNames.count ? classNames[index] : "class \(index)" }
        let all = probabilities.indices.map {
            JSONObject().int("class", $0).string("name", name($0)).double("probability", probabilities[$0]).text
        }
        let top = candidates.map { JSONObject().int("class", $0.classIndex).string("name", $0.name).double("probability", $0.probability).text }
        var object = JSONObject().string("image", source)
        if let trueClass { object = object.int("true_class", trueClass) }
        return object.raw("top", "[" + top.joined(separator: ",") + "]").raw("probabilities", "[" + all.joined(separator: ",") + "]").text
    }

    /// The lines `cnn predict` prints for this image.
    public func text(classNames: [String]) -> String {
        var header = "\(source):"
        if let trueClass {
            let name = trueClass < classNames.count ? classNames[trueClass] : "class \(trueClass)"
            header += " (true class: \(name)\(candidates.first?.classIndex == trueClass ? ", predicted correctly" : ""))"
        }
        let width = candidates.map(\.name.count).max() ?? 8
        let rows = candidates.enumerated().map { rank, candidate in
            "  \(rank + 1). \(Format.pad(candidate.name, width))  \(Format.padLeft(Format.percent(candidate.probability), 7))"
        }
        return ([header] + rows).joined(separator: "\n")
    }
}
