import CNN

/// Direct (seven nested loops, Double) convolution with the hyper-parameters of `convolution`:
/// the definition PyTorch's `nn.Conv2d` documents (cross-correlation, zero padding, dilation,
/// groups), to compare a fast implementation against. Weights are OIHW; returns [N, K, OH, OW].
public func referenceConvolution(
    _ convolution: Conv2D, input: [Float], batch: Int, weights: [Float], bias: [Float]?
) -> [Double] {
    let inShape = convolution.inputShape, outShape = convolution.outputShape
    let channelsPerGroup = inShape.channels / convolution.groups
    let filtersPerGroup = convolution.filters / convolution.groups
    let kh = convolution.kernelHeight, kw = convolution.kernelWidth
    precondition(input.count == batch * inShape.count)
    precondition(weights.count == convolution.filters * channelsPerGroup * kh * kw)
    var output = [Double](repeating: 0, count: batch * outShape.count)
    for n in 0..<batch {
        for k in 0..<convolution.filters {
            let group = k / filtersPerGroup
            for oh in 0..<outShape.height {
                for ow in 0..<outShape.width {
                    var sum = bias.map { Double($0[k]) } ?? 0
                    for localChannel in 0..<channelsPerGroup {
                        let c = group * channelsPerGroup + localChannel
                        for i in 0..<kh {
                            let h = oh * convolution.stride - convolution.padding + i * convolution.dilation
                            guard h >= 0 && h < inShape.height else { continue }
                            for j in 0..<kw {
                                let w = ow * convolution.stride - convolution.padding + j * convolution.dilation
                                guard w >= 0 && w < inShape.width else { continue }
                                let x = input[((n * inShape.channels + c) * inShape.height + h) * inShape.width + w]
                                let weight = weights[((k * channelsPerGroup + localChannel) * kh + i) * kw + j]
                                sum += Double(x) * Double(weight)
                            }
                        }
                    }
                    output[((n * outShape.channels + k) * outShape.height + oh) * outShape.width + ow] = sum
                }
            }
        }
    }
    return output
}

/// Direct max pooling with the hyper-parameters of `pool` (padding never wins), returning
/// [N, C, OH, OW].
public func referenceMaxPool(_ pool: MaxPool2D, input: [Float], batch: Int) -> [Float] {
    let inShape = pool.inputShape, outShape = pool.outputShape
    precondition(input.count == batch * inShape.count)
    var output = [Float](repeating: 0, count: batch * outShape.count)
    for plane in 0..<(batch * inShape.channels) {
        for oh in 0..<outShape.height {
            for ow in 0..<outShape.width {
                var best = -Float.infinity
                for i in 0..<pool.size {
                    let h = oh * pool.stride - pool.padding + i
                    guard h >= 0 && h < inShape.height else { continue }
                    for j in 0..<pool.size {
                        let w = ow * pool.stride - pool.padding + j
                        guard w >= 0 && w < inShape.width else { continue }
                        best = max(best, input[(plane * inShape.height + h) * inShape.width + w])
                    }
                }
                output[(plane * outShape.height + oh) * outShape.width + ow] = best
            }
        }
    }
    return output
}
