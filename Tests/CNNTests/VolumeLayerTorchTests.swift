import CNN
import Foundation
import TestSupport
import XCTest

/// conv1d, conv3d and their pools against PyTorch (forward, input gradient and parameter gradients
/// for the same weights and output gradient), and the locally connected layer against its
/// definition through `F.unfold`. One Python process computes every case, in Double.
final class VolumeLayerTorchTests: XCTestCase {
    private struct Case {
        var name: String
        var layer: Layer
        /// What the script computes, in JSON.
        var torch: [String: Any]
        var batch = 2
        var distinct = false
    }

    private static let script = #"""
    import json, sys
    import numpy as np
    import torch
    import torch.nn.functional as F

    root = sys.argv[1]
    for c in json.load(open(root + "/cases.json")):
        def load(tensor, shape, grad=True):
            values = np.fromfile(f"{root}/{c['id']}.{tensor}", dtype="<f4").astype(np.float64).reshape(shape)
            return torch.from_numpy(values).requires_grad_(grad)
        x = load("x", c["x"])
        kind, params = c["kind"], []
        if kind in ("conv1d", "conv3d"):
            w = load("weight", c["weight"]); params.append(w)
            b = None
            if c["bias"]:
                b = load("bias", [c["weight"][0]]); params.append(b)
            f = F.conv1d if kind == "conv1d" else F.conv3d
            y = f(x, w, b, stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
        elif kind in ("maxpool1d", "maxpool3d"):
            f = F.max_pool1d if kind == "maxpool1d" else F.max_pool3d
            y = f(x, c["size"], c["stride"], c["padding"])
        elif kind in ("avgpool1d", "avgpool3d"):
            f = F.avg_pool1d if kind == "avgpool1d" else F.avg_pool3d
            y = f(x, c["size"], c["stride"], c["padding"])
        else:  # locally connected, by its definition
            w = load("weight", c["weight"]); params.append(w)
            b = load("bias", c["bias_shape"]); params.append(b)
            image = x if x.dim() == 4 else x.unsqueeze(2)
            k, s, p, d = c["kernel"], c["stride"], c["padding"], c["dilation"]
            if x.dim() == 3:
                k, s, p, d = [1] + k, [1] + s, [0] + p, [1] + d
            columns = F.unfold(image, k, dilation=d, padding=p, stride=s)          # [N, J, P]
            y = torch.einsum("pkj,njp->nkp", w, columns).reshape([x.shape[0]] + c["bias_shape"]) + b
        g = load("dy", list(y.shape), grad=False)
        y.backward(g)
        results = [y, x.grad] + [q.grad for q in params]
        np.concatenate([t.detach().numpy().ravel() for t in results]).astype("<f8").tofile(f"{root}/{c['id']}.out")
    print("done")
    """#

    private func cases() throws -> [Case] {
        func conv(_ input: FeatureShape, _ filters: Int, _ kernel: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
                  groups: Int = 1, bias: Bool = true) throws -> Case {
            let rank = input.spatialRank
            let layer = try ConvolutionND(
                input: input, filters: filters, kernel: Array(repeating: kernel, count: rank), stride: Array(repeating: stride, count: rank),
                padding: Array(repeating: padding, count: rank), dilation: Array(repeating: dilation, count: rank), groups: groups, bias: bias)
            return Case(name: layer.summary, layer: layer, torch: [
                "kind": "conv\(rank)d", "stride": stride, "padding": padding, "dilation": dilation, "groups": groups, "bias": bias,
                "weight": layer.parameterSpecs[0].shape])
        }
        func pool(_ input: FeatureShape, _ kind: PoolingND.Kind, _ size: Int, stride: Int? = nil, padding: Int = 0) throws -> Case {
            let layer = try PoolingND(input: input, kind: kind, size: size, stride: stride, padding: padding)
            return Case(name: layer.summary, layer: layer, torch: [
                "kind": (kind == .max ? "maxpool" : "avgpool") + "\(input.spatialRank)d", "size": size, "stride": stride ?? size,
                "padding": padding], distinct: kind == .max)
        }
        func local(_ input: FeatureShape, _ filters: Int, _ kernel: [Int], stride: Int = 1, padding: Int = 0, dilation: Int = 1) throws -> Case {
            let rank = input.spatialRank
            let layer = try LocallyConnected(
                input: input, filters: filters, kernel: kernel, stride: Array(repeating: stride, count: rank),
                padding: Array(repeating: padding, count: rank), dilation: Array(repeating: dilation, count: rank))
            return Case(name: layer.summary, layer: layer, torch: [
                "kind": "lc", "kernel": kernel, "stride": Array(repeating: stride, count: rank),
                "padding": Array(repeating: padding, count: rank), "dilation": Array(repeating: dilation, count: rank),
                "weight": layer.parameterSpecs[0].shape, "bias_shape": layer.parameterSpecs[1].shape])
        }
        let sequence = FeatureShape(channels: 4, length: 17)
        let volume = FeatureShape(channels: 2, depth: 7, height: 6, width: 5)
        var all = [
            try conv(sequence, 6, 3),
            try conv(sequence, 4, 5, stride: 2, padding: 2, dilation: 1, groups: 2),
            try conv(FeatureShape(channels: 3, length: 20), 3, 3, stride: 1, padding: 2, dilation: 2, groups: 3, bias: false),
            try conv(volume, 3, 3, padding: 1),
            try conv(volume, 4, 3, stride: 2, padding: 1, groups: 2),
            try conv(FeatureShape(channels: 1, depth: 9, height: 9, width: 7), 2, 3, padding: 2, dilation: 2, bias: false),
            try pool(sequence, .max, 3, stride: 2), try pool(sequence, .average, 3, stride: 2, padding: 1),
            try pool(volume, .max, 2), try pool(volume, .average, 3, stride: 2, padding: 1), try pool(volume, .max, 3, stride: 1, padding: 1),
            try local(FeatureShape(channels: 3, length: 12), 4, [3], stride: 2, padding: 1),
            try local(FeatureShape(channels: 2, height: 6, width: 5), 3, [3, 2], stride: 1, padding: 1, dilation: 1),
            try local(FeatureShape(channels: 2, height: 7, width: 7), 2, [3, 3], stride: 2, dilation: 2),
        ]
        all[0].batch = 1
        all[8].batch = 3
        return all
    }

    func testConv1DConv3DAndPoolsMatchPyTorchAndLocallyConnectedMatchesItsUnfoldDefinition() throws {
        guard case .success = PythonEnvironment.interpreter() else {
            if case .failure(let reason) = PythonEnvironment.interpreter() { throw XCTSkip("no Python with torch: \(reason)") }
            return
        }
        let folder = try LocalCluster.temporaryDirectory("torch-volume")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let all = try cases()
        var descriptions: [[String: Any]] = []
        var expectations: [(Case, BoundLayer, [Float], [Float], [Float])] = []
        for (index, testCase) in all.enumerated() {
            let layer = testCase.layer
            let bound = BoundLayer(layer, seed: UInt64(index + 1), fill: .normal(scale: 0.5))
            let input = testCase.distinct
                ? TestArrays.distinct(count: testCase.batch * layer.inputShape.count, seed: UInt64(index), stream: 1)
                : TestArrays.normal(count: testCase.batch * layer.inputShape.count, seed: UInt64(index), stream: 1)
            let outputGradient = TestArrays.normal(count: testCase.batch * layer.outputShape.count, seed: UInt64(index), stream: 2)
            bound.zeroGradients()
            let (output, inputGradient) = bound.forwardBackward(input, outputGradient: outputGradient, batch: testCase.batch)
            var description = testCase.torch
            description["id"] = "\(index)"
            description["x"] = [testCase.batch] + layer.inputShape.dimensions
            descriptions.append(description)
            try write(input, to: "\(folder)/\(index).x")
            try write(outputGradient, to: "\(folder)/\(index).dy")
            var ours = output + inputGradient
            for spec in layer.parameterSpecs {
                try write(bound.values(spec.name), to: "\(folder)/\(index).\(spec.name)")
                ours += bound.gradientValues(spec.name)
            }
            expectations.append((testCase, bound, ours, output, inputGradient))
        }
        let json = try JSONSerialization.data(withJSONObject: descriptions)
        try json.write(to: URL(fileURLWithPath: "\(folder)/cases.json"))
        let outcome = try PythonEnvironment.run(Self.script, arguments: [folder], seconds: 300)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        guard outcome.status == 0 else { return }

        for (index, (testCase, _, ours, output, inputGradient)) in expectations.enumerated() {
            let data = try Data(contentsOf: URL(fileURLWithPath: "\(folder)/\(index).out"))
            let theirs = data.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
            XCTAssertEqual(theirs.count, ours.count, testCase.name)
            guard theirs.count == ours.count else { continue }
            // Compare each tensor (output, input gradient, then each parameter gradient) on its own scale.
            var bounds = [0, output.count, output.count + inputGradient.count]
            for spec in testCase.layer.parameterSpecs { bounds.append(bounds.last! + spec.count) }
            let names = ["output", "input gradient"] + testCase.layer.parameterSpecs.map { "\($0.name) gradient" }
            for t in 0..<(bounds.count - 1) {
                let range = bounds[t]..<bounds[t + 1]
                let largest = range.map { abs(theirs[$0]) }.max() ?? 0
                XCTAssertGreaterThan(largest, 0, "\(testCase.name): torch's \(names[t]) is all zero")
                let worst = range.map { abs(Double(ours[$0]) - theirs[$0]) }.max() ?? 0
                XCTAssertLessThanOrEqual(worst, 1e-5 * largest, "\(testCase.name) \(names[t]): differs from torch by \(worst) (largest \(largest))")
            }
        }
    }

    private func write(_ values: [Float], to path: String) throws {
        let data = values.withUnsafeBufferPointer { Data(buffer: $0) }
        try data.write(to: URL(fileURLWithPath: path))
    }
}
