/// Element types of safetensors files that this module reads. The raw values are the format's own
/// dtype names, as they appear in a file's header.
public enum TensorDType: String, Sendable, CaseIterable {
    case float32 = "F32"
    case float64 = "F64"
    case float16 = "F16"
    case bfloat16 = "BF16"
    case int64 = "I64"
    case int32 = "I32"
    case uint8 = "U8"

    /// Bytes one element occupies in a file.
    public var byteSize: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16: return 2
        case .uint8: return 1
        }
    }

    /// Whether `SafeTensors.encode` can write this type. Only F32 (every weight) and I64 (PyTorch's
    /// BatchNorm `num_batches_tracked`) are needed to save what PyTorch saves for our models.
    public var isWritable: Bool {
        self == .float32 || self == .int64
    }

    /// Dtype names the safetensors format defines but this module does not convert, so a reader can
    /// tell "valid file, unsupported type" from "corrupt header".
    static let otherFormatNames: Set<String> = [
        "BOOL", "I8", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64",
    ]

    /// The dtype names this module reads, for messages.
    static var supportedNames: String {
        allCases.map(\.rawValue).joined(separator: ", ")
    }
}

/// One tensor of a safetensors file: its name (PyTorch state-dict style, `features.0.weight`), its
/// shape, the element type it has (or will have) in the file, and its values as Float.
///
/// Values are row-major, `shape.reduce(1, *)` of them (one for a scalar with shape `[]`). An `int64`
/// tensor holds integral values; reading one above 2^24 in magnitude rounds it to the nearest Float.
public struct NamedTensor: Sendable, Equatable {
    /// The name under which the tensor is stored.
    public var name: String
    /// Dimensions, outermost first; `[]` is a scalar.
    public var shape: [Int]
    /// The element type in the file.
    public var dtype: TensorDType
    /// Row-major values.
    public var values: [Float]

    /// A tensor named `name` of `shape` holding `values`, stored as `dtype`.
    public init(name: String, shape: [Int], dtype: TensorDType = .float32, values: [Float]) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.values = values
    }
}
