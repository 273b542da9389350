/// How the fixed tree rounds the value of every node once it is computed (DESIGN.md, step
/// contract): not at all (Float32 sums, the default), or, with `distributed.wire_precision: bf16`,
/// the first `roundedCount` elements of every node (the parameter gradients; the state
/// observations after them stay Float32) to bf16, a leaf right after its backward and an inner
/// node right after the addition of its two children. Every node a worker can send is then
/// bf16-exact, so it travels in 2 bytes a value without loss, and the result still depends only
/// on the tree.
///
/// The rounding itself is the engine's (`BFloat16.round` in CNN, which this module does not
/// import): the trainer supplies it, and every site that adds along the tree is given the same.
public struct NodeRounding: Sendable {
    /// Elements at the start of a node that are rounded; 0 rounds nothing.
    public let roundedCount: Int
    private let roundInPlace: (@Sendable (UnsafeMutablePointer<Float>, Int) -> Void)?

    /// Float32 sums: nothing rounded.
    public static let none = NodeRounding(roundedCount: 0, roundInPlace: nil)

    /// Rounds the first `roundedCount` elements of every node with `roundInPlace(values, count)`,
    /// which must round each element by itself (the same value always to the same result).
    public init(roundedCount: Int, roundInPlace: @escaping @Sendable (UnsafeMutablePointer<Float>, Int) -> Void) {
        precondition(roundedCount >= 0, "a negative count of rounded elements (\(roundedCount))")
        self.init(roundedCount: roundedCount, roundInPlace: Optional(roundInPlace))
    }

    private init(roundedCount: Int, roundInPlace: (@Sendable (UnsafeMutablePointer<Float>, Int) -> Void)?) {
        self.roundedCount = roundInPlace == nil ? 0 : roundedCount
        self.roundInPlace = roundInPlace
    }

    /// Whether any element is rounded.
    public var rounds: Bool { roundedCount > 0 }

    /// Rounds what of `values` (the first `count` elements of a node) is to be rounded.
    public func round(_ values: UnsafeMutablePointer<Float>, count: Int) {
        let rounded = min(roundedCount, count)
        if rounded > 0, let roundInPlace { roundInPlace(values, rounded) }
    }

    /// The rounding of a part of every node, `elements` of it, seen as a node of its own (a block
    /// of a payload, or a slice of the flat vector).
    public func restricted(to elements: Range<Int>) -> NodeRounding {
        NodeRounding(roundedCount: max(0, min(roundedCount, elements.upperBound) - elements.lowerBound), roundInPlace: roundInPlace)
    }
}
