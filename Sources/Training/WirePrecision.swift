import AllReduce
import CNN
import Wire

/// `distributed.wire_precision`: how gradients travel between workers, owners and the
/// coordinator, and so how the fixed tree rounds its nodes (docs/architecture.md, step contract).
public enum WirePrecision: String, Sendable, CaseIterable {
    /// Float32 nodes, sent as Float32 (the default).
    case fp32
    /// Every node of the tree rounded to bf16 once computed, so it travels in 2 bytes a value;
    /// sums in Float32, the mean, clipping, optimiser and weights in Float32.
    case bf16
}

extension TrainingConfig {
    /// How the tree rounds the nodes of a leaf of `gradientCount` parameter gradients (followed
    /// by state observations, which stay Float32): not at all under `fp32`.
    public func nodeRounding(gradientCount: Int) -> NodeRounding {
        switch distributed.wirePrecision {
        case .fp32: .none
        case .bf16: .bfloat16(first: gradientCount)
        }
    }

    /// How a message carrying nodes of `gradientCount` leading gradients travels (the rest as Float32).
    func tensorEncoding(gradientCount: Int) -> TensorEncoding {
        nodeRounding(gradientCount: gradientCount).tensorEncoding
    }
}

extension NodeRounding {
    /// How nodes rounded so travel: their rounded (bf16-exact) elements in bf16, the rest in Float32.
    var tensorEncoding: TensorEncoding { rounds ? .bfloat16(first: roundedCount) : .float32 }

    /// The first `count` elements of every node rounded to bf16 with the engine's rounding
    /// (`BFloat16.round`: to nearest, ties to even, NaN kept, AVX-512 where there is one).
    public static func bfloat16(first count: Int) -> NodeRounding {
        NodeRounding(roundedCount: count) { values, count in
            // Rounded a block at a time into bf16 bits on the stack and widened back in place.
            let block = 4096
            withUnsafeTemporaryAllocation(of: UInt16.self, capacity: block) { bits in
                var start = 0
                while start < count {
                    let n = min(block, count - start)
                    BFloat16.round(values + start, into: bits.baseAddress!, count: n)
                    for i in 0..<n { values[start + i] = Float(bitPattern: UInt32(bits[i]) << 16) }
                    start += n
                }
            }
        }
    }
}
