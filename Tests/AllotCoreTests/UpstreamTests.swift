import Testing
@testable import AllotCore

/// Step 5's building block: a region's coordinator sub-leases a global budget out of what its
/// own upstream lease holds — never more, never longer.
@Suite("Upstream-backed budgets (hierarchy)")
struct UpstreamTests {
    let settings = AllocatorSettings() // lease TTL 10 s

    func region(_ spec: BudgetSpec) throws -> Allocator {
        var a = try Allocator(settings: settings, budgets: [], now: at(0))
        try a.addUpstreamBacked(spec, now: at(0))
        return a
    }

    @Test("nothing is granted before the upstream grants, and never more than it did")
    func boundedByDeposits() throws {
        var a = try region(quotaBudget(allowance: 1_000_000, window: try CalendarWindow(.day)))
        #expect(grant(a.acquire(AcquireRequest(requestID: 1, node: "n1", budget: "q", want: 500), now: at(1)))?.amount == 0)
        a.deposit("q", amount: 300, expiresAt: at(20), now: at(1))
        let g1 = try #require(grant(a.acquire(AcquireRequest(requestID: 2, node: "n1", budget: "q", want: 500), now: at(2))))
        let g2 = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n2", budget: "q", want: 500), now: at(2))))
        #expect(g1.amount + g2.amount == 300)
        #expect(a.checkInvariants() == nil)
        // A node's release makes units free again; free units can go back upstream.
        _ = a.release(ReleaseRequest(node: "n1", budget: "q", leaseID: g1.leaseID, consumed: 20, released: g1.amount - 20, final: true), now: at(3))
        #expect(a.withdraw("q", max: 1_000, now: at(3)) == g1.amount - 20)
        #expect(a.upstreamStatus("q") == Allocator.UpstreamStatus(deposited: 300, withdrawn: g1.amount - 20, lost: 0, free: 0,
                                                                    subLeased: g2.amount, expiresAt: at(20)))
        #expect(a.checkInvariants() == nil)
    }

    @Test("sub-leases never outlive the upstream lease; when it runs out, its free units are gone")
    func ttlsNest() throws {
        var a = try region(quotaBudget(allowance: 1_000_000, window: try CalendarWindow(.day)))
        a.deposit("q", amount: 100, expiresAt: at(5), now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "q", want: 40), now: at(1))))
        #expect(g.ttl == .seconds(4)) // not the 10 s lease TTL: the upstream lease ends at 5 s
        _ = a.tick(now: at(5))
        let st = try #require(a.upstreamStatus("q"))
        #expect(st.free == 0 && st.lost == 100 - g.amount && st.subLeased == 0)
        #expect(grant(a.acquire(AcquireRequest(requestID: 2, node: "n", budget: "q", want: 40), now: at(6)))?.amount == 0)
        #expect(a.checkInvariants() == nil)
        // A renewal (a new deposit) serves again.
        a.deposit("q", amount: 10, expiresAt: at(20), now: at(7))
        #expect(grant(a.acquire(AcquireRequest(requestID: 3, node: "n", budget: "q", want: 40), now: at(7)))?.amount == 10)
        #expect(a.checkInvariants() == nil)
    }

    @Test("a quota lease that ran out is settled late, once: what was not used returns to the pool")
    func lateSettlement() throws {
        var g = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 1_000, window: try CalendarWindow(.day))], now: at(0))
        let lease = try #require(grant(g.acquire(AcquireRequest(requestID: 1, node: "region-b", budget: "q", want: 400), now: at(0))))
        #expect(lease.amount == 400)
        _ = g.release(ReleaseRequest(node: "region-b", budget: "q", leaseID: lease.leaseID, consumed: 50, released: 0, final: false), now: at(1))
        // The region goes silent: at expiry its 350 unreported units are counted as spent.
        _ = g.tick(now: at(11))
        #expect(g.status("q")!.expiredSpent == 350 && g.status("q")!.pool == 600)
        // Not a settlement: not final, or another lease.
        #expect(g.release(ReleaseRequest(node: "region-b", budget: "q", leaseID: lease.leaseID, consumed: 120, released: 0, final: false), now: at(12)) == .ignoredUnknownLease)
        #expect(g.release(ReleaseRequest(node: "region-b", budget: "q", leaseID: lease.leaseID + 7, consumed: 120, released: 0, final: true), now: at(12)) == .ignoredUnknownLease)
        // Back, it says it used 120 in all (70 more): 280 return.
        #expect(g.release(ReleaseRequest(node: "region-b", budget: "q", leaseID: lease.leaseID, consumed: 120, released: 0, final: true), now: at(12)) == .settledLate(returned: 280))
        let st = g.status("q")!
        #expect(st.pool == 880 && st.consumed == 120 && st.expiredSpent == 0)
        #expect(g.checkInvariants() == nil)
        // Only once.
        #expect(g.release(ReleaseRequest(node: "region-b", budget: "q", leaseID: lease.leaseID, consumed: 0, released: 0, final: true), now: at(13)) == .ignoredUnknownLease)
        // A claim above what the lease held is capped: nothing is created.
        let second = try #require(grant(g.acquire(AcquireRequest(requestID: 2, node: "region-b", budget: "q", want: 100), now: at(14))))
        _ = g.tick(now: at(30))
        #expect(g.release(ReleaseRequest(node: "region-b", budget: "q", leaseID: second.leaseID, consumed: 5_000, released: 0, final: true), now: at(31)) == .settledLate(returned: 0))
        #expect(g.status("q")!.consumed == 120 + second.amount && g.checkInvariants() == nil)
    }

    @Test("a late settlement is journaled for the ledger, and is refused after the window ended")
    func lateSettlementLedger() throws {
        var g = try Allocator(settings: settings, budgets: [], now: at(0))
        g.journaling = true
        try g.add(quotaBudget(allowance: 1_000, window: try CalendarWindow(.minute)), now: at(0))
        let lease = try #require(grant(g.acquire(AcquireRequest(requestID: 1, node: "r", budget: "q", want: 300), now: at(1))))
        _ = g.tick(now: at(12))
        _ = g.takeJournal()
        _ = g.release(ReleaseRequest(node: "r", budget: "q", leaseID: lease.leaseID, consumed: 100, released: 0, final: true), now: at(13))
        let j = g.takeJournal()
        #expect(j.count == 1 && j[0].delta == LedgerCounters(granted: 0, released: 200, consumed: 100, expired: -300))
        // Another lease, lapsed in the window that has since ended: nothing comes back.
        let late = try #require(grant(g.acquire(AcquireRequest(requestID: 2, node: "r", budget: "q", want: 300), now: at(20))))
        _ = g.tick(now: at(31))
        _ = g.tick(now: at(61))
        #expect(g.release(ReleaseRequest(node: "r", budget: "q", leaseID: late.leaseID, consumed: 0, released: 0, final: true), now: at(62)) == .ignoredUnknownLease)
    }

    @Test("concurrency permits come from upstream too, and are lost with it")
    func permits() throws {
        var a = try region(concurrencyBudget(limit: 100))
        a.deposit("c", amount: 3, expiresAt: at(10), now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "c", want: 5), now: at(1))))
        #expect(g.amount == 3 && g.ttl == .seconds(9))
        #expect(a.checkInvariants() == nil)
        _ = a.tick(now: at(10))
        #expect(a.upstreamStatus("c")?.free == 0)
        #expect(a.checkInvariants() == nil)
    }

    @Test("rate budgets are refused as upstream-backed, with the reason")
    func rateRefused() throws {
        var a = try Allocator(settings: settings, budgets: [], now: at(0))
        #expect(throws: AllotError.self) { try a.addUpstreamBacked(rateBudget(), now: at(0)) }
    }

    @Test("random deposits, grants, reports, withdrawals and expiries keep every unit accounted for")
    func property() throws {
        var rng: UInt64 = 0x5EED
        func next(_ n: Int) -> Int {
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            return Int((rng >> 33) % UInt64(n))
        }
        for _ in 0..<20 {
            var a = try region(quotaBudget(allowance: 1_000_000, window: try CalendarWindow(.day)))
            var leases: [NodeID: (LeaseID, Int64, Int64)] = [:] // lease, granted, reported (consumed+released)
            var t = 0.0
            var reqs: [NodeID: UInt64] = [:]
            for _ in 0..<300 {
                t += Double(next(100)) / 100
                let node = NodeID("n\(next(4))")
                switch next(5) {
                case 0: a.deposit("q", amount: Int64(next(50)), expiresAt: at(t + Double(next(8))), now: at(t))
                case 1, 2:
                    reqs[node, default: 0] += 1
                    if case .granted(let g) = a.acquire(AcquireRequest(requestID: reqs[node]!, node: node, budget: "q",
                                                                        want: Int64(1 + next(30)), leaseID: leases[node]?.0 ?? 0), now: at(t)),
                       g.leaseID != 0 {
                        let old = leases[node].map { $0.0 == g.leaseID ? $0 : (g.leaseID, 0, 0) } ?? (g.leaseID, 0, 0)
                        leases[node] = (g.leaseID, old.1 + g.amount, old.2)
                    }
                case 3:
                    if let (id, granted, reported) = leases[node], granted > reported {
                        let c = Int64(next(Int(granted - reported) + 1))
                        _ = a.release(ReleaseRequest(node: node, budget: "q", leaseID: id, consumed: reported + c, released: 0, final: false), now: at(t))
                        leases[node] = (id, granted, reported + c)
                    }
                default: _ = a.withdraw("q", max: Int64(next(20)), now: at(t))
                }
                _ = a.tick(now: at(t))
                if let e = a.checkInvariants() {
                    Issue.record("\(e)")
                    return
                }
            }
        }
    }
}
