import AllotCore
import AllotCoordinator
import Foundation
import Testing

/// A node or a region that restarts under the same name must be served at once: the
/// coordinator drops acquires whose request id is not above the last it saw from that node,
/// and a new life starts its ids at 1 again; its hello's new incarnation makes the
/// coordinator forget the previous life's (found by bench/run.sh: every run after the
/// first got nothing). Here a real lease client's hello over the protocol, in real time; the
/// rule itself, and a region's restart, in virtual time in AllotCoordinationTests.
@Suite("Restarts under the same name (in process, real time)", .serialized)
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
}
