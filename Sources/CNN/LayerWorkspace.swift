/// Scratch memory that a layer needs only while one of its forward or backward calls runs, shared
/// by every layer of one network.
///
/// A network runs its layers one after another on one thread, so no two of them are ever inside
/// a call at once: the convolutions' block matrices and weight gradient sums can live in one
/// set of buffers, as large as the largest layer needs, instead of one set per layer. A
/// network makes one workspace and hands it to all its layers, nested ones included, with
/// `bind(workspace:)`; a layer built on its own keeps a workspace of its own until then. Model
/// replicas computing on different threads each have their own network, hence their own
/// workspace: a workspace must never be shared by layers that may compute at the same time.
///
/// What a workspace holds is dead between calls: a layer must not leave data in it for a later
/// call (its forward for its backward, say), nor count on a buffer being zero.
public final class LayerWorkspace: @unchecked Sendable {
    // Sendable for the same reason as FloatBuffer: a replica, workspace included, moves between
    // threads whole and is used by one thread at a time.

    /// One block's unfolded input: Conv2D's im2col matrix (when not kept for backward) or
    /// Winograd's input tiles V, which become the column gradient or dV in backward.
    let unfoldedInput = FloatBuffer()
    /// One block's GEMM result: Conv2D's product or Winograd's M, then their output gradients.
    let blockProducts = FloatBuffer()
    /// A backward call's weight gradient, summed over its blocks before it is added into the
    /// layer's: Winograd's gradient with respect to U (or, for a large layer, that of a range of
    /// filters, added in block by block), or Conv2D's transposed dW.
    let weightGradientTotals = FloatBuffer()
    /// Winograd's tiles of one channel or filter (or the weights' taps) between transforms.
    let gatheredTiles = FloatBuffer()
    /// Winograd's tiles after the first of the two one-dimensional transforms.
    let partialTransforms = FloatBuffer()
    /// One sample's elementwise scratch [C, H, W]: LocalResponseNorm's squares in forward, its
    /// dy y / s in backward.
    let sampleScratch = FloatBuffer()
    /// The operands of one bf16 product, rounded (`BLAS.gemm(precision:)`).
    let bfloat16Operands = BFloat16Operands()

    /// An empty workspace; its buffers grow to the largest size asked of them.
    public init() {}

    /// Floats of room the buffers have grown to, for memory accounting and tests.
    public var capacity: Int {
        [unfoldedInput, blockProducts, weightGradientTotals, gatheredTiles, partialTransforms, sampleScratch]
            .reduce(0) { $0 + $1.capacity }
    }
}
