import CNN
import Randomness
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Initial weights are a pure function of (seed, tensor, element), however they are computed: a
/// large tensor is filled in pieces on every core, and a tensor's key is mixed once for all its
/// elements. Both must give the bits of the element-by-element definition, written out here.
final class InitialisationTests: XCTestCase {
    /// The key mixing as first defined: five SplitMix64 finalisers over (seed, purpose, a, b, c, d).
    private func definedBits(seed: UInt64, purpose: RandomPurpose, _ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64) -> UInt64 {
        var h = CounterRandom.mix(seed ^ (purpose.rawValue &* 0xD6E8_FEB8_6659_FD93))
        for counter in [a, b, c, d] { h = CounterRandom.mix(h ^ counter) }
        return h
    }

    private func definedUniform(seed: UInt64, purpose: RandomPurpose, _ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64) -> Double {
        Double(definedBits(seed: seed, purpose: purpose, a, b, c, d) >> 11) * 0x1p-53
    }

    private func definedNormal(seed: UInt64, purpose: RandomPurpose, _ a: UInt64, _ b: UInt64, _ c: UInt64, _ index: UInt64) -> Double {
        let u1 = 1 - definedUniform(seed: seed, purpose: purpose, a, b, c, index &* 2)
        let u2 = definedUniform(seed: seed, purpose: purpose, a, b, c, index &* 2 &+ 1)
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    func testAStreamDrawsTheValuesOfItsKeysOneByOne() {
        var state: UInt64 = 41
        func next() -> UInt64 { state = CounterRandom.mix(state); return state }
        for purpose in [RandomPurpose.initialisation, .dropout, .synthetic] {
            for _ in 0..<200 {
                let (seed, a, b, c, d) = (next(), next(), next() % 7, next(), next() % 1_000_000)
                let stream = CounterRandom.Stream(seed: seed, purpose: purpose, a, b, c)
                let bits = definedBits(seed: seed, purpose: purpose, a, b, c, d)
                XCTAssertEqual(stream.bits(d), bits)
                XCTAssertEqual(CounterRandom.bits(seed: seed, purpose: purpose, a, b, c, d), bits)
                XCTAssertEqual(stream.uniform(d).bitPattern, definedUniform(seed: seed, purpose: purpose, a, b, c, d).bitPattern)
                let normal = definedNormal(seed: seed, purpose: purpose, a, b, c, d)
                XCTAssertEqual(stream.normal(d).bitPattern, normal.bitPattern)
                XCTAssertEqual(CounterRandom.normal(seed: seed, purpose: purpose, a, b, c, d).bitPattern, normal.bitPattern)
            }
        }
    }

    /// A tensor of more than two pieces (1 << 18 elements each) and a ragged end: every element
    /// as the definition gives it, for each random initialiser.
    func testALargeTensorFilledInPiecesHasEveryElementOfTheDefinition() {
        let count = 2 * (1 << 18) + 12_345
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        let seed: UInt64 = 77, tensor = 5
        let cases: [(Initialiser, (Int) -> Float)] = [
            (.heNormal(fanIn: 300), { e in
                Float((2 / 300.0).squareRoot() * self.definedNormal(seed: seed, purpose: .initialisation, UInt64(tensor), 0, 0, UInt64(e))) }),
            (.xavierNormal(fanIn: 300, fanOut: 20), { e in
                Float((2 / 320.0).squareRoot() * self.definedNormal(seed: seed, purpose: .initialisation, UInt64(tensor), 0, 0, UInt64(e))) }),
            (.heUniform(fanIn: 300), { e in
                Float((2 * self.definedUniform(seed: seed, purpose: .initialisation, UInt64(tensor), 1, 0, UInt64(e)) - 1) * (6 / 300.0).squareRoot()) }),
            (.xavierUniform(fanIn: 300, fanOut: 20), { e in
                Float((2 * self.definedUniform(seed: seed, purpose: .initialisation, UInt64(tensor), 1, 0, UInt64(e)) - 1) * (6 / 320.0).squareRoot()) }),
        ]
        for (initialiser, defined) in cases {
            buffer.update(repeating: .nan, count: count)
            initialiser.fill(buffer, count: count, seed: seed, tensor: tensor)
            var differing = 0
            for e in 0..<count where buffer[e].bitPattern != defined(e).bitPattern { differing += 1 }
            XCTAssertEqual(differing, 0, "\(initialiser): \(differing) of \(count) elements differ from the definition")
        }
    }
}
