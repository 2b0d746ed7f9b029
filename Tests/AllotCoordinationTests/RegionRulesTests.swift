import AllotCoordination
import AllotCore
import Testing

/// Regions (step 5) through `CoordinatorMachine`s in virtual time: a global quota shared by
/// two regions, a regional budget that never leaves its region, a dead upstream, a region cut
/// off and back, a region's coordinator restarted.
@Suite("Region rules in virtual time")
struct RegionRulesTests {
    static func quota(_ allowance: Int64) throws -> BudgetSpec {
        try BudgetSpec(id: "tenant.day", unit: .requests, kind: .quota(allowance: allowance, window: try CalendarWindow(.day)), reach: .global)
    }

    @Test("a global quota holds exactly across two regions while demand moves between them; a regional budget never leaves its region")
    func globalQuota() throws {
        let q = try Self.quota(3_000)
        let regional = try BudgetSpec(id: "gw.rps", unit: .requests, kind: .rate(limit: 100_000, period: .seconds(1), burst: 100_000))
        var v = try VirtualRegions(budgets: [q, regional], now: t0)
        // Region 0 busy (8 per node per 10 ms) for 3 s, then region 1, each with a trickle in
        // the other; 3,000 allowed of about 10,000 offered.
        v.run(for: .milliseconds(6_500)) { r, b, t in
            b == regional.id ? 1 : ((t < .seconds(3)) == (r == 0) ? 8 : 1)
        }
        let a = v.admitted.map { $0[q.id, default: 0] }
        print("regions, moving demand (virtual time): admitted \(a) of 3,000")
        #expect(a[0] + a[1] <= 3_000, "the global cap broke: \(a)")
        #expect(a[0] + a[1] >= 2_700, "only \(a) of 3,000 used")
        #expect(a[1] > 3_000 - a[0] - 300, "region 1 did not get what region 0 left: \(a)")
        #expect(!v.global.allocator.contains(regional.id))
        #expect(v.regions.allSatisfy { $0.allocator.contains(regional.id) })
        #expect(v.admitted.allSatisfy { $0[regional.id, default: 0] > 500 })
        #expect(v.regions.allSatisfy { $0.counters.upstreamUnits > 0 })
    }

    @Test("a dead upstream: the region serves its regional budgets, fails its global ones closed, and recovers by itself when the global coordinator comes up")
    func deadUpstream() throws {
        let q = try Self.quota(1_000)
        let regional = try BudgetSpec(id: "gw.day", unit: .requests, kind: .quota(allowance: 1_000, window: try CalendarWindow(.day)))
        var v = try VirtualRegions(budgets: [q, regional], now: t0)
        v.globalDown = true
        v.run(for: .milliseconds(1_500)) { _, _, _ in 1 }
        #expect(v.admitted[0][q.id, default: 0] == 0, "a global budget was granted with no upstream")
        #expect(v.admitted[0][regional.id, default: 0] > 0, "the regional budget stopped with the upstream")
        v.globalDown = false
        v.run(for: .seconds(2)) { _, b, _ in b == q.id ? 1 : 0 }
        #expect(v.admitted[0][q.id, default: 0] > 0, "the region did not recover when the global coordinator came up")
    }

    @Test("a region cut off serves from its lease, then stops; back, it settles the lapsed lease and what it did not use is the other region's")
    func cutAndSettle() throws {
        let q = try Self.quota(2_000)
        var v = try VirtualRegions(budgets: [q], now: t0)
        // Both regions busy for 1.5 s; region 1 is then cut off for 6 s (twice the 3 s upstream
        // lease): busy for 0.3 s more, then its demand stops; region 0 goes on asking until the
        // quota is spent.
        v.run(for: .milliseconds(1_500)) { _, _, _ in 3 }
        v.cut = [1]
        // Just cut, it serves from what it holds.
        let atCut = v.admitted[1][q.id, default: 0]
        v.run(for: .milliseconds(300)) { _, _, _ in 3 }
        #expect(v.admitted[1][q.id, default: 0] > atCut, "the cut region did not serve from its lease")
        v.run(for: .milliseconds(3_200)) { r, _, _ in r == 0 ? 3 : 0 }
        let before = v.admitted[1][q.id, default: 0]
        // 3.5 s into the cut its upstream lease has ended: the region grants nothing more.
        v.run(for: .milliseconds(2_500)) { _, _, _ in 3 }
        #expect(v.admitted[1][q.id, default: 0] == before, "the cut region admitted after its upstream lease ended")
        v.cut = []
        v.run(for: .milliseconds(2_500)) { r, _, _ in r == 0 ? 3 : 0 }
        #expect(v.global.counters.lateSettlements >= 1 && v.global.counters.lateSettledUnits > 0, "the cut region did not settle its lapsed lease")
        let total = v.admitted[0][q.id, default: 0] + v.admitted[1][q.id, default: 0]
        print("regions, cut and settle (virtual time): region 1 served \(v.admitted[1][q.id, default: 0] - atCut) in 0.3 s after the cut, 0 after its lease ended; \(v.global.counters.lateSettlements) late settlement(s) returned \(v.global.counters.lateSettledUnits) units; total \(total) of 2,000")
        #expect(total <= 2_000)
        #expect(total >= 1_900, "only \(total) of 2,000: what the cut region did not use stayed counted as spent")
    }

    @Test("a region's coordinator restarted under the same upstream name (its gateways kept, or restarted too) is granted global units again")
    func regionRestart() throws {
        var v = try VirtualRegions(budgets: [try Self.quota(100_000)], now: t0)
        // Restarted twice: its gateways keep their leases the first time, restart too the second.
        for life in 0..<3 {
            let before = v.admitted[0]["tenant.day", default: 0]
            v.run(for: .seconds(2)) { r, _, _ in r == 0 ? 5 : 0 }
            #expect(v.admitted[0]["tenant.day", default: 0] - before >= 200, "life \(life) of region 0 admitted too little")
            #expect(v.regions[0].counters.upstreamUnits > 0, "life \(life) got no global units")
            try v.restartRegion(0, freshGateways: life == 1)
        }
    }
}
