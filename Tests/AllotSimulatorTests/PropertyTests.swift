import AllotCore
import AllotSimulator
import Testing

/// Invariant 1 (never over the cap), proven over many random fleets: for every scenario and
/// 200 seeds, the `allot` strategy runs with a rate, a quota and a concurrency budget charged
/// at once (sizes drawn from the seed so each of them binds in some runs), the allocator's
/// and every enforcer's books are checked after every event, and the admissions are replayed
/// against each budget's exact definition (every interval, every window, every instant).
@Suite("Property: allot never exceeds any cap")
struct PropertyTests {
    static let seeds: [UInt64] = Array(1...200)

    @Test("every scenario, 200 seeds, rate + quota + concurrency at once", arguments: Scenario.Name.allCases)
    func neverOverTheCap(_ name: Scenario.Name) {
        var binding = Set<String>()
        for seed in Self.seeds {
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
