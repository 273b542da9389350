import Wire

/// Weights laid out as the flat vector, filled slice by slice.
final class SliceBuffer: @unchecked Sendable {
    let count: Int
    let pointer: UnsafeMutablePointer<Float>
    private var present: [Bool]

    init(count: Int, slices: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
        present = [Bool](repeating: false, count: slices)
    }

    deinit { pointer.deallocate() }

    var isComplete: Bool { !present.contains(false) }
    func has(_ slice: Int) -> Bool { present[slice] }
    func mark(_ slice: Int) { present[slice] = true }
    func markAll() { present = present.map { _ in true } }
    func clear() { present = present.map { _ in false } }

    func write(_ values: FloatPayload, at range: Range<Int>, slice: Int) {
        values.withUnsafeBufferPointer { (pointer + range.lowerBound).update(from: $0.baseAddress!, count: range.count) }
        present[slice] = true
    }

    /// The whole buffer as a payload that keeps it alive (for the engine to read in place).
    var payload: FloatPayload { FloatPayload(viewing: pointer, count: count, owner: self) }
}
