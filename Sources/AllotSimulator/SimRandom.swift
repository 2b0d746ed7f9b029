/// A small, fast, seedable generator (SplitMix64): the same seed gives the same run on
/// every machine, which is what makes a simulation a test.
public struct SimRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }

    /// Exponentially distributed with the given mean.
    public mutating func exponential(mean: Double) -> Double { -mean * Foundation.log(1 - unit()) }

    /// Log-uniform in [lo, hi].
    public mutating func logUniform(_ lo: Double, _ hi: Double) -> Double {
        Foundation.exp(Foundation.log(lo) + unit() * (Foundation.log(hi) - Foundation.log(lo)))
    }
}

import Foundation
