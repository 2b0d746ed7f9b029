import Testing
@testable import AllotCore

/// Step 5 in virtual time, pure: a global owner, two regions whose coordinators lease from it
/// through `UpstreamClient` and sub-lease to three gateways each, with 60 ms between a region
/// and the global owner. Demand moves from one region to the other halfway.
@Suite("Regions (hierarchy, virtual time)")
struct RegionsTests {
    struct Region {
        var client: UpstreamClient
        var alloc: Allocator
        var nodes: [Enforcer]
        var handles: [BudgetHandle]
    }

    /// Runs the two-region topology for `seconds`; `rate(t, r)` is region r's demand at t
    /// (req/s over its 3 gateways), `cut(t, r)` drops region r's messages to and from the
    /// global owner. Returns admissions per region and per region per second.
    func run(seconds: Double, globalTTL: Duration = .seconds(30), allowance: Int64 = 10_000, rate: (Double, Int) -> Double,
             cut: (Double, Int) -> Bool = { _, _ in false }) throws -> (admitted: [Int], perSecond: [[Int]]) {
        let spec = try BudgetSpec(id: "tenant.day", unit: .requests, kind: .quota(allowance: allowance, window: try CalendarWindow(.day)))
        var gs = AllocatorSettings()
        gs.leaseTTL = globalTTL
        gs.refreshInterval = .seconds(5)
        var global = try Allocator(settings: gs, budgets: [spec], now: at(0))
        var regions: [Region] = []
        for r in 0..<2 {
            var cs = UpstreamClient.Settings(node: NodeID("region-\(r)"))
            cs.refreshInterval = .seconds(5)
            cs.renewMargin = globalTTL / 3
            var client = UpstreamClient(settings: cs)
            client.register(spec.id)
            var alloc = try Allocator(settings: AllocatorSettings(), budgets: [], now: at(0))
            try alloc.addUpstreamBacked(spec, now: at(0))
            var nodes: [Enforcer] = []
            var handles: [BudgetHandle] = []
            for n in 0..<3 {
                var e = try Enforcer(settings: EnforcerSettings(node: NodeID("r\(r)-gw\(n)")))
                handles.append(e.register(spec))
                nodes.append(e)
            }
            regions.append(Region(client: client, alloc: alloc, nodes: nodes, handles: handles))
        }
        // Messages between a region and the global owner arrive 60 ms later.
        var toGlobal: [(at: Double, region: Int, msg: Enforcer.Outgoing)] = []
        var toRegion: [(at: Double, region: Int, grant: Grant)] = []
        var admitted = [0, 0]
        var perSecond = [[Int]](repeating: [Int](repeating: 0, count: Int(seconds) + 1), count: 2)
        let step = 0.02
        var t = 0.0
        while t < seconds {
            t += step
            let now = at(t)
            for r in 0..<2 {
                let perNode = rate(t, r) / 3
                var region = regions[r]
                for n in 0..<3 {
                    let k = Int(perNode * t) - Int(perNode * (t - step))
                    for _ in 0..<k where region.nodes[n].admit(.oneRequest, on: BudgetSet(region.handles[n]), now: now).isAdmitted {
                        admitted[r] += 1
                        perSecond[r][Int(t)] += 1
                    }
                    _ = region.nodes[n].tick(now: now)
                    for m in region.nodes[n].poll(now: now) {
                        switch m {
                        case .acquire(let a):
                            if case .granted(let g) = region.alloc.acquire(a, now: now) { _ = region.nodes[n].receive(g, now: now) }
                        case .release(let rel): _ = region.alloc.release(rel, now: now)
                        }
                    }
                }
                _ = region.alloc.tick(now: now)
                let view = Self.view(region.alloc, spec.id, demand: Int64(rate(t, r)))
                for action in region.client.poll(now: now, views: [spec.id: view]) {
                    switch action {
                    case .withdraw(let b, let n): #expect(region.alloc.withdraw(b, max: n, now: now) == n)
                    case .send(let m): if !cut(t, r) { toGlobal.append((t + 0.06, r, m)) }
                    }
                }
                for g in toRegion.filter({ $0.at <= t && $0.region == r }) where !cut(t, r) {
                    if let d = region.client.receive(g.grant, now: now, view: Self.view(region.alloc, spec.id, demand: 0)) {
                        region.alloc.deposit(spec.id, amount: d.amount, expiresAt: d.expiresAt, now: now)
                    }
                }
                toRegion.removeAll { $0.at <= t && $0.region == r }
                if let e = region.alloc.checkInvariants() { throw AllotError(.invalidSettings, "region \(r): \(e)") }
                regions[r] = region
            }
            for m in toGlobal.filter({ $0.at <= t }) {
                switch m.msg {
                case .acquire(let a):
                    if case .granted(let g) = global.acquire(a, now: at(t)) { toRegion.append((t + 0.06, m.region, g)) }
                case .release(let rel): _ = global.release(rel, now: at(t))
                }
            }
            toGlobal.removeAll { $0.at <= t }
            _ = global.tick(now: at(t))
            if let e = global.checkInvariants() { throw AllotError(.invalidSettings, "global: \(e)") }
        }
        return (admitted, perSecond)
    }

    @Test("a global quota holds exactly across two regions while demand moves between them, and is nearly all used")
    func globalQuota() throws {
        // Region 0 is busy for the first half, region 1 for the second: 200 req/s (12,000
        // offered) against 10,000, so the quota runs out in the second half.
        let (admitted, _) = try run(seconds: 60) { t, r in (t < 30) == (r == 0) ? 200 : 5 }
        let total = admitted[0] + admitted[1]
        print("regions: admitted \(admitted[0]) in region 0 (busy first), \(admitted[1]) in region 1 (busy second), \(total) of 10,000")
        #expect(total <= 10_000)
        #expect(total >= 9_500, "only \(total) of 10,000 used")
        // What region 0 did not use (it gave its surplus back upstream) went to region 1.
        #expect(admitted[1] >= 10_000 - admitted[0] - 500, "region 1 did not get what region 0 gave back")
    }

    @Test("a region cut off from the global owner serves from its lease, then stops, and is served again after; the cap holds across both")
    func cutRegion() throws {
        // Both regions busy at 60 req/s; region 1 is cut off from 10 s to 40 s (longer than
        // the 10 s upstream lease).
        let (admitted, perSecond) = try run(seconds: 50, globalTTL: .seconds(10), rate: { _, _ in 60 },
                                            cut: { t, r in r == 1 && t >= 10 && t < 40 })
        let total = admitted[0] + admitted[1]
        let cutServed = perSecond[1][10..<40].reduce(0, +)
        let lateCut = perSecond[1][22..<40].reduce(0, +)
        print("regions, cut: region 1 served \(cutServed) while cut off (\(lateCut) after its upstream lease ran out), total \(total) of 10,000")
        #expect(total <= 10_000)
        #expect(cutServed > 0, "the cut region stopped at once instead of spending its lease")
        #expect(lateCut == 0, "the cut region kept admitting after its upstream lease ended")
        #expect(perSecond[1][41..<50].reduce(0, +) > 0, "the region was not served again after the cut")
    }

    @Test("what a cut region held and did not use is settled after the cut, and the other region gets it")
    func cutRegionSettles() throws {
        // Region 1 is busy until 9 s, then idle, and cut off from 9 s to 30 s: what it held at
        // the cut (about one refresh interval of its demand) is unused. Region 0 asks all along;
        // the quota (3,500) runs out while region 1 is cut.
        let (admitted, perSecond) = try run(seconds: 50, globalTTL: .seconds(10), allowance: 3_500,
                                            rate: { t, r in r == 0 ? 60 : (t < 9 ? 200 : 0) },
                                            cut: { t, r in r == 1 && t >= 9 && t < 30 })
        let total = admitted[0] + admitted[1]
        let after = perSecond[0][30..<50].reduce(0, +)
        print("regions, settle: region 0 admitted \(after) after region 1's cut ended (its unused units settled), total \(total) of 3,500")
        #expect(total <= 3_500)
        #expect(after > 0, "region 0 never got what the cut region had not used")
        #expect(total >= 3_400, "only \(total) of 3,500: the cut region's unused units stayed counted as spent")
    }

    static func view(_ a: Allocator, _ b: BudgetID, demand: Int64) -> UpstreamClient.RegionView {
        a.regionView(b, now: .zero, demand: demand)!
    }
}
