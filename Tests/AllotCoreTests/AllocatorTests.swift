import Testing
@testable import AllotCore

@Suite("Allocator")
struct AllocatorTests {
    var settings: AllocatorSettings {
        var s = AllocatorSettings()
        s.leaseTTL = .seconds(10)
        s.refreshInterval = .seconds(1)
        return s
    }

    @Test("a grant is sized from the node's want and taken from the pool")
    func grantSizing() throws {
        var a = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 1000, window: try CalendarWindow(.day))], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n1", budget: "q", want: 100), now: at(0))))
        #expect(g.amount == 100)
        #expect(g.leaseID != 0)
        #expect(g.ttl == .seconds(10))
        let st = try #require(a.status("q"))
        #expect(st.pool == 900 && st.outstanding == 100)
        #expect(a.checkInvariants() == nil)
    }

    @Test("min and max slice bound a grant")
    func sliceBounds() throws {
        var s = settings
        s.minSlice = 50
        s.maxSlice = 300
        var a = try Allocator(settings: s, budgets: [quotaBudget(allowance: 10_000, window: try CalendarWindow(.day))], now: at(0))
        #expect(grant(a.acquire(AcquireRequest(requestID: 1, node: "a", budget: "q", want: 5), now: at(0)))?.amount == 50)
        #expect(grant(a.acquire(AcquireRequest(requestID: 1, node: "b", budget: "q", want: 5000), now: at(0)))?.amount == 300)
    }

    @Test("water-filling is max-min fair")
    func waterFill() {
        #expect(WaterFill.shares(capacity: 600, wants: [100, 200, 900]) == [100, 200, 300])
        #expect(WaterFill.shares(capacity: 10, wants: [5, 5, 5]).reduce(0, +) == 10)
        #expect(WaterFill.shares(capacity: 1000, wants: [1, 2, 3]) == [1, 2, 3])
        #expect(WaterFill.shares(capacity: 0, wants: [1]) == [0])
        let s = WaterFill.shares(capacity: 7, wants: [100, 100, 100])
        #expect(s.reduce(0, +) == 7 && s.max()! - s.min()! <= 1)
    }

    @Test("under contention each node gets its fair share, not first come first served")
    func fairUnderContention() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 600, period: .seconds(1), burst: 600)], now: at(0))
        let gb = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "b", budget: "r", want: 300), now: at(0))))
        let gc = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "c", budget: "r", want: 300), now: at(0))))
        #expect(gb.amount == 300 && gc.amount == 300)
        _ = a.release(ReleaseRequest(node: "b", budget: "r", leaseID: gb.leaseID, consumed: 300, released: 0, final: false), now: at(0))
        _ = a.release(ReleaseRequest(node: "c", budget: "r", leaseID: gc.leaseID, consumed: 300, released: 0, final: false), now: at(0))
        // One second later 600 are free again; a asks for 900 while b and c still want 300.
        let ga = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "a", budget: "r", want: 900), now: at(1))))
        #expect(ga.amount == 200) // 600 split three ways, the rest stays for b and c
        #expect(grant(a.acquire(AcquireRequest(requestID: 2, node: "b", budget: "r", want: 300, leaseID: gb.leaseID, consumed: 300), now: at(1)))?.amount == 200)
        #expect(a.checkInvariants() == nil)
    }

    @Test("endgame: the last units are split by demand, never more than is left")
    func endgame() throws {
        var a = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 1000, window: try CalendarWindow(.day))], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "big", budget: "q", want: 990), now: at(0))))
        #expect(g.amount == 990)
        _ = a.release(ReleaseRequest(node: "big", budget: "q", leaseID: g.leaseID, consumed: 990, released: 0, final: true), now: at(1))
        var total: Int64 = 0
        for n in 0..<4 {
            let r = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: NodeID("n\(n)"), budget: "q", want: 100), now: at(2))))
            #expect(r.amount <= 10)
            total += r.amount
        }
        #expect(total <= 10)
        #expect(a.status("q")!.pool + total == 10)
        #expect(a.checkInvariants() == nil)
    }

    @Test("a re-sent acquire gets the same grant; an older one is ignored")
    func idempotent() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget()], now: at(0))
        let req = AcquireRequest(requestID: 7, node: "n", budget: "r", want: 100)
        let first = try #require(grant(a.acquire(req, now: at(0))))
        let pool = a.status("r")!.pool
        #expect(a.acquire(req, now: at(0.05)) == .resent(first))
        #expect(a.status("r")!.pool == pool)
        #expect(a.acquire(AcquireRequest(requestID: 6, node: "n", budget: "r", want: 100), now: at(0.06)) == .ignoredStale)
        #expect(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "nope", want: 1), now: at(0)) == .unknownBudget)
    }

    @Test("released units go back to the pool; consumed units do not")
    func release() throws {
        var a = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 1000, window: try CalendarWindow(.day))], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "q", want: 400), now: at(0))))
        #expect(a.release(ReleaseRequest(node: "n", budget: "q", leaseID: g.leaseID, consumed: 100, released: 50, final: false), now: at(1)) == .applied(returned: 50))
        var st = a.status("q")!
        #expect(st.pool == 650 && st.outstanding == 250 && st.consumed == 100)
        // Duplicate report changes nothing (cumulative counters).
        #expect(a.release(ReleaseRequest(node: "n", budget: "q", leaseID: g.leaseID, consumed: 100, released: 50, final: false), now: at(1)) == .applied(returned: 0))
        #expect(a.release(ReleaseRequest(node: "n", budget: "q", leaseID: g.leaseID, consumed: 150, released: 250, final: true), now: at(2)) == .applied(returned: 200))
        st = a.status("q")!
        #expect(st.pool == 850 && st.outstanding == 0 && st.consumed == 150 && st.holders == 0)
        #expect(a.release(ReleaseRequest(node: "n", budget: "q", leaseID: g.leaseID, consumed: 150, released: 250, final: true), now: at(2)) == .ignoredUnknownLease)
        #expect(a.checkInvariants() == nil)
    }

    @Test("an expired lease counts as spent and is never granted again")
    func expiry() throws {
        var a = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 1000, window: try CalendarWindow(.day))], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "q", want: 400), now: at(0))))
        #expect(a.nextDeadline == at(10))
        #expect(a.tick(now: at(9.9)).isEmpty)
        let ex = a.tick(now: at(10))
        #expect(ex == [Allocator.Expiry(budget: "q", node: "n", amount: 400)])
        let st = a.status("q")!
        #expect(st.pool == 600 && st.outstanding == 0 && st.expiredSpent == 400)
        // Reports under the expired lease are ignored.
        #expect(a.release(ReleaseRequest(node: "n", budget: "q", leaseID: g.leaseID, consumed: 0, released: 400, final: false), now: at(11)) == .ignoredUnknownLease)
        #expect(a.status("q")!.pool == 600)
    }

    @Test("a renewal extends the lease from the time of the renewal")
    func renewal() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget()], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "r", want: 100), now: at(0))))
        _ = a.acquire(AcquireRequest(requestID: 2, node: "n", budget: "r", want: 100, leaseID: g.leaseID, consumed: 100), now: at(8))
        #expect(a.tick(now: at(10)).isEmpty)
        #expect(a.tick(now: at(18)).count == 1)
    }

    @Test("token bucket: refills at the rate, held slices count as part of the bucket")
    func rateRefill() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 100, period: .seconds(1), burst: 200)], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "r", want: 1000), now: at(0))))
        #expect(g.amount == 200)
        // Holding 200 (= burst): nothing refills however long we wait.
        #expect(grant(a.acquire(AcquireRequest(requestID: 2, node: "n", budget: "r", want: 1000, leaseID: g.leaseID), now: at(5)))?.amount == 0)
        // Reports 150 consumed: from then on the bucket refills, up to burst - 50 held.
        #expect(grant(a.acquire(AcquireRequest(requestID: 3, node: "n", budget: "r", want: 1000, leaseID: g.leaseID, consumed: 150), now: at(5)))?.amount == 0)
        let g3 = try #require(grant(a.acquire(AcquireRequest(requestID: 4, node: "n", budget: "r", want: 1000, leaseID: g.leaseID, consumed: 150), now: at(5.5))))
        #expect(g3.amount == 50) // 0.5 s × 100/s since the report
        let st = a.status("r")!
        #expect(st.pool + st.outstanding <= 200)
        #expect(a.checkInvariants() == nil)
    }

    @Test("refill keeps fractions exactly: 1 token per 3 s period accrues 1 per 3 s")
    func refillFractions() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 1, period: .seconds(3), burst: 1)], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "r", want: 1), now: at(0))))
        #expect(g.amount == 1)
        var consumed: Int64 = 1
        _ = a.release(ReleaseRequest(node: "n", budget: "r", leaseID: g.leaseID, consumed: consumed, released: 0, final: false), now: at(0))
        var got: Int64 = 0
        var id: UInt64 = 2
        for step in 1...9 { // 9 s in 1 s steps, consuming at once: exactly 3 tokens
            let r = grant(a.acquire(AcquireRequest(requestID: id, node: "n", budget: "r", want: 1, leaseID: g.leaseID, consumed: consumed), now: at(Double(step))))!
            got += r.amount
            consumed += r.amount
            _ = a.release(ReleaseRequest(node: "n", budget: "r", leaseID: g.leaseID, consumed: consumed, released: 0, final: false), now: at(Double(step)))
            id += 1
        }
        #expect(got == 3)
    }

    @Test("quota windows roll over on the calendar; grants never outlive their window")
    func windowRollover() throws {
        var a = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 100, window: try CalendarWindow(.minute))], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "q", want: 100), now: at(55))))
        #expect(g.ttl == .seconds(5)) // clipped to the window end at t=60
        #expect(grant(a.acquire(AcquireRequest(requestID: 2, node: "n", budget: "q", want: 100, leaseID: g.leaseID, consumed: 100), now: at(59)))?.amount == 0)
        let g2 = try #require(grant(a.acquire(AcquireRequest(requestID: 3, node: "n", budget: "q", want: 100, leaseID: g.leaseID, consumed: 100), now: at(60))))
        #expect(g2.amount == 100)
        #expect(g2.leaseID != g.leaseID)
        #expect(a.status("q")!.consumed == 0)
    }

    @Test("concurrency: permits out never exceed the limit; released permits are reused")
    func concurrency() throws {
        var a = try Allocator(settings: settings, budgets: [concurrencyBudget(limit: 4)], now: at(0))
        let g1 = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "a", budget: "c", want: 3), now: at(0))))
        let g2 = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "b", budget: "c", want: 3), now: at(0))))
        #expect(g1.amount == 3 && g2.amount == 1)
        #expect(a.status("c")!.pool == 0)
        _ = a.release(ReleaseRequest(node: "a", budget: "c", leaseID: g1.leaseID, consumed: 0, released: 2, final: false), now: at(1))
        // a still wants 3 and holds 1: the fair split of 4 is 2 and 2, so b gets 1 more.
        #expect(grant(a.acquire(AcquireRequest(requestID: 2, node: "b", budget: "c", want: 3, leaseID: g2.leaseID), now: at(1)))?.amount == 1)
        #expect(a.checkInvariants() == nil)
        // Expired permits come back (the node aborted its requests when its copy ended).
        _ = a.tick(now: at(20))
        #expect(a.status("c")!.pool == 4)
    }

    @Test("learning mode: a new owner adopts reported holdings and grants nothing new for one TTL")
    func learning() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 100, burst: 100)], now: at(0))
        let gained = a.ownershipGained("r", epoch: 2, committed: 0, now: at(100))
        #expect(gained)
        #expect(a.status("r")!.learning)
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 5, node: "n", budget: "r", want: 50, leaseID: 99, epoch: 1, holding: 30), now: at(101))))
        #expect(g.adopted && g.amount == 0 && g.epoch == 2)
        #expect(a.status("r")!.outstanding == 30)
        let other = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "m", budget: "r", want: 50), now: at(105))))
        #expect(other.amount == 0 && other.leaseID == 0)
        #expect(a.nextDeadline <= at(110))
        // After one TTL the bucket starts refilling from empty.
        let after = try #require(grant(a.acquire(AcquireRequest(requestID: 2, node: "m", budget: "r", want: 50), now: at(110.5))))
        #expect(after.amount == 50)
        #expect(!a.status("r")!.learning)
        #expect(a.checkInvariants() == nil)
    }

    @Test("learning mode for a quota resumes from what the ledger says is committed")
    func learningQuota() throws {
        var a = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 1000, window: try CalendarWindow(.day))], now: at(0))
        _ = a.ownershipGained("q", epoch: 3, committed: 700, now: at(10))
        #expect(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "q", want: 500), now: at(11)))?.amount == 0)
        _ = a.tick(now: at(20))
        #expect(grant(a.acquire(AcquireRequest(requestID: 2, node: "n", budget: "q", want: 500), now: at(21)))?.amount == 300)
    }

    @Test("settings are validated with errors naming the field")
    func badSettings() {
        var s = AllocatorSettings()
        s.refreshInterval = .seconds(20)
        #expect(throws: AllotError.self) { try Allocator(settings: s, budgets: [], now: at(0)) }
        do { _ = try Allocator(settings: s, budgets: [], now: at(0)) } catch {
            #expect(error.code == .invalidSettings && error.message.contains("refresh_interval"))
        }
        #expect(throws: AllotError.self) { try Allocator(budgets: [rateBudget(), rateBudget()], now: at(0)) }
    }
}
