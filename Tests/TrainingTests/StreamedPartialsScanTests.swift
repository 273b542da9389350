import CNN
@testable import Training
import Wire
import XCTest

/// Partial sums are scanned for non-finite values slice by slice as they are streamed, and the
/// rest when the computation's result is taken: the finding must be the one a single pass over
/// the whole result gives, whatever was streamed, and never rest on an earlier computation's scan.
final class StreamedPartialsScanTests: XCTestCase {
    private func network() throws -> Network {
        try Network(ModelSpec(input: FeatureShape(channels: 1, height: 6, width: 6), layers: [
            .convolution(ConvolutionSpec(filters: 2, kernel: 3)), .relu, .flatten, .dense(units: 4, bias: true),
        ]))
    }

    private func buffer(_ values: [Float]) -> GradientBuffer {
        let buffer = GradientBuffer(count: values.count)
        buffer.pointer.update(from: values, count: values.count)
        return buffer
    }

    private func wholePass(_ buffer: GradientBuffer, _ network: Network) -> String? {
        NonFiniteFinding.locate(in: UnsafeBufferPointer(start: buffer.pointer, count: buffer.count), network: network)?.description
    }

    private func streamedThenRest(_ buffer: GradientBuffer, node: TreeNode, parts: [Range<Int>], _ network: Network,
                                  scan: inout StreamedPartialsScan) -> String? {
        for part in parts { scan.scan([node: buffer], elements: part) }
        return scan.finding(for: node, in: UnsafeBufferPointer(start: buffer.pointer, count: buffer.count), network: network)?.description
    }

    func testStreamedPartsAndTheRestGiveTheFindingOfOnePass() throws {
        let network = try network()
        let count = network.parameterCount
        let node = TreeNode(level: 1, index: 0)
        // Slices published from the last, as the streamer does; the first 40 values never streamed.
        let parts = [100..<count, 70..<100, 40..<70]
        let placements: [[(Int, Float)]] = [[], [(count - 1, .infinity)], [(5, .nan)], [(50, -.infinity), (120, .nan)],
                                            [(10, .nan), (45, .infinity), (count - 2, .nan)], [(39, .nan), (40, .nan)]]
        for bad in placements {
            var values = [Float](repeating: 0.25, count: count)
            for (position, value) in bad { values[position] = value }
            let gradient = buffer(values)
            var scan = StreamedPartialsScan()
            XCTAssertEqual(streamedThenRest(gradient, node: node, parts: parts, network, scan: &scan), wholePass(gradient, network),
                           "non-finite values at \(bad.map(\.0))")
            XCTAssertEqual(bad.isEmpty, wholePass(gradient, network) == nil)
        }
    }

    func testAPartThatDoesNotJoinTheScannedOnesIsLeftToTheRest() throws {
        let network = try network()
        let count = network.parameterCount
        var values = [Float](repeating: 1, count: count)
        values[60] = .nan
        let gradient = buffer(values)
        var scan = StreamedPartialsScan()
        // 50..<80 leaves a gap above it: it is not taken as scanned, so the rest covers it.
        let found = streamedThenRest(gradient, node: TreeNode(level: 0, index: 0), parts: [100..<count, 50..<80], network, scan: &scan)
        XCTAssertEqual(found, wholePass(gradient, network))
        XCTAssertNotNil(found)
    }

    /// A buffer comes back from the engine's pool for the next computation: what an earlier one
    /// streamed must not count for it.
    func testAnEarlierComputationsScanIsNotTrusted() throws {
        let network = try network()
        let count = network.parameterCount
        let node = TreeNode(level: 0, index: 3)
        let gradient = buffer([Float](repeating: 1, count: count))
        var scan = StreamedPartialsScan()
        scan.scan([node: gradient], elements: 30..<count)
        // The same memory now holds a result with a NaN high up, of which only the first part streamed.
        gradient.pointer[count - 1] = .nan
        gradient.pointer[count - 5] = .infinity
        scan.scan([node: gradient], elements: 90..<count)
        XCTAssertEqual(scan.finding(for: node, in: UnsafeBufferPointer(start: gradient.pointer, count: count), network: network)?.description,
                       wholePass(gradient, network))
        // After `reset`, nothing streamed before counts.
        scan.reset()
        gradient.pointer[count - 1] = 1
        gradient.pointer[20] = .nan
        XCTAssertEqual(scan.finding(for: node, in: UnsafeBufferPointer(start: gradient.pointer, count: count), network: network)?.description,
                       wholePass(gradient, network))
        // Nor does a scan of other memory under the same node.
        let other = buffer([Float](repeating: 2, count: count))
        scan.scan([node: other], elements: 0..<count)
        XCTAssertEqual(scan.finding(for: node, in: UnsafeBufferPointer(start: gradient.pointer, count: count), network: network)?.description,
                       wholePass(gradient, network))
    }
}
