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
        var a = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 600, window: try CalendarWindow(.day))], now: at(0))
        let gb = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "b", budget: "q", want: 300), now: at(0))))
        let gc = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "c", budget: "q", want: 300), now: at(0))))
        // b got its 300 first, but it has spent them (it reports nothing left) and still
        // wants 300 per interval: c gets half of what is free, not all of it.
        #expect(gb.amount == 300 && gc.amount == 150)
        // b gives back everything it holds but still wants 300; a arrives wanting 900.
        _ = a.release(ReleaseRequest(node: "b", budget: "q", leaseID: gb.leaseID, consumed: 0, released: 300, final: false), now: at(1))
        let ga = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "a", budget: "q", want: 900), now: at(1))))
        #expect(ga.amount == 150) // the 450 free are split three ways, not taken by whoever asks first
        // b comes back: 300 are free, a (which reports having spent its 150) and c still want
        // theirs, so b gets a third.
        #expect(grant(a.acquire(AcquireRequest(requestID: 2, node: "b", budget: "q", want: 300, leaseID: gb.leaseID, released: 300), now: at(1)))?.amount == 100)
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

    @Test("a node restarted under the same name (a new incarnation) is served at once; its previous life's lease runs out as it is")
    func nodeRestart() throws {
        var a = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 1000, window: try CalendarWindow(.day)),
                                                            rateBudget(limit: 100, period: .seconds(1), burst: 100)], now: at(0))
        let first = a.hello(node: "n", incarnation: 11)
        #expect(!first) // first life: nothing to forget
        let old = try #require(grant(a.acquire(AcquireRequest(requestID: 5, node: "n", budget: "q", want: 400), now: at(0))))
        let oldRate = try #require(grant(a.acquire(AcquireRequest(requestID: 6, node: "n", budget: "r", want: 60, demandRate: 100), now: at(0))))
        #expect(old.amount == 400 && oldRate.capacity > 0)
        // Without a new incarnation, ids from 1 are stale.
        let same = a.hello(node: "n", incarnation: 11), none = a.hello(node: "n", incarnation: 0)
        #expect(!same && !none)
        let stale = a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "q", want: 400), now: at(1))
        #expect(stale == .ignoredStale)
        // A new life: ids start again at 1 and are answered.
        let restarted = a.hello(node: "n", incarnation: 12)
        #expect(restarted)
        #expect(a.incarnation(of: "n") == 12)
        let new = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "q", want: 400), now: at(2))))
        #expect(new.amount == 400 && new.leaseID != old.leaseID)
        // The old life's 400 stay counted (it may have spent them) until its lease runs out.
        var st = a.status("q")!
        #expect(st.pool == 200 && st.outstanding == 800 && st.holders == 2)
        // A rate lease: the old life's capacity stays committed; the new life gets the rest.
        let newRate = try #require(grant(a.acquire(AcquireRequest(requestID: 2, node: "n", budget: "r", want: 60, demandRate: 100), now: at(2))))
        #expect(newRate.capacity + oldRate.capacity <= 100)
        #expect(a.checkInvariants() == nil)
        // The old lease ends at 10 s: its units count as spent, its entry goes.
        let ex = a.tick(now: at(10))
        #expect(ex.contains { $0.budget == "q" && $0.amount == 400 && $0.node.rawValue.hasPrefix("n~retired") })
        st = a.status("q")!
        #expect(st.expiredSpent == 400 && st.outstanding == 400 && st.holders == 1)
        // The new life goes on as any node: its renewal is not stale.
        let renewal = a.acquire(AcquireRequest(requestID: 3, node: "n", budget: "q", want: 100, leaseID: new.leaseID, consumed: 50), now: at(11))
        #expect(grant(renewal) != nil)
        #expect(a.checkInvariants() == nil)
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

    @Test("rate leases: a lone node holds everything as slack; a newcomer gets its share by recall, never before the holder applied it")
    func rateLeaseRecall() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 100, period: .seconds(1), burst: 200)], now: at(0))
        let g1 = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n1", budget: "r", want: 100, demandRate: 50), now: at(0))))
        // Its share (50/s + 1/16 headroom + 1 = 54, capacity 100) plus all the slack.
        #expect(g1.rate == 100 && g1.capacity == 200 && g1.amount == 200)
        #expect(a.takePushes().isEmpty)
        // n2 arrives: nothing is free, so it gets nothing yet and is told to come back soon...
        let g2 = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n2", budget: "r", want: 150, demandRate: 80), now: at(0.1))))
        #expect(g2.rate == 0 && g2.capacity == 0 && g2.leaseID == 0)
        #expect(g2.retryAfter == .milliseconds(100))
        // ...while n1 is recalled to its fair share (50/s, capacity 100).
        let pushes = a.takePushes()
        #expect(pushes.count == 1)
        let recall = try #require(pushes.first)
        #expect(recall.node == "n1" && recall.grant.requestID == 0 && recall.grant.rate == 50 && recall.grant.capacity == 100)
        #expect(recall.grant.sequence > g1.sequence)
        // Until n1 shows it applied the recall, its old terms stay committed.
        #expect(a.status("r")!.committedRate == 100 && a.status("r")!.outstanding == 200)
        #expect(grant(a.acquire(AcquireRequest(requestID: 2, node: "n2", budget: "r", want: 150, demandRate: 80), now: at(0.2)))?.rate == 0)
        // n1 acknowledges: enforcing 50/s and capacity 100, 50 tokens above it given back.
        _ = a.acquire(AcquireRequest(requestID: 2, node: "n1", budget: "r", want: 100, demandRate: 50, leaseID: g1.leaseID,
                                     released: 50, available: 100, rateInUse: 50, capacityInUse: 100,
                                     appliedSequence: recall.grant.sequence), now: at(0.3))
        #expect(a.status("r")!.committedRate == 50 && a.status("r")!.pool == 50)
        let g2b = try #require(grant(a.acquire(AcquireRequest(requestID: 3, node: "n2", budget: "r", want: 150, demandRate: 80), now: at(0.4))))
        #expect(g2b.rate == 50 && g2b.capacity == 100)
        #expect(g2b.amount == 55) // the 50 given back, plus 0.1 s × the 50/s nobody held
        let st = a.status("r")!
        #expect(st.committedRate == 100 && st.pool + st.outstanding <= 200)
        #expect(a.checkInvariants() == nil)
    }

    @Test("rate leases: rate a node gives back is offered at once to a node short of its share")
    func rateLeaseOffer() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 100, period: .seconds(1), burst: 200)], now: at(0))
        let g1 = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n1", budget: "r", want: 100, demandRate: 80), now: at(0))))
        _ = a.acquire(AcquireRequest(requestID: 1, node: "n2", budget: "r", want: 100, demandRate: 80), now: at(0))
        for p in a.takePushes() where p.node == "n1" {
            _ = a.acquire(AcquireRequest(requestID: 2, node: "n1", budget: "r", want: 100, demandRate: 80, leaseID: g1.leaseID,
                                         released: 100, available: 100, rateInUse: p.grant.rate, capacityInUse: p.grant.capacity,
                                         appliedSequence: p.grant.sequence), now: at(0.1))
        }
        let g2 = try #require(grant(a.acquire(AcquireRequest(requestID: 2, node: "n2", budget: "r", want: 100, demandRate: 80), now: at(0.2))))
        #expect(g2.rate == 50)
        _ = a.takePushes()
        // n1's demand collapses; it lowers itself to 5/s before telling the coordinator.
        _ = a.acquire(AcquireRequest(requestID: 3, node: "n1", budget: "r", want: 4, demandRate: 2, leaseID: g1.leaseID,
                                     released: 100, available: 100, rateInUse: 5, capacityInUse: 100,
                                     appliedSequence: 100), now: at(1))
        let offers = a.takePushes().filter { $0.node == "n2" }
        #expect(offers.count == 1)
        #expect(offers.first?.grant.rate == 86) // n2's demand: 80/s + headroom
        #expect(a.status("r")!.committedRate <= 100)
        #expect(a.checkInvariants() == nil)
    }

    @Test("the pool refills at the rate no node holds, exactly, fractions carried")
    func refillFractions() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 1, period: .seconds(3), burst: 10)], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "r", want: 10), now: at(0))))
        #expect(g.amount == 10 && g.capacity == 10 && g.rate == 1) // all of it, as slack
        // Capacity on a node is part of the bucket: nothing refills while it is held.
        _ = a.tick(now: at(5))
        #expect(a.status("r")!.pool == 0)
        _ = a.release(ReleaseRequest(node: "n", budget: "r", leaseID: g.leaseID, consumed: 10, released: 0, final: true), now: at(6))
        _ = a.tick(now: at(8.9))
        #expect(a.status("r")!.pool == 0)
        _ = a.tick(now: at(9))
        #expect(a.status("r")!.pool == 1)
        _ = a.tick(now: at(17.5))
        #expect(a.status("r")!.pool == 3) // 11.5 s at 1 per 3 s
        _ = a.tick(now: at(18))
        #expect(a.status("r")!.pool == 4)
        _ = a.tick(now: at(1000))
        #expect(a.status("r")!.pool == 10)
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

    @Test("a daily quota in New York rolls over at local midnight, 23 hours after the last on a DST day")
    func dstRollover() throws {
        let w = try CalendarWindow(.day, timeZone: "America/New_York")
        // 2026-03-08: clocks jump from 02:00 to 03:00. Local midnight is 05:00 UTC that day
        // and 04:00 UTC the next.
        let midnight = Instant(nanoseconds: 1_772_946_000 * 1_000_000_000) // 2026-03-08T05:00Z
        var a = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 100, window: w)], now: midnight)
        let lateThatDay = midnight + .seconds(23 * 3600 - 5) // 23:59:55 local (UTC-04 by then)
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "q", want: 100), now: lateThatDay)))
        #expect(g.ttl == .seconds(5)) // clipped to the 23-hour day's end
        #expect(grant(a.acquire(AcquireRequest(requestID: 2, node: "n", budget: "q", want: 100, leaseID: g.leaseID, consumed: 100), now: lateThatDay + .seconds(3)))?.amount == 0)
        let next = try #require(grant(a.acquire(AcquireRequest(requestID: 3, node: "n", budget: "q", want: 100, leaseID: g.leaseID, consumed: 100), now: midnight + .seconds(23 * 3600))))
        #expect(next.amount == 100)
    }

    @Test("concurrency: permits out never exceed the limit; released permits are reused")
    func concurrency() throws {
        var a = try Allocator(settings: settings, budgets: [concurrencyBudget(limit: 4)], now: at(0))
        let g1 = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "a", budget: "c", want: 3), now: at(0))))
        _ = a.acquire(AcquireRequest(requestID: 2, node: "a", budget: "c", want: 3, leaseID: g1.leaseID, available: 3), now: at(0))
        let g2 = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "b", budget: "c", want: 3), now: at(0))))
        #expect(g1.amount == 3 && g2.amount == 1)
        #expect(a.status("c")!.pool == 0)
        _ = a.release(ReleaseRequest(node: "a", budget: "c", leaseID: g1.leaseID, consumed: 0, released: 2, final: false), now: at(1))
        // a still wants 3 and holds 1: the fair split of 4 is 2 and 2, so b gets 1 more.
        #expect(grant(a.acquire(AcquireRequest(requestID: 2, node: "b", budget: "c", want: 3, leaseID: g2.leaseID, available: 1), now: at(1)))?.amount == 1)
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
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 5, node: "n", budget: "r", want: 50, leaseID: 99, epoch: 1, holding: 30, rateInUse: 40, capacityInUse: 30), now: at(101))))
        #expect(g.adopted && g.amount == 0 && g.epoch == 2)
        #expect(a.status("r")!.outstanding == 30 && a.status("r")!.committedRate == 40)
        let other = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "m", budget: "r", want: 50), now: at(105))))
        #expect(other.amount == 0 && other.leaseID == 0)
        #expect(a.nextDeadline <= at(110))
        // After one TTL the pool starts refilling from empty, at the rate nobody holds.
        let after = try #require(grant(a.acquire(AcquireRequest(requestID: 2, node: "m", budget: "r", want: 50), now: at(110.5))))
        #expect(after.amount == 30) // 0.5 s × (100 − 40)/s
        #expect(after.capacity == 50)
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
