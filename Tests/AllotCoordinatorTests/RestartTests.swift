import AllotCore
import AllotCoordinator
import Foundation
import Testing

/// A node or a region that restarts under the same name must be served at once: the
/// coordinator drops acquires whose request id is not above the last it saw from that node,
/// and a new life starts its ids at 1 again; its hello's new incarnation makes the
/// coordinator forget the previous life's (found by bench/run.sh: every run after the
/// first got nothing).
@Suite("Restarts under the same name", .serialized)
struct RestartTests {
    @Test("a gateway node restarted under the same name gets leases again at once")
    func nodeRestart() async throws {
        let h = Harness()
        // A quota: the node asks again for every slice, so each life sends many acquires.
        let quota = try BudgetSpec(id: "q", unit: .requests, kind: .quota(allowance: 1 << 40, window: try CalendarWindow(.day)))
        try await h.start("c0", address: "c0:7000", budgets: [quota], seeds: nil, allocator: fastAllocator)
        for life in 0..<2 {
            let node = try TestNode("gw-1", budgets: [quota], seeds: ["c0:7000"], harness: h, leaseTTL: fastAllocator.leaseTTL)
            var admitted = 0
            let start = Date()
            while Date().timeIntervalSince(start) < 1.5 {
                for _ in 0..<10 where node.admit("q") { admitted += 1 }
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(admitted >= 1_000, "life \(life) of gw-1 admitted only \(admitted) in 1.5 s")
            await node.stop()
        }
        #expect(h.core("c0:7000")?.counters.nodeRestarts == 1)
        await h.stopAll()
    }

    @Test("a region's coordinator restarted under the same upstream name is granted global units again")
    func regionRestart() async throws {
        let h = Harness()
        let quota = try BudgetSpec(id: "tenant.day", unit: .requests, kind: .quota(allowance: 100_000, window: try CalendarWindow(.day)),
                                   reach: .global)
        try await RegionTests.startGlobal(h, budgets: [quota])
        await h.wait(5) { RegionTests.globalAddresses.allSatisfy { h.core($0)?.members.list.count == 2 } }
        for life in 0..<2 {
            let region = try await RegionTests.startRegion(h, 0, budgets: [quota])
            var admitted = 0
            let start = Date()
            while admitted < 200 && Date().timeIntervalSince(start) < 5 {
                for n in region.nodes { for _ in 0..<5 where n.admit(quota.id) { admitted += 1 } }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(admitted >= 200, "life \(life) of region 0 admitted only \(admitted) in 5 s")
            for n in region.nodes { await n.stop() }
            region.task.cancel()
            await region.task.value
            h.crash("r0:7000")
        }
        await h.stopAll()
    }
}
