import AllotTesting
import AllotCore
import AllotCoordinator
import AllotNode
import AllotTransport
import Foundation
import Testing

/// Step 5 in process and in real time, over the protocol's sessions: a global cluster of two
/// coordinators (sharing a ledger) and two regions, each a coordinator whose `RegionUplink`
/// leases the global budget as one node and sub-leases it to the region's own gateways. The
/// region rules (cuts, late settlement, restarts) are tested in virtual time in
/// AllotCoordinationTests.
@Suite("Regions over the protocol (in process, real time)", .serialized)
struct RegionTests {
    static let globalAddresses = ["g0:7000", "g1:7000"]

    struct Region {
        var core: CoordinatorCore
        var uplink: LeaseClient
        var task: Task<Void, Never>
        var nodes: [TestNode]
    }

    /// The global cluster: two coordinators sharing a SQLite ledger, leases of 3 s.
    static func startGlobal(_ h: Harness, budgets: [BudgetSpec]) async throws {
        var global = AllocatorSettings()
        global.leaseTTL = .seconds(3)
        global.refreshInterval = .milliseconds(500)
        let ledger = tempPath("global.db")
        for (i, a) in globalAddresses.enumerated() {
            try await h.start("g\(i)", address: a, budgets: budgets, seeds: globalAddresses,
                              ledger: try SQLiteLedger.open(path: ledger), allocator: global)
        }
    }

    static func startRegion(_ h: Harness, _ r: Int, budgets: [BudgetSpec], link: FaultyLink? = nil) async throws -> Region {
        var leaf = AllocatorSettings()
        leaf.leaseTTL = .seconds(1)
        leaf.refreshInterval = .milliseconds(200)
        var up = UpstreamClient.Settings(node: NodeID("region-\(r)"))
        up.refreshInterval = .milliseconds(500)
        up.retryTimeout = .milliseconds(250)
        up.renewMargin = .seconds(1)
        let address = "r\(r):7000"
        let core = try await h.start("r\(r)", address: address, budgets: budgets, seeds: nil, allocator: leaf, upstream: up)
        var ls = LeaseClient.Settings()
        ls.pollInterval = .milliseconds(20)
        let dial = h.dial(as: .node, "region-\(r)")
        let uplink = LeaseClient(endpoint: RegionUplink(core: core), seeds: globalAddresses, settings: ls,
                                 logger: quietLogger("uplink"), dial: { a in dial(a).map { link?.wrap($0) ?? $0 } })
        let task = Task { await uplink.run() }
        var nodes: [TestNode] = []
        for n in 0..<2 {
            nodes.append(try TestNode("r\(r)-gw\(n)", budgets: budgets, seeds: [address], harness: h, leaseTTL: leaf.leaseTTL))
        }
        return Region(core: core, uplink: uplink, task: task, nodes: nodes)
    }

    @Test("a global quota holds exactly across two regions while demand moves between them; a regional budget never leaves its region")
    func globalQuota() async throws {
        let h = Harness()
        let quota = try BudgetSpec(id: "tenant.day", unit: .requests, kind: .quota(allowance: 3_000, window: try CalendarWindow(.day)),
                                   reach: .global)
        let regional = try BudgetSpec(id: "gw.rps", unit: .requests, kind: .rate(limit: 100_000, period: .seconds(1), burst: 100_000))
        try await Self.startGlobal(h, budgets: [quota])
        await h.wait(5) { Self.globalAddresses.allSatisfy { h.core($0)?.members.list.count == 2 } }
        var regions: [Region] = []
        for r in 0..<2 { regions.append(try await Self.startRegion(h, r, budgets: [quota, regional])) }
        // Region 0 busy (about 800 req/s offered) for 3 s, then region 1 for 3 s, each with a
        // trickle in the other; 3,000 allowed of about 5,000 offered.
        let start = Date()
        var admitted = [0, 0]
        while Date().timeIntervalSince(start) < 6.5 {
            let t = Date().timeIntervalSince(start)
            for (r, region) in regions.enumerated() {
                let busy = (t < 3) == (r == 0)
                for n in region.nodes {
                    for _ in 0..<(busy ? 8 : 1) where n.admit(quota.id) { admitted[r] += 1 }
                    n.admit(regional.id)
                }
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        for region in regions { for n in region.nodes { await n.stop() } }
        let total = admitted[0] + admitted[1]
        print("regions (in process): admitted \(admitted[0]) in region 0 (busy first), \(admitted[1]) in region 1 (busy second), \(total) of 3,000")
        #expect(total <= 3_000, "the global cap broke: \(total) of 3,000")
        #expect(total >= 2_700, "only \(total) of 3,000 used")
        #expect(admitted[1] > 3_000 - admitted[0] - 300, "region 1 did not get what region 0 left")
        // The regional budget is served by each region alone; the global cluster never saw it.
        for a in Self.globalAddresses { #expect(h.core(a)?.allocatorStatus(regional.id) == nil) }
        #expect(regions.allSatisfy { $0.core.allocatorStatus(regional.id) != nil })
        // Each region got its global units from the global cluster, as a node.
        #expect(regions.allSatisfy { $0.core.counters.upstreamUnits > 0 })
        for region in regions {
            region.task.cancel()
            await region.task.value
        }
        await h.stopAll()
    }

    @Test("a dead upstream: the region serves its regional budgets, fails its global ones closed, and recovers by itself when the global cluster comes up")
    func deadUpstream() async throws {
        let h = Harness()
        let quota = try BudgetSpec(id: "tenant.day", unit: .requests, kind: .quota(allowance: 1_000, window: try CalendarWindow(.day)),
                                   reach: .global)
        let regional = try BudgetSpec(id: "gw.day", unit: .requests, kind: .quota(allowance: 1_000, window: try CalendarWindow(.day)))
        // The region starts first; nothing listens at the global addresses yet.
        let region = try await Self.startRegion(h, 0, budgets: [quota, regional])
        var early = (global: 0, regional: 0)
        for _ in 0..<60 {
            for n in region.nodes {
                if n.admit(quota.id) { early.global += 1 }
                if n.admit(regional.id) { early.regional += 1 }
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(early.global == 0, "a global budget was granted with no upstream")
        #expect(early.regional > 0, "the regional budget stopped with the upstream")
        try await Self.startGlobal(h, budgets: [quota])
        var late = 0
        let start = Date()
        while late == 0 && Date().timeIntervalSince(start) < 10 {
            for n in region.nodes where n.admit(quota.id) { late += 1 }
            try await Task.sleep(for: .milliseconds(25))
        }
        print("regions, dead upstream: \(early.regional) regional admitted while the global cluster was down, global served \(String(format: "%.1f", Date().timeIntervalSince(start))) s after it started")
        #expect(late > 0, "the region did not recover when the global cluster came up")
        for n in region.nodes { await n.stop() }
        region.task.cancel()
        await region.task.value
        await h.stopAll()
    }
}
