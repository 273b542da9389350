// Legend: n sample, c input channel, k output channel (filter), m outputs per tile side, t a tile
// of a block (sample-major, then tile row ty, then tile column tx), T the tiles of a block.

/// How a Winograd convolution cuts its planes into tiles: the layer's shape and the tile size,
/// the same for every tile size's kernels.
struct WinogradGeometry {
    let channels: Int
    let filters: Int
    let height: Int
    let width: Int
    let padding: Int
    let outputHeight: Int
    let outputWidth: Int
    /// m: outputs per tile side.
    let outputSize: Int
    /// Tiles down and across one output plane: ceil(OH / m), ceil(OW / m).
    let tileRows: Int
    let tileColumns: Int

    /// A 3x3, stride 1 convolution of `channels` [height, width] planes with `filters` filters and
    /// `padding`, cut into output tiles of `outputSize` x `outputSize`.
    init(channels: Int, filters: Int, height: Int, width: Int, padding: Int, outputSize: Int) {
        self.channels = channels
        self.filters = filters
        self.height = height
        self.width = width
        self.padding = padding
        self.outputSize = outputSize
        outputHeight = height + 2 * padding - 2
        outputWidth = width + 2 * padding - 2
        tileRows = (outputHeight + outputSize - 1) / outputSize
        tileColumns = (outputWidth + outputSize - 1) / outputSize
    }

    /// m + 2: inputs per tile side.
    var inputSize: Int { outputSize + 2 }
    /// Positions of an input tile, one GEMM each: (m + 2)^2.
    var positions: Int { inputSize * inputSize }
    var tilesPerSample: Int { tileRows * tileColumns }
}

/// The kernels of one Winograd tile size: everything a `WinogradConvolution` computes between
/// its GEMMs, for a block of samples at a time. Each works on one `WinogradGeometry`; the scratch
/// a call needs beyond its own buffers lives in the workspace it is given, only during the call.
///
/// V [(m + 2)^2, C, T] and M [(m + 2)^2, K, T] hold a block's tiles as rows of T tiles, with
/// eight floats of slack past the last row for the eight-wide loads.
protocol WinogradKernels: AnyObject {
    /// m: outputs per tile side.
    static var outputSize: Int { get }
    /// Least tiles per block, even past `WinogradConvolution.blockBytes` (see each tile size).
    static var minimumBlockTiles: Int { get }

    init(geometry: WinogradGeometry)
    var geometry: WinogradGeometry { get }

    /// U [(m + 2)^2, K, C] = G g G^T for every filter g = W[k][c] of `weights` [K, C, 3, 3].
    func transformWeights(_ weights: UnsafePointer<Float>, into target: FloatBuffer, scratch: LayerWorkspace)
    /// dW[k][c] += G^T dU[k][c] G for `count` filters of dU [(m + 2)^2, count, C] (eight floats
    /// of slack past its end) and of `weightGradients` [count, C, 3, 3]: the adjoint of
    /// `transformWeights`.
    func addWeightGradient(
        _ du: UnsafePointer<Float>, filters count: Int, to weightGradients: UnsafeMutablePointer<Float>, scratch: LayerWorkspace)
    /// V = B^T d B for every input tile d of `samples` samples from `images` [S, C, H, W].
    func transformInput(_ images: UnsafePointer<Float>, samples: Int, into v: UnsafeMutablePointer<Float>, scratch: LayerWorkspace)
    /// Every sample's output [K, OH, OW] = A^T M A per tile, plus bias, for a block of `samples`
    /// samples; outputs of partial tiles past the plane are dropped.
    func transformOutput(
        _ m: UnsafePointer<Float>, samples: Int, bias: UnsafePointer<Float>?, into output: UnsafeMutablePointer<Float>,
        scratch: LayerWorkspace)
    /// dM = A dY A^T for every output tile of a block's output gradient [S, K, OH, OW], zero past
    /// the plane (a partial tile's dropped outputs have no gradient).
    func transformOutputGradient(
        _ gradient: UnsafePointer<Float>, samples: Int, into m: UnsafeMutablePointer<Float>, scratch: LayerWorkspace)
    /// A block's input gradient [S, C, H, W]: the overlap-add of B dV B^T over its tiles, the
    /// adjoint of `transformInput`, every sum in a fixed order.
    func foldTiles(_ v: UnsafePointer<Float>, samples: Int, into images: UnsafeMutablePointer<Float>, scratch: LayerWorkspace)
}

// The geometry by name, for the kernels, and the eight-wide loads and stores they all use.
extension WinogradKernels {
    var channels: Int { geometry.channels }
    var filters: Int { geometry.filters }
    var height: Int { geometry.height }
    var width: Int { geometry.width }
    var padding: Int { geometry.padding }
    var outputHeight: Int { geometry.outputHeight }
    var outputWidth: Int { geometry.outputWidth }
    var tileRows: Int { geometry.tileRows }
    var tileColumns: Int { geometry.tileColumns }
    var positions: Int { geometry.positions }
    var tilesPerSample: Int { geometry.tilesPerSample }

    @inline(__always)
    func load(_ pointer: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(pointer).loadUnaligned(as: SIMD8<Float>.self)
    }

    /// Stores the first `count` lanes (all eight when `count` >= 8).
    @inline(__always)
    func store(_ value: SIMD8<Float>, _ pointer: UnsafeMutablePointer<Float>, _ count: Int) {
        if count >= 8 {
            UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: SIMD8<Float>.self)
        } else {
            for lane in 0..<count { pointer[lane] = value[lane] }
        }
    }
}
