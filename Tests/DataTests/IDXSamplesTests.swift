import Data
import Foundation
import XCTest

/// Sequences and volumes in IDX files: Float32 and unsigned-byte elements, a left-out single
/// channel, and shapes that disagree with the model.
final class IDXSamplesTests: XCTestCase {
    func testFloat32SequencesLoadAsTheyAreWrittenWithTheirShape() throws {
        let directory = try TemporaryDirectory()
        let values: [Float] = (0..<(3 * 2 * 5)).map { Float($0) * 0.25 - 3 }
        let samples = try directory.write("samples", IDXSamples.float32File(dimensions: [3, 2, 5], values: values))
        let labels = try directory.write("labels", IDXSamples.labelsFile([2, 0, 1]))
        let set = try IDXSamples.load(samplesPath: samples, labelsPath: labels, dimensions: [2, 5], classes: 3, name: "seq")
        XCTAssertEqual([set.count, set.channels, set.depth, set.height, set.width], [3, 2, 1, 1, 5])
        XCTAssertEqual(set.pixels, values)
        XCTAssertEqual(set.labels, [2, 0, 1])
    }

    func testOneChannelVolumesMayLeaveTheChannelOutAndBytesAreScaledToOne() throws {
        let directory = try TemporaryDirectory()
        let bytes: [UInt8] = (0..<(2 * 2 * 3 * 2)).map { UInt8($0 * 10) }
        var file: [UInt8] = [0, 0, 0x08, 4]
        for size in [2, 2, 3, 2] { file += [0, 0, 0, UInt8(size)] }
        let samples = try directory.write("samples", file + bytes)
        let labels = try directory.write("labels", IDXSamples.labelsFile([1, 1]))
        let set = try IDXSamples.load(samplesPath: samples, labelsPath: labels, dimensions: [1, 2, 3, 2], classes: 2, name: "vol")
        XCTAssertEqual([set.count, set.channels, set.depth, set.height, set.width, set.sampleSize], [2, 1, 2, 3, 2, 12])
        XCTAssertEqual(set.pixels, bytes.map { Float($0) / 255 })
    }

    func testSamplesOfAnotherShapeThanTheModelInputAreRefusedNamingBoth() throws {
        let directory = try TemporaryDirectory()
        let samples = try directory.write("samples", IDXSamples.float32File(dimensions: [2, 3, 7], values: .init(repeating: 0, count: 42)))
        let labels = try directory.write("labels", IDXSamples.labelsFile([0, 1]))
        XCTAssertThrowsError(try IDXSamples.load(samplesPath: samples, labelsPath: labels, dimensions: [3, 8], classes: 2, name: "seq")) { error in
            XCTAssertTrue("\(error)".contains("[3, 7]") && "\(error)".contains("[3, 8] (model.input)"), "\(error)")
        }
        XCTAssertThrowsError(try IDXSamples.load(samplesPath: samples, labelsPath: labels, dimensions: [3, 7], classes: 1, name: "seq")) { error in
            XCTAssertTrue("\(error)".contains("label"), "\(error)")
        }
    }
}
