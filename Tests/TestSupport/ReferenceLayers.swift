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

/// Direct transposed convolution with the hyper-parameters of `layer`, from its definition in
/// PyTorch's `nn.ConvTranspose2d` documentation: input (h, w) of channel c adds
/// x * weight[c, k, i, j] to output (h*S - P + i*D, w*S - P + j*D) of each channel k of c's group.
/// Weights are [C_in, K/groups, kh, kw]; returns [N, K, OH, OW].
public func referenceTransposedConvolution(
    _ layer: ConvTranspose2D, input: [Float], batch: Int, weights: [Float], bias: [Float]?
) -> [Double] {
    let inShape = layer.inputShape, outShape = layer.outputShape
    let channelsPerGroup = inShape.channels / layer.groups
    let filtersPerGroup = layer.filters / layer.groups
    let kh = layer.kernelHeight, kw = layer.kernelWidth
    precondition(input.count == batch * inShape.count)
    precondition(weights.count == inShape.channels * filtersPerGroup * kh * kw)
    var output = [Double](repeating: 0, count: batch * outShape.count)
    for n in 0..<batch {
        for k in 0..<layer.filters {
            let offset = (n * outShape.channels + k) * outShape.height * outShape.width
            for p in 0..<(outShape.height * outShape.width) { output[offset + p] = bias.map { Double($0[k]) } ?? 0 }
        }
        for c in 0..<inShape.channels {
            let group = c / channelsPerGroup
            for h in 0..<inShape.height {
                for w in 0..<inShape.width {
                    let x = Double(input[((n * inShape.channels + c) * inShape.height + h) * inShape.width + w])
                    for localFilter in 0..<filtersPerGroup {
                        let k = group * filtersPerGroup + localFilter
                        for i in 0..<kh {
                            let oh = h * layer.stride - layer.padding + i * layer.dilation
                            guard oh >= 0 && oh < outShape.height else { continue }
                            for j in 0..<kw {
                                let ow = w * layer.stride - layer.padding + j * layer.dilation
                                guard ow >= 0 && ow < outShape.width else { continue }
                                let weight = Double(weights[((c * filtersPerGroup + localFilter) * kh + i) * kw + j])
                                output[((n * outShape.channels + k) * outShape.height + oh) * outShape.width + ow] += x * weight
                            }
                        }
                    }
                }
            }
        }
    }
    return output
}

/// Direct average pooling with the hyper-parameters of `pool` as PyTorch's `AvgPool2d` defines it
/// (zero padding counted in the divisor, windows clipped to the padded input), returning [N, C, OH, OW].
public func referenceAveragePool(_ pool: AvgPool2D, input: [Float], batch: Int) -> [Double] {
    let inShape = pool.inputShape, outShape = pool.outputShape
    precondition(input.count == batch * inShape.count)
    var output = [Double](repeating: 0, count: batch * outShape.count)
    for plane in 0..<(batch * inShape.channels) {
        for oh in 0..<outShape.height {
            for ow in 0..<outShape.width {
                var sum = 0.0, cells = 0
                for i in 0..<pool.size {
                    let h = oh * pool.stride - pool.padding + i
                    guard h < inShape.height + pool.padding else { continue }
                    for j in 0..<pool.size {
                        let w = ow * pool.stride - pool.padding + j
                        guard w < inShape.width + pool.padding else { continue }
                        cells += 1
                        if h >= 0 && h < inShape.height && w >= 0 && w < inShape.width {
                            sum += Double(input[(plane * inShape.height + h) * inShape.width + w])
                        }
                    }
                }
                output[(plane * outShape.height + oh) * outShape.width + ow] = sum / Double(cells)
            }
        }
    }
    return output
}

/// Local response normalisation straight from PyTorch's formula, in Double:
/// y_c = x_c / (k + alpha / size * sum_{j = c - size/2}^{c + (size-1)/2} x_j^2)^beta.
public func referenceLocalResponseNorm(
    input: [Float], batch: Int, shape: FeatureShape, size: Int, alpha: Double, beta: Double, k: Double
) -> [Double] {
    precondition(input.count == batch * shape.count)
    let plane = shape.height * shape.width
    var output = [Double](repeating: 0, count: input.count)
    for n in 0..<batch {
        for c in 0..<shape.channels {
            for i in 0..<plane {
                var squares = 0.0
                for j in (c - size / 2)...(c + (size - 1) / 2) where j >= 0 && j < shape.channels {
                    let x = Double(input[(n * shape.channels + j) * plane + i])
                    squares += x * x
                }
                let index = (n * shape.channels + c) * plane + i
                output[index] = Double(input[index]) / pow(k + alpha / Double(size) * squares, beta)
            }
        }
    }
    return output
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
