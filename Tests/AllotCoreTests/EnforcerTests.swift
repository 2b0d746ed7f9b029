import Testing
@testable import AllotCore

@Suite("Enforcer")
struct EnforcerTests {
    /// An enforcer for node "n" with the given budgets, and their handles.
    func make(_ specs: [BudgetSpec]) throws -> (Enforcer, [BudgetHandle]) {
        var e = try Enforcer(settings: EnforcerSettings(node: "n"))
        let hs = specs.map { e.register($0) }
        return (e, hs)
    }

    /// Polls, answers every acquire from `alloc`, delivers the grants.
    func exchange(_ e: inout Enforcer, _ alloc: inout Allocator, now: Instant) -> [Enforcer.Outgoing] {
        let out = e.poll(now: now)
        for m in out {
            switch m {
            case .acquire(let req):
                if case .granted(let g) = alloc.acquire(req, now: now) { _ = e.receive(g, now: now) }
            case .release(let rel):
                _ = alloc.release(rel, now: now)
            }
        }
        return out
    }

    @Test("without a lease a closed budget denies, and asks for a slice")
    func closedWithoutLease() throws {
        var (e, hs) = try make([rateBudget()])
        #expect(!e.admit(.tokens(10), on: BudgetSet(hs[0]), now: at(0)).isAdmitted)
        #expect(e.wantsPoll)
        let out = e.poll(now: at(0))
        guard case .acquire(let req) = try #require(out.first) else { Issue.record("no acquire"); return }
        #expect(req.want >= 10 && req.budget == "r" && req.node == "n")
    }

    @Test("with a slice, admits spend locally until it runs out")
    func spendsSlice() throws {
        var (e, hs) = try make([rateBudget(limit: 1000, burst: 1000)])
        var alloc = try Allocator(budgets: [rateBudget(limit: 1000, burst: 1000)], now: at(0))
        _ = e.admit(.tokens(100), on: BudgetSet(hs[0]), now: at(0))
        _ = exchange(&e, &alloc, now: at(0))
        let held = e.status(hs[0]).available
        #expect(held >= 100)
        var admitted: Int64 = 0
        while e.admit(.tokens(10), on: BudgetSet(hs[0]), now: at(0.01)).isAdmitted { admitted += 10 }
        #expect(admitted == held - held % 10)
        #expect(e.status(hs[0]).consumed == admitted)
    }

    @Test("all or nothing: a denial by one budget takes nothing from the others")
    func allOrNothing() throws {
        let specs = [rateBudget("a"), quotaBudget("b", allowance: 50, window: try CalendarWindow(.day))]
        var (e, hs) = try make(specs)
        var alloc = try Allocator(budgets: specs, now: at(0))
        let set = try BudgetSet(hs)
        _ = e.admit(.tokens(40), on: set, now: at(0))
        _ = exchange(&e, &alloc, now: at(0))
        #expect(e.admit(.tokens(40), on: set, now: at(0.1)).isAdmitted)
        let before = e.status(hs[0]).available
        guard case .denied(let by) = e.admit(.tokens(40), on: set, now: at(0.1)) else {
            Issue.record("expected a denial"); return
        }
        #expect(by == hs[1])
        #expect(e.status(hs[0]).available == before)
        #expect(throws: AllotError.self) { try BudgetSet(Array(repeating: hs[0], count: 9)) }
    }

    @Test("reserve then settle refunds the difference to the slice")
    func reserveSettle() throws {
        var (e, hs) = try make([rateBudget()])
        var alloc = try Allocator(budgets: [rateBudget()], now: at(0))
        _ = e.admit(.tokens(500), on: BudgetSet(hs[0]), now: at(0))
        _ = exchange(&e, &alloc, now: at(0))
        let start = e.status(hs[0]).available
        guard case .admitted(let r) = e.reserve(.tokens(300), on: BudgetSet(hs[0]), now: at(0.1)) else {
            Issue.record("not admitted"); return
        }
        #expect(e.status(hs[0]).available == start - 300 && e.status(hs[0]).reserved == 300)
        e.settle(r, actual: .tokens(120), now: at(0.5))
        let s = e.status(hs[0])
        #expect(s.available == start - 120 && s.reserved == 0 && s.consumed == 120)
    }

    @Test("concurrency permits are taken and given back")
    func permits() throws {
        var (e, hs) = try make([concurrencyBudget(limit: 2)])
        var alloc = try Allocator(budgets: [concurrencyBudget(limit: 2)], now: at(0))
        _ = e.reserve(.oneRequest, on: BudgetSet(hs[0]), now: at(0))
        _ = e.reserve(.oneRequest, on: BudgetSet(hs[0]), now: at(0.01))
        _ = exchange(&e, &alloc, now: at(0.02))
        guard case .admitted(let r1) = e.reserve(.oneRequest, on: BudgetSet(hs[0]), now: at(0.03)) else { Issue.record("r1"); return }
        guard case .admitted = e.reserve(.oneRequest, on: BudgetSet(hs[0]), now: at(0.03)) else { Issue.record("r2"); return }
        #expect(!e.reserve(.oneRequest, on: BudgetSet(hs[0]), now: at(0.03)).isAdmitted)
        e.settle(r1, actual: .oneRequest, now: at(0.5))
        #expect(e.reserve(.oneRequest, on: BudgetSet(hs[0]), now: at(0.6)).isAdmitted)
    }

    @Test("open fail mode admits without a lease and repays the debt from the next grant")
    func openMode() throws {
        let spec = rateBudget(failMode: .open)
        var (e, hs) = try make([spec])
        var alloc = try Allocator(budgets: [spec], now: at(0))
        #expect(e.admit(.tokens(30), on: BudgetSet(hs[0]), now: at(0)).isAdmitted)
        #expect(e.status(hs[0]).debt == 30)
        _ = exchange(&e, &alloc, now: at(0))
        let s = e.status(hs[0])
        #expect(s.debt == 0 && s.consumed == 30)
    }

    @Test("static fail mode admits a fixed allowance per lease TTL")
    func staticMode() throws {
        var (e, hs) = try make([rateBudget(failMode: .static(allowancePerTTL: 25))])
        #expect(e.admit(.tokens(20), on: BudgetSet(hs[0]), now: at(1)).isAdmitted)
        #expect(!e.admit(.tokens(10), on: BudgetSet(hs[0]), now: at(2)).isAdmitted)
        #expect(e.admit(.tokens(5), on: BudgetSet(hs[0]), now: at(3)).isAdmitted)
        #expect(e.admit(.tokens(20), on: BudgetSet(hs[0]), now: at(11)).isAdmitted) // next TTL period
    }

    @Test("low watermark: asks for more before the slice runs dry")
    func prefetch() throws {
        var (e, hs) = try make([rateBudget(limit: 100_000, burst: 100_000)])
        var alloc = try Allocator(budgets: [rateBudget(limit: 100_000, burst: 100_000)], now: at(0))
        var t = 0.0
        var denials = 0
        var acquires = 0
        for _ in 0..<20_000 { // 10,000 per second for 2 s
            if !e.admit(.tokens(1), on: BudgetSet(hs[0]), now: at(t)).isAdmitted && t > 0.5 { denials += 1 }
            if e.wantsPoll || Int(t * 10_000) % 100 == 0 {
                acquires += exchange(&e, &alloc, now: at(t)).count
            }
            t += 0.0001
        }
        #expect(denials == 0) // once demand is measured, never dry
        #expect(acquires < 20)
    }

    @Test("the node's lease ends TTL after it sent the request, before the coordinator's")
    func leaseExpiry() throws {
        var (e, hs) = try make([concurrencyBudget(limit: 2)])
        var alloc = try Allocator(budgets: [concurrencyBudget(limit: 2)], now: at(0))
        _ = e.reserve(.oneRequest, on: BudgetSet(hs[0]), now: at(0))
        guard case .acquire(let req) = e.poll(now: at(0)).first else { Issue.record("no acquire"); return }
        // The answer takes 0.5 s to come back.
        guard case .granted(let g) = alloc.acquire(req, now: at(0.2)) else { Issue.record("no grant"); return }
        #expect(e.receive(g, now: at(0.5)) == .applied)
        #expect(e.status(hs[0]).expiresAt == at(0) + g.ttl)
        guard case .admitted = e.reserve(.oneRequest, on: BudgetSet(hs[0]), now: at(1)) else { Issue.record("not admitted"); return }
        #expect(!e.reserve(.oneRequest, on: BudgetSet(hs[0]), now: at(10)).isAdmitted)
        #expect(e.tick(now: at(10)) == [.leaseExpired(hs[0], permitsInUse: 1)])
        #expect(alloc.tick(now: at(10.1)).isEmpty) // the coordinator's copy lasts until 10.2
        #expect(alloc.tick(now: at(10.2)).count == 1)
    }

    @Test("grants from a stale epoch or for another request are ignored")
    func staleGrants() throws {
        var (e, hs) = try make([rateBudget()])
        _ = e.admit(.tokens(1), on: BudgetSet(hs[0]), now: at(0))
        guard case .acquire(let req) = e.poll(now: at(0)).first else { Issue.record("no acquire"); return }
        let g = Grant(requestID: req.requestID, budget: "r", leaseID: 1, epoch: 5, amount: 10, ttl: .seconds(10), rate: 0, capacity: 10)
        #expect(e.receive(g, now: at(0)) == .applied)
        #expect(e.receive(g, now: at(0)) == .ignoredUnknownRequest)
        _ = e.admit(.tokens(10), on: BudgetSet(hs[0]), now: at(0))
        guard case .acquire(let req2) = e.poll(now: at(0.3)).first else { Issue.record("no acquire"); return }
        let old = Grant(requestID: req2.requestID, budget: "r", leaseID: 1, epoch: 4, amount: 10, ttl: .seconds(10), rate: 0, capacity: 10)
        #expect(e.receive(old, now: at(0.3)) == .ignoredStaleEpoch)
        #expect(e.receive(Grant(requestID: 1, budget: "zzz", leaseID: 1, epoch: 9, amount: 1, ttl: .seconds(1)), now: at(0)) == .unknownBudget)
    }

    @Test("an unanswered acquire is re-sent with the same request id")
    func retry() throws {
        var (e, hs) = try make([rateBudget()])
        _ = e.admit(.tokens(1), on: BudgetSet(hs[0]), now: at(0))
        guard case .acquire(let first) = e.poll(now: at(0)).first else { Issue.record("no acquire"); return }
        #expect(e.poll(now: at(0.1)).isEmpty)
        guard case .acquire(let again) = e.poll(now: at(0.2)).first else { Issue.record("no retry"); return }
        #expect(again == first)
    }

    @Test("idle budgets and shutdown give everything back")
    func releases() throws {
        let spec = quotaBudget(allowance: 10_000, window: try CalendarWindow(.day))
        var (e, hs) = try make([spec])
        var alloc = try Allocator(budgets: [spec], now: at(0))
        _ = e.admit(.tokens(100), on: BudgetSet(hs[0]), now: at(0))
        _ = exchange(&e, &alloc, now: at(0))
        #expect(e.admit(.tokens(100), on: BudgetSet(hs[0]), now: at(0.01)).isAdmitted)
        #expect(alloc.status("q")!.outstanding > 0)
        _ = exchange(&e, &alloc, now: at(1.5)) // demand still in the last second: keep
        #expect(alloc.status("q")!.outstanding > 0)
        let out = exchange(&e, &alloc, now: at(5))
        guard case .release(let rel) = try #require(out.first) else { Issue.record("no release"); return }
        #expect(rel.final)
        #expect(alloc.status("q")!.outstanding == 0)
        #expect(alloc.status("q")!.pool == 10_000 - 100)

        _ = e.admit(.tokens(100), on: BudgetSet(hs[0]), now: at(6))
        _ = exchange(&e, &alloc, now: at(6))
        #expect(e.admit(.tokens(100), on: BudgetSet(hs[0]), now: at(6.01)).isAdmitted)
        let shut = e.shutdown(now: at(6.5))
        #expect(shut.count == 1)
        for case .release(let r) in shut { _ = alloc.release(r, now: at(6.5)) }
        #expect(alloc.status("q")!.outstanding == 0)
        #expect(alloc.status("q")!.pool == 10_000 - 200)
    }
}

@Suite("Enforcer: rate leases")
struct EnforcerRateLeaseTests {
    func leased(rate: Int64, capacity: Int64, amount: Int64) throws -> (Enforcer, BudgetHandle, Grant) {
        var e = try Enforcer(settings: EnforcerSettings(node: "n"))
        let h = e.register(rateBudget(limit: 1000, period: .seconds(1), burst: 1000))
        _ = e.admit(.tokens(1), on: BudgetSet(h), now: at(0))
        guard case .acquire(let req) = e.poll(now: at(0)).first else { throw AllotError(.invalidSettings, "no acquire") }
        let g = Grant(requestID: req.requestID, budget: "r", leaseID: 7, epoch: 1, amount: amount, ttl: .seconds(10),
                      rate: rate, capacity: capacity, sequence: 1)
        #expect(e.receive(g, now: at(0)) == .applied)
        return (e, h, g)
    }

    @Test("a new owner's adoption of a lease that ended here while the request was unanswered revives nothing")
    func staleAdoption() throws {
        var (e, h, _) = try leased(rate: 100, capacity: 50, amount: 50)
        // Near the end of the lease a renewal leaves, and nobody answers (a partition)...
        var renewal: AcquireRequest?
        for t in stride(from: 5.0, to: 9.5, by: 0.05) where renewal == nil {
            _ = e.admit(.tokens(1), on: BudgetSet(h), now: at(t))
            for case .acquire(let r) in e.poll(now: at(t)) where renewal == nil { renewal = r }
        }
        let sent = try #require(renewal)
        #expect(sent.leaseID == 7 && sent.rateInUse == 100)
        // ...the lease ends here; the same request goes out again later, to a new owner.
        _ = e.tick(now: at(10.5))
        #expect(e.status(h).rate == 0)
        // The new owner (learning) adopts what the request reported: rate 100, capacity 50.
        let adopted = Grant(requestID: sent.requestID, budget: "r", leaseID: 1, epoch: 9, amount: 0, ttl: .seconds(10),
                            adopted: true, rate: 100, capacity: 50, sequence: 1)
        #expect(e.receive(adopted, now: at(11)) == .applied)
        // Nothing comes back to life: no rate, no tokens, and the next message says so.
        #expect(e.status(h).rate == 0 && e.status(h).capacity == 0 && e.status(h).available == 0)
        #expect(!e.admit(.tokens(1), on: BudgetSet(h), now: at(11.5)).isAdmitted)
        let next = e.poll(now: at(11.6)).compactMap { if case .acquire(let r) = $0 { return r } else { return nil } }
        #expect(next.first?.rateInUse == 0 && next.first?.leaseID == 1)
    }

    @Test("the local bucket refills at the leased rate up to its capacity, exactly")
    func localRefill() throws {
        var (e, h, _) = try leased(rate: 100, capacity: 50, amount: 0)
        #expect(!e.admit(.tokens(1), on: BudgetSet(h), now: at(0.005)).isAdmitted)
        #expect(e.admit(.tokens(1), on: BudgetSet(h), now: at(0.01)).isAdmitted) // 1 token per 10 ms
        var admitted = 0
        for k in 1...900 { // 9 s, asking 5 times per refill: only the rate gets through
            for j in 0..<5 {
                let t = Instant(nanoseconds: 10_000_000 + Int64(k) * 10_000_000 + Int64(j))
                if e.admit(.tokens(1), on: BudgetSet(h), now: t).isAdmitted { admitted += 1 }
            }
        }
        #expect(admitted == 900)
        // After an idle spell, never more than the capacity at once.
        var burst = 0
        while e.admit(.tokens(1), on: BudgetSet(h), now: at(9.9)).isAdmitted { burst += 1 }
        #expect(burst == 50)
    }

    /// 9 s of requests every 10 ms reserving 20 each, held 3 s, really costing `actual`, on a
    /// bucket of 100 refilling 100/s. Returns the admissions (time, real cost).
    func longReservations(actual: Int64) throws -> [(Double, Int64)] {
        var (e, h, _) = try leased(rate: 100, capacity: 100, amount: 100)
        var running: [(end: Double, r: Reservation)] = []
        var admitted: [(Double, Int64)] = []
        for k in 1...900 {
            let t = Double(k) / 100
            for (i, x) in running.enumerated().reversed() where x.end <= t {
                e.settle(x.r, actual: .tokens(actual), now: at(t))
                running.remove(at: i)
            }
            _ = e.poll(now: at(t)) // picks the book; its acquires go nowhere (the lease lasts 10 s)
            if case .admitted(let r) = e.reserve(.tokens(20), on: BudgetSet(h), now: at(t)) {
                running.append((t + 3, r))
                admitted.append((t, actual))
            }
            #expect(e.checkInvariants() == nil)
        }
        return admitted
    }

    @Test("reservations held longer than the bucket takes to refill: the no-refund book admits at the rate, and real counts stay within the bucket even when every request uses its whole bound")
    func longReservationsExact() throws {
        // Every request costs its whole bound: no window may hold more than 100 + 100·T.
        let worst = try longReservations(actual: 20)
        for (i, a) in worst.enumerated() {
            var sum: Int64 = 0
            for b in worst[i...] {
                sum += b.1
                #expect(Double(sum) <= 100 + 100 * (b.0 - a.0) + 1e-9, "\(sum) admitted in [\(a.0), \(b.0)]")
            }
        }
        // Requests using a quarter of their bound: counting reservations inside the bucket alone
        // would admit at most 100 per 3 s hold (~20 requests in 9 s); at the rate, ~50.
        let light = try longReservations(actual: 5)
        #expect(light.count >= 45, "\(light.count) admitted")
        #expect(worst.count >= 45, "\(worst.count) admitted")
    }

    @Test("a refund never lifts the bucket above its capacity")
    func refundCapped() throws {
        var (e, h, _) = try leased(rate: 0, capacity: 100, amount: 100)
        guard case .admitted(let r) = e.reserve(.tokens(80), on: BudgetSet(h), now: at(0.1)) else { Issue.record("no"); return }
        e.settle(r, actual: .tokens(10), now: at(0.2))
        #expect(e.status(h).available == 90)
    }

    @Test("a recall lowers the terms at once, gives back tokens above the capacity, and is acknowledged")
    func recall() throws {
        var (e, h, g) = try leased(rate: 100, capacity: 100, amount: 100)
        let push = Grant(requestID: 0, budget: "r", leaseID: g.leaseID, epoch: 1, amount: 0, ttl: .seconds(9),
                         rate: 40, capacity: 30, sequence: 2)
        #expect(e.receive(push, now: at(1)) == .applied)
        let st = e.status(h)
        #expect(st.rate == 40 && st.capacity == 30 && st.available == 30 && st.released == 70)
        #expect(e.wantsPoll)
        guard case .acquire(let ack) = e.poll(now: at(1)).first else { Issue.record("no ack"); return }
        #expect(ack.rateInUse <= 40 && ack.capacityInUse == 30 && ack.appliedSequence == 2 && ack.released == 70)
    }

    @Test("an offer raises the rate without an acknowledgement; stale or foreign pushes are ignored")
    func offers() throws {
        var (e, h, g) = try leased(rate: 10, capacity: 100, amount: 0)
        let offer = Grant(requestID: 0, budget: "r", leaseID: g.leaseID, epoch: 1, amount: 0, ttl: .seconds(9),
                          rate: 60, capacity: 100, sequence: 3)
        #expect(e.receive(offer, now: at(1)) == .applied)
        #expect(e.status(h).rate == 60)
        #expect(e.poll(now: at(1)).isEmpty)
        // An older push arriving late must not undo it.
        let late = Grant(requestID: 0, budget: "r", leaseID: g.leaseID, epoch: 1, amount: 0, ttl: .seconds(9),
                         rate: 10, capacity: 100, sequence: 2)
        #expect(e.receive(late, now: at(1.1)) == .ignoredUnknownRequest)
        #expect(e.status(h).rate == 60)
        let otherLease = Grant(requestID: 0, budget: "r", leaseID: 99, epoch: 1, amount: 0, ttl: .seconds(9),
                               rate: 500, capacity: 100, sequence: 9)
        #expect(e.receive(otherLease, now: at(1.2)) == .ignoredUnknownRequest)
        let oldEpoch = Grant(requestID: 0, budget: "r", leaseID: g.leaseID, epoch: 0, amount: 0, ttl: .seconds(9),
                             rate: 500, capacity: 100, sequence: 10)
        #expect(e.receive(oldEpoch, now: at(1.3)) == .ignoredStaleEpoch)
        #expect(e.status(h).rate == 60)
    }
}
