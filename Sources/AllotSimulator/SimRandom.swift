import AllotCore
/// The simulator's generator: `SeededRandom` (SplitMix64; the same seed gives the same run on
/// every machine, which is what makes a simulation a test), with the distributions it draws.
public typealias SimRandom = SeededRandom

extension SeededRandom {
    /// Exponentially distributed with the given mean.
    public mutating func exponential(mean: Double) -> Double { -mean * Foundation.log(1 - unit()) }

    /// Log-uniform in [lo, hi].
    public mutating func logUniform(_ lo: Double, _ hi: Double) -> Double {
        Foundation.exp(Foundation.log(lo) + unit() * (Foundation.log(hi) - Foundation.log(lo)))
    }
}

import Foundation
