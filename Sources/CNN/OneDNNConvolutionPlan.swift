import COneDNN

/// oneDNN found no implementation for a convolution's shapes.
struct OneDNNUnsupported: Error {
    let what: String
}

extension OneDNNConvolution {
    /// The primitives of one convolution at one batch size, with the memory descriptions of
    /// every tensor they read and write: the engine's own (Float32 NCHW, OIHW) and the layouts
    /// oneDNN chose (`format_tag_any`), with a reorder between them wherever they differ.
    final class Plan {
        let hasBias: Bool

        let forward: OneDNNPrimitive
        let backwardData: OneDNNPrimitive
        let backwardWeights: OneDNNPrimitive

        // The engine's tensors: input (and input gradient) [N, C, H, W], output (and output
        // gradient) [N, K, OH, OW], weights (and their gradient) [K, C/G, kh, kw], all Float32.
        let userInput: OneDNNMemory
        let userOutput: OneDNNMemory
        let userWeights: OneDNNMemory
        // The primitives' tensors.
        let source: OneDNNMemory            // bf16 input of forward, kept for backward weights
        let forwardWeights: OneDNNMemory    // bf16
        let output: OneDNNMemory            // Float32
        let bias: OneDNNMemory?             // Float32 [K]
        let gradient: OneDNNMemory          // bf16 output gradient, for backward data
        let dataPassWeights: OneDNNMemory   // bf16, in backward data's layout
        let inputGradient: OneDNNMemory     // Float32
        let weightsSource: OneDNNMemory     // bf16 input, in backward weights' layout
        let weightsGradient: OneDNNMemory   // bf16 output gradient, in backward weights' layout
        let weightGradients: OneDNNMemory   // Float32

        // Conversions: rounding to bf16 (to nearest even) and layout changes (nil where none is needed).
        let roundInput: OneDNNPrimitive
        let roundForwardWeights: OneDNNPrimitive
        let roundGradient: OneDNNPrimitive
        let roundBackwardWeights: OneDNNPrimitive
        let outputLayout: OneDNNPrimitive?
        let inputGradientLayout: OneDNNPrimitive?
        let sourceForWeights: OneDNNPrimitive?
        let gradientForWeights: OneDNNPrimitive?
        let weightGradientLayout: OneDNNPrimitive?

        /// Bytes of scratchpad the forward pass's primitives need (the largest of them).
        let forwardScratchpadBytes: Int
        /// The same for the backward pass.
        let backwardScratchpadBytes: Int

        /// Whether any pass fell back to oneDNN's reference code (plain loops, many times slower).
        var usesReferenceCode: Bool {
            [forward, backwardData, backwardWeights].contains { $0.implementation.hasPrefix("ref") }
        }

        init(geometry: ConvolutionGeometry, batch: Int, bias: Bool) throws {
            let inputShape = geometry.inputShape, outputShape = geometry.outputShape, groups = geometry.groups
            let inputDims = [batch, inputShape.channels, inputShape.height, inputShape.width]
            let outputDims = [batch, outputShape.channels, outputShape.height, outputShape.width]
            let weightDims = groups == 1
                ? [outputShape.channels, inputShape.channels, geometry.kernelHeight, geometry.kernelWidth]
                : [groups, outputShape.channels / groups, inputShape.channels / groups, geometry.kernelHeight, geometry.kernelWidth]
            let weightTag = groups == 1 ? dnnl_oihw : dnnl_goihw
            let strides = [Int64(geometry.stride), Int64(geometry.stride)]
            let dilations = [Int64(geometry.dilation - 1), Int64(geometry.dilation - 1)]
            let paddingLeft = [Int64(geometry.padding), Int64(geometry.padding)]
            // The padding after the last row (column) that the last output position reaches;
            // at most `padding`, less when the stride leaves input rows unread.
            func paddingAfter(input: Int, output: Int, kernel: Int) -> Int64 {
                Int64((output - 1) * geometry.stride + (kernel - 1) * geometry.dilation + 1 - input - geometry.padding)
            }
            let paddingRight = [
                paddingAfter(input: inputShape.height, output: outputShape.height, kernel: geometry.kernelHeight),
                paddingAfter(input: inputShape.width, output: outputShape.width, kernel: geometry.kernelWidth),
            ]

            var sourceAny = OneDNN.descriptor(inputDims, dnnl_bf16, dnnl_format_tag_any)
            var weightsAny = OneDNN.descriptor(weightDims, dnnl_bf16, dnnl_format_tag_any)
            var outputAny = OneDNN.descriptor(outputDims, dnnl_f32, dnnl_format_tag_any)
            let biasPlain = OneDNN.descriptor([outputShape.channels], dnnl_f32, dnnl_a)
            var inputGradientAny = OneDNN.descriptor(inputDims, dnnl_f32, dnnl_format_tag_any)
            var gradientAny = OneDNN.descriptor(outputDims, dnnl_bf16, dnnl_format_tag_any)
            var weightGradientsAny = OneDNN.descriptor(weightDims, dnnl_f32, dnnl_format_tag_any)

            omp_set_num_threads(1)
            var forwardOperation = dnnl_convolution_desc_t()
            let forwardStatus = withUnsafePointer(to: biasPlain) { biasDescriptor in
                dnnl_dilated_convolution_forward_desc_init(
                    &forwardOperation, dnnl_forward_training, dnnl_convolution_direct, &sourceAny, &weightsAny,
                    bias ? biasDescriptor : nil, &outputAny, strides, dilations, paddingLeft, paddingRight)
            }
            try Plan.require(forwardStatus, "the forward convolution \(geometry)")
            forward = OneDNNPrimitive(owning: try Plan.primitiveDescriptor(&forwardOperation, hint: nil, "forward"))

            var dataOperation = dnnl_convolution_desc_t()
            try Plan.require(
                dnnl_dilated_convolution_backward_data_desc_init(
                    &dataOperation, dnnl_convolution_direct, &inputGradientAny, &weightsAny, &gradientAny, strides, dilations,
                    paddingLeft, paddingRight),
                "the backward-data convolution \(geometry)")
            backwardData = OneDNNPrimitive(owning: try Plan.primitiveDescriptor(&dataOperation, hint: forward.descriptor, "backward data"))

            var weightsOperation = dnnl_convolution_desc_t()
            try Plan.require(
                dnnl_dilated_convolution_backward_weights_desc_init(
                    &weightsOperation, dnnl_convolution_direct, &sourceAny, &weightGradientsAny, nil, &gradientAny, strides,
                    dilations, paddingLeft, paddingRight),
                "the backward-weights convolution \(geometry)")
            backwardWeights = OneDNNPrimitive(
                owning: try Plan.primitiveDescriptor(&weightsOperation, hint: forward.descriptor, "backward weights"))

            hasBias = bias
            let userInputDescriptor = OneDNN.descriptor(inputDims, dnnl_f32, dnnl_nchw)
            let userOutputDescriptor = OneDNN.descriptor(outputDims, dnnl_f32, dnnl_nchw)
            let userWeightsDescriptor = OneDNN.descriptor(weightDims, dnnl_f32, weightTag)
            userInput = OneDNNMemory(userInputDescriptor)
            userOutput = OneDNNMemory(userOutputDescriptor)
            userWeights = OneDNNMemory(userWeightsDescriptor)
            source = OneDNNMemory(forward.memoryDescriptor(dnnl_query_src_md))
            forwardWeights = OneDNNMemory(forward.memoryDescriptor(dnnl_query_weights_md))
            output = OneDNNMemory(forward.memoryDescriptor(dnnl_query_dst_md))
            self.bias = bias ? OneDNNMemory(biasPlain) : nil
            gradient = OneDNNMemory(backwardData.memoryDescriptor(dnnl_query_diff_dst_md))
            dataPassWeights = OneDNNMemory(backwardData.memoryDescriptor(dnnl_query_weights_md))
            inputGradient = OneDNNMemory(backwardData.memoryDescriptor(dnnl_query_diff_src_md))
            weightsSource = OneDNNMemory(backwardWeights.memoryDescriptor(dnnl_query_src_md))
            weightsGradient = OneDNNMemory(backwardWeights.memoryDescriptor(dnnl_query_diff_dst_md))
            weightGradients = OneDNNMemory(backwardWeights.memoryDescriptor(dnnl_query_diff_weights_md))

            func reorder(_ from: OneDNNMemory, _ to: OneDNNMemory) -> OneDNNPrimitive {
                OneDNNPrimitive(reorderFrom: from.descriptor, to: to.descriptor)
            }
            func layoutChange(_ from: OneDNNMemory, _ to: OneDNNMemory) -> OneDNNPrimitive? {
                OneDNN.equal(from.descriptor, to.descriptor) ? nil : reorder(from, to)
            }
            roundInput = reorder(userInput, source)
            roundForwardWeights = reorder(userWeights, forwardWeights)
            roundGradient = reorder(userOutput, gradient)
            roundBackwardWeights = reorder(userWeights, dataPassWeights)
            outputLayout = layoutChange(output, userOutput)
            inputGradientLayout = layoutChange(inputGradient, userInput)
            sourceForWeights = layoutChange(source, weightsSource)
            gradientForWeights = layoutChange(gradient, weightsGradient)
            weightGradientLayout = layoutChange(weightGradients, userWeights)

            forwardScratchpadBytes = [roundInput, roundForwardWeights, forward, outputLayout].compactMap { $0?.scratchpadBytes }.max() ?? 0
            backwardScratchpadBytes = [
                roundGradient, roundBackwardWeights, backwardData, backwardWeights, inputGradientLayout, sourceForWeights,
                gradientForWeights, weightGradientLayout,
            ].compactMap { $0?.scratchpadBytes }.max() ?? 0
        }

        private static func require(_ status: dnnl_status_t, _ what: String) throws {
            guard status == dnnl_success else { throw OneDNNUnsupported(what: "\(what) (status \(status.rawValue))") }
        }

        /// oneDNN's first implementation of `operation` (a convolution descriptor) here.
        private static func primitiveDescriptor(
            _ operation: inout dnnl_convolution_desc_t, hint: dnnl_primitive_desc_t?, _ pass: String
        ) throws -> dnnl_primitive_desc_t {
            var descriptor: dnnl_primitive_desc_t?
            let status = dnnl_primitive_desc_create(&descriptor, &operation, OneDNN.userScratchpad, OneDNN.engine, hint)
            guard status == dnnl_success, let descriptor else {
                throw OneDNNUnsupported(what: "\(pass) (status \(status.rawValue))")
            }
            return descriptor
        }
    }
}
