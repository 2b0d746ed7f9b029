import AllotCore
import AllotSimulator
import Foundation
import Testing

/// Invariant 1 (never over the cap), proven over many random fleets: for every scenario and
/// 200 seeds (`ALLOT_PROPERTY_SEEDS` sets how many: CI's `scripts/test.sh` runs 64, the long
/// run is `bash bench/properties.sh`), the `allot` strategy runs with a rate, a quota and a
/// concurrency budget charged at once (sizes drawn from the seed so each of them binds in
/// some runs), the allocator's and every enforcer's books are checked after every event, and
/// the admissions are replayed against each budget's exact definition (every interval,
/// every window, every instant).
@Suite("Property: allot never exceeds any cap")
struct PropertyTests {
    /// 200, or `ALLOT_PROPERTY_SEEDS` when set; nil when that is not a whole number from 1 to 100,000.
    static let seedCount: Int? = {
        guard let text = ProcessInfo.processInfo.environment["ALLOT_PROPERTY_SEEDS"] else { return 200 }
        guard let n = Int(text), (1...100_000).contains(n) else { return nil }
        return n
    }()

    @Test("every scenario, 200 seeds (or ALLOT_PROPERTY_SEEDS), rate + quota + concurrency at once", arguments: Scenario.Name.allCases)
    func neverOverTheCap(_ name: Scenario.Name) throws {
        let count = try #require(Self.seedCount, "ALLOT_PROPERTY_SEEDS must be a whole number from 1 to 100000")
        var binding = Set<String>()
        for seed in 1...UInt64(count) {
            let sc = Scenario(name, nodes: 4, seed: seed,
                              duration: name == .tokens ? .seconds(8) : .seconds(2),
                              perNodeRate: name == .tokens ? 8 : 150, mix: .all)
            // `regions`: the hierarchy too (global quota, quota and concurrency, all upstream-backed).
            let report = Simulation.run(sc, strategies: name == .regions ? [.allot, .allotRegions] : [.allot], checkEveryStep: true)
            for m in report.strategies {
                #expect(m.overshoot == 0, "\(m.name) seed \(seed): overshoot \(m.overshoot)")
                #expect(m.conformant, "\(m.name) seed \(seed): \(m.invariantViolation ?? "admissions broke a budget's definition")")
                #expect(m.invariantViolation == nil, "\(m.name) seed \(seed): \(m.invariantViolation ?? "")")
                if m.admitted < m.requests { binding.insert(m.name) }
            }
        }
        // The sizes drawn make budgets bind: denials happened (the property is not vacuous).
        #expect(binding.contains("allot"))
        if name == .regions { #expect(binding.contains("allot-regions")) }
    }
}
