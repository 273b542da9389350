import CNN
import Foundation
import XCTest

/// Both matrix-multiply libraries against a double-precision product, and the properties the
/// step contract needs of them: the same bits whatever the alignment of the operands (workers
/// read weights where a ZeroMQ message put them, 8-byte aligned) and whatever runs beside.
final class BLASTests: XCTestCase {
    /// `rows` rows of `stride` floats in [-1, 1).
    private static func matrix(rows: Int, stride: Int, seed: UInt32) -> [Float] {
        var state = seed
        return (0..<(rows * stride)).map { _ in
            state = state &* 1_664_525 &+ 1_013_904_223
            return Float(state >> 8) / Float(1 << 23) - 1
        }
    }

    /// What each thread of a concurrent test computed, behind a lock.
    private final class ResultsByThread: @unchecked Sendable {
        private let lock = NSLock()
        private var values: [Int: [UInt32]] = [:]
        func set(_ index: Int, _ value: [UInt32]) { lock.withLock { values[index] = value } }
        func get(_ index: Int) -> [UInt32]? { lock.withLock { values[index] } }
    }

    private struct Product: Sendable {
        var m, n, k: Int
        var transposeA, transposeB: Bool
        var alpha, beta: Float
        /// Extra floats per row beyond the minimum leading dimension.
        var padding: Int

        var lda: Int { (transposeA ? m : k) + padding }
        var ldb: Int { (transposeB ? k : n) + padding }
        var ldc: Int { n + padding }
        var rowsA: Int { transposeA ? k : m }
        var rowsB: Int { transposeB ? n : k }

        func a(_ a: [Float], _ i: Int, _ p: Int) -> Double { Double(transposeA ? a[p * lda + i] : a[i * lda + p]) }
        func b(_ b: [Float], _ p: Int, _ j: Int) -> Double { Double(transposeB ? b[j * ldb + p] : b[p * ldb + j]) }
    }

    private static func run(_ product: Product, library: BLAS.Library, a: [Float], b: [Float], c: [Float]) -> [Float] {
        var c = c
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    BLAS.gemm(
                        library: library, transposeA: product.transposeA, transposeB: product.transposeB,
                        m: product.m, n: product.n, k: product.k, alpha: product.alpha, a: a.baseAddress!, lda: product.lda,
                        b: b.baseAddress!, ldb: product.ldb, beta: product.beta, c: c.baseAddress!, ldc: product.ldc)
                }
            }
        }
        return c
    }

    func testBothLibrariesMatchADoublePrecisionProductForEveryTransposeAndStride() {
        var checked = 0
        for (m, n, k) in [(1, 1, 1), (7, 13, 5), (33, 17, 100), (64, 49, 288), (3, 200, 9)] {
            for transposeA in [false, true] {
                for transposeB in [false, true] {
                    for (alpha, beta, padding) in [(Float(1), Float(0), 0), (0.5, 1, 3)] {
                        let product = Product(
                            m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB, alpha: alpha, beta: beta, padding: padding)
                        let a = Self.matrix(rows: product.rowsA, stride: product.lda, seed: 1)
                        let b = Self.matrix(rows: product.rowsB, stride: product.ldb, seed: 2)
                        let c = Self.matrix(rows: m, stride: product.ldc, seed: 3)
                        for library in BLAS.Library.allCases {
                            let result = Self.run(product, library: library, a: a, b: b, c: c)
                            for i in 0..<m {
                                for j in 0..<n {
                                    var sum = 0.0
                                    for p in 0..<k { sum += product.a(a, i, p) * product.b(b, p, j) }
                                    let expected = Double(alpha) * sum + Double(beta) * Double(c[i * product.ldc + j])
                                    let tolerance = 1e-5 * Double(k + 1) * 4
                                    XCTAssertEqual(
                                        Double(result[i * product.ldc + j]), expected, accuracy: tolerance,
                                        "\(library) \(m)x\(n)x\(k) tA \(transposeA) tB \(transposeB) alpha \(alpha) beta \(beta) at \(i),\(j)")
                                }
                                // Floats between rows (the padding) are never written.
                                for j in n..<product.ldc where i * product.ldc + j < result.count {
                                    XCTAssertEqual(result[i * product.ldc + j], c[i * product.ldc + j], "\(library) wrote padding")
                                }
                            }
                            checked += 1
                        }
                    }
                }
            }
        }
        XCTAssertEqual(checked, 5 * 4 * 2 * BLAS.Library.allCases.count)
    }

    func testOneDNNGivesTheSameBitsWhateverTheAlignmentOfItsOperands() {
        for (m, n, k) in [(64, 196, 288), (16, 1024, 144), (10, 64, 128), (5, 7, 3)] {
            let a = Self.matrix(rows: m, stride: k, seed: 4)
            let b = Self.matrix(rows: k, stride: n, seed: 5)
            func product(offset: Int) -> [Float] {
                // Operands shifted by `offset` floats from a 64-byte boundary.
                let aligned = 64
                let aStore = UnsafeMutableRawPointer.allocate(byteCount: (a.count + 16) * 4, alignment: aligned)
                let bStore = UnsafeMutableRawPointer.allocate(byteCount: (b.count + 16) * 4, alignment: aligned)
                let cStore = UnsafeMutableRawPointer.allocate(byteCount: (m * n + 16) * 4, alignment: aligned)
                defer { aStore.deallocate(); bStore.deallocate(); cStore.deallocate() }
                let aPointer = aStore.bindMemory(to: Float.self, capacity: a.count + 16) + offset
                let bPointer = bStore.bindMemory(to: Float.self, capacity: b.count + 16) + (offset * 3) % 16
                let cPointer = cStore.bindMemory(to: Float.self, capacity: m * n + 16) + (offset * 5) % 16
                aPointer.update(from: a, count: a.count)
                bPointer.update(from: b, count: b.count)
                BLAS.gemm(
                    library: .oneDNN, transposeA: false, transposeB: false, m: m, n: n, k: k, a: aPointer, lda: k,
                    b: bPointer, ldb: n, beta: 0, c: cPointer, ldc: n)
                return Array(UnsafeBufferPointer(start: cPointer, count: m * n))
            }
            let reference = product(offset: 0)
            for offset in [1, 2, 5, 15] {
                XCTAssertEqual(
                    product(offset: offset).map(\.bitPattern), reference.map(\.bitPattern), "\(m)x\(n)x\(k) at offset \(offset)")
            }
        }
    }

    func testOneDNNGivesTheSameBitsWhenTwoThreadsMultiplyAtOnce() {
        let (m, n, k) = (64, 784, 288)
        let a = Self.matrix(rows: m, stride: k, seed: 6)
        let b = Self.matrix(rows: k, stride: n, seed: 7)
        let product = Product(m: m, n: n, k: k, transposeA: false, transposeB: false, alpha: 1, beta: 0, padding: 0)
        let zero = [Float](repeating: 0, count: m * n)
        let alone = Self.run(product, library: .oneDNN, a: a, b: b, c: zero).map(\.bitPattern)
        let results = ResultsByThread()
        // New threads, which OpenMP has never seen: each must still multiply on one thread.
        DispatchQueue.concurrentPerform(iterations: 2) { index in
            var last: [UInt32] = []
            for _ in 0..<20 { last = Self.run(product, library: .oneDNN, a: a, b: b, c: zero).map(\.bitPattern) }
            results.set(index, last)
        }
        XCTAssertEqual(results.get(0), alone)
        XCTAssertEqual(results.get(1), alone)
    }

    func testTheLibraryComesFromCNNGEMMAndAnUnknownNameIsRefusedWithTheChoices() throws {
        XCTAssertEqual(try BLAS.library(environment: [:]), BLAS.defaultLibrary)
        XCTAssertEqual(try BLAS.library(environment: ["CNN_GEMM": ""]), BLAS.defaultLibrary)
        XCTAssertEqual(try BLAS.library(environment: ["CNN_GEMM": "openblas"]), .openBLAS)
        XCTAssertEqual(try BLAS.library(environment: ["CNN_GEMM": "oneDNN"]), .oneDNN)
        XCTAssertThrowsError(try BLAS.library(environment: ["CNN_GEMM": "mkl"])) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.contains("CNN_GEMM=mkl") && text.contains("onednn or openblas"), text)
        }
        XCTAssertTrue(BLAS.kernelName.hasPrefix(BLAS.library == .oneDNN ? "oneDNN " : "OpenBLAS "), BLAS.kernelName)
    }
}
