@testable import AllotCore
import Testing

/// A budget's limit changed at run time (`Allocator.respec`), in virtual time: raised at once,
/// lowered once every node applied it or its lease ended, never both limits added up.
@Suite("Limits changed at run time")
struct RespecTests {
    var settings: AllocatorSettings {
        var s = AllocatorSettings()
        s.leaseTTL = .seconds(10)
        s.refreshInterval = .seconds(1)
        return s
    }

    /// Three nodes each holding a rate lease of `r`: they ask in rounds, each showing it
    /// applied the last terms it got (grants and pushes), until all hold a share.
    func threeHolders(_ a: inout Allocator, limit: Int64, now: Instant) throws -> [NodeID: Grant] {
        var last: [NodeID: Grant] = [:]
        for round in 0..<6 {
            for n in [NodeID("n1"), NodeID("n2"), NodeID("n3")] {
                let g = last[n]
                let req = AcquireRequest(requestID: UInt64(round + 1), node: n, budget: "r", want: limit, demandRate: limit,
                                         leaseID: g?.leaseID ?? 0, available: 0, rateInUse: g?.rate ?? 0, capacityInUse: g?.capacity ?? 0,
                                         appliedSequence: g?.sequence ?? 0)
                if let granted = grant(a.acquire(req, now: now + .milliseconds(10 * round))) { last[n] = granted }
                for p in a.takePushes() { last[p.node] = p.grant }
            }
        }
        #expect(last.values.allSatisfy { $0.leaseID != 0 }, "three holders")
        return last
    }

    @Test("a rate limit lowered 10×: proportional recalls pushed; old terms counted, pool empty, until each node acknowledges")
    func rateLowered() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 6_000, period: .seconds(60), burst: 6_000)], now: at(0))
        let leases = try threeHolders(&a, limit: 6_000, now: at(0))
        let before = try #require(a.status("r"))
        #expect(before.committedRate <= 6_000 && before.committedRate > 3_000)
        #expect(a.respec(rateBudget(limit: 600, period: .seconds(60), burst: 600), now: at(1)) == .applied)
        #expect(a.isDraining("r"))
        let pushes = a.takePushes()
        #expect(Set(pushes.map(\.node)) == Set(leases.keys), "every holder is recalled")
        #expect(pushes.reduce(0) { $0 + $1.grant.rate } <= 600 && pushes.reduce(0) { $0 + $1.grant.capacity } <= 600)
        // Until they apply it, the old terms are what the books count, and nothing is free.
        let mid = try #require(a.status("r"))
        #expect(mid.committedRate == before.committedRate && mid.pool == 0)
        #expect(a.checkInvariants() == nil)
        // The check can fail: books above every limit in force since the lowering.
        var broken = a
        broken.mutate("r") { $0.drainCeiling = 1 }
        #expect(broken.checkInvariants() != nil)
        // A node asking meanwhile gets nothing beyond the new limit.
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n4", budget: "r", want: 600, demandRate: 600), now: at(1.1))))
        #expect(g.amount == 0 && g.rate == 0)
        // Each node applies what it was pushed and says so with its next request (recalls the
        // newcomer caused included), until nothing is left unacknowledged.
        var toAck = pushes, req: UInt64 = 10, t = 1.2
        for _ in 0..<6 where !toAck.isEmpty {
            #expect(a.isDraining("r") || a.status("r")!.committedRate <= 600)
            for p in toAck {
                req += 1
                t += 0.01
                _ = a.acquire(AcquireRequest(requestID: req, node: p.node, budget: "r", want: 600, demandRate: 600, leaseID: p.grant.leaseID,
                                             available: 0, rateInUse: p.grant.rate, capacityInUse: p.grant.capacity,
                                             appliedSequence: p.grant.sequence), now: at(t))
                #expect(a.checkInvariants() == nil)
            }
            toAck = a.takePushes()
        }
        #expect(!a.isDraining("r"))
        let after = try #require(a.status("r"))
        #expect(after.committedRate <= 600 && after.pool + after.outstanding <= 600)
        #expect(a.spec("r")?.kind == .rate(limit: 600, period: .seconds(60), burst: 600))
    }

    @Test("a node that never acknowledges the lowered terms: they stop counting when its lease ends")
    func rateLoweredSilentNode() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 1_000, burst: 1_000)], now: at(0))
        _ = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n1", budget: "r", want: 1_000, demandRate: 1_000), now: at(0))))
        #expect(a.respec(rateBudget(limit: 100, burst: 100), now: at(1)) == .applied)
        #expect(a.isDraining("r") && a.status("r")!.committedRate == 1_000)
        _ = a.tick(now: at(9.9))
        #expect(a.isDraining("r"))
        _ = a.tick(now: at(10))
        #expect(!a.isDraining("r") && a.status("r")!.committedRate == 0)
        #expect(a.checkInvariants() == nil)
        // Then the pool refills to the new burst, no further.
        _ = a.tick(now: at(100))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n2", budget: "r", want: 1_000, demandRate: 1_000), now: at(100))))
        #expect(g.capacity <= 100 && g.rate <= 100)
    }

    @Test("a raised rate limit: the pool grows by the difference at once, committed rate within the new limit")
    func rateRaised() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 100, burst: 100)], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n1", budget: "r", want: 100, demandRate: 100), now: at(0))))
        #expect(g.amount == 100 && a.status("r")!.pool == 0)
        #expect(a.respec(rateBudget(limit: 1_000, burst: 1_000), now: at(0)) == .applied)
        #expect(!a.isDraining("r"))
        let st = try #require(a.status("r"))
        #expect(st.pool == 900 && st.pool + st.outstanding <= 1_000)
        // The holder gets the free rate offered by push.
        #expect(a.takePushes().contains { $0.node == "n1" && $0.grant.rate > 100 })
        #expect(a.checkInvariants() == nil)
    }

    @Test("a quota's allowance changed inside its window keeps what was consumed")
    func quotaChanged() throws {
        var a = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 1_000, window: try CalendarWindow(.day))], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "q", want: 300), now: at(0))))
        _ = a.release(ReleaseRequest(node: "n", budget: "q", leaseID: g.leaseID, consumed: 300, released: 0, final: false), now: at(1))
        #expect(a.respec(quotaBudget(allowance: 400, window: try CalendarWindow(.day)), now: at(2)) == .applied)
        var st = try #require(a.status("q"))
        #expect(st.consumed == 300 && st.pool == 100)
        #expect(a.respec(quotaBudget(allowance: 200, window: try CalendarWindow(.day)), now: at(3)) == .applied)
        st = try #require(a.status("q"))
        #expect(st.consumed == 300 && st.pool == 0, "below what was consumed: nothing more this window")
        #expect(grant(a.acquire(AcquireRequest(requestID: 2, node: "n", budget: "q", want: 10, leaseID: g.leaseID, consumed: 300), now: at(4)))?.amount == 0)
        #expect(a.respec(quotaBudget(allowance: 2_000, window: try CalendarWindow(.day)), now: at(5)) == .applied)
        st = try #require(a.status("q"))
        #expect(st.consumed == 300 && st.pool + st.outstanding + st.consumed + st.expiredSpent <= 2_000 && st.pool >= 1_600)
        #expect(a.checkInvariants() == nil)
    }

    @Test("a concurrency limit lowered below the permits out: none granted until they come back under it")
    func permitsLowered() throws {
        var a = try Allocator(settings: settings, budgets: [concurrencyBudget(limit: 4)], now: at(0))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "c", want: 4), now: at(0))))
        #expect(g.amount == 4)
        #expect(a.respec(concurrencyBudget(limit: 2), now: at(1)) == .applied)
        #expect(a.isDraining("c") && a.status("c")!.pool == 0)
        #expect(a.checkInvariants() == nil)
        _ = a.release(ReleaseRequest(node: "n", budget: "c", leaseID: g.leaseID, consumed: 0, released: 3, final: false), now: at(2))
        _ = a.tick(now: at(2.1))
        #expect(!a.isDraining("c"))
        let st = try #require(a.status("c"))
        #expect(st.outstanding == 1 && st.pool == 1, "the new limit of 2: one out, one free")
        #expect(a.checkInvariants() == nil)
    }

    @Test("same terms: unchanged; another kind, unit or period: replaced (a new budget); unknown id")
    func outcomes() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 100, burst: 100)], now: at(0))
        #expect(a.respec(rateBudget(limit: 100, burst: 100), now: at(1)) == .unchanged)
        #expect(a.respec(rateBudget(limit: 100, period: .seconds(60), burst: 100), now: at(1)) == .replaced)
        #expect(a.respec(quotaBudget("r"), now: at(1)) == .replaced)
        #expect(a.respec(rateBudget("nope"), now: at(1)) == .unknownBudget)
        #expect(a.spec("r")?.kind == .rate(limit: 100, period: .seconds(1), burst: 100))
    }

    @Test("adversarial terms: limits at the Int64 edges, lowered to 1 and raised back, never trap and keep the books balanced")
    func edges() throws {
        let huge = Checked.maxUnits
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: huge, burst: huge)], now: at(0))
        _ = try threeHolders(&a, limit: huge, now: at(0))
        #expect(a.checkInvariants() == nil, "before any change")
        for (k, limit) in [Int64(1), huge, 1, 7, huge / 3].enumerated() {
            #expect(a.respec(rateBudget(limit: limit, burst: limit), now: at(1 + Double(k))) == .applied)
            _ = a.takePushes()
            #expect(a.checkInvariants() == nil, "after \(limit)")
        }
        _ = a.tick(now: at(30))
        #expect(!a.isDraining("r"))
        #expect(a.checkInvariants() == nil)
    }

    @Test("a limit changed while the budget learns (after an ownership change): nothing granted until learning ends, then within the new terms")
    func whileLearning() throws {
        var a = try Allocator(settings: settings, budgets: [rateBudget(limit: 1_000, burst: 1_000)], now: at(0))
        let gained = a.ownershipGained("r", epoch: 2, committed: 0, now: at(0))
        #expect(gained)
        // A node reports holding old terms from the previous owner: adopted, nothing added.
        _ = a.acquire(AcquireRequest(requestID: 1, node: "n1", budget: "r", want: 1_000, demandRate: 1_000, leaseID: 9,
                                     available: 800, rateInUse: 900, capacityInUse: 900), now: at(1))
        #expect(a.respec(rateBudget(limit: 100, burst: 100), now: at(2)) == .applied)
        #expect(a.status("r")!.pool == 0 && a.status("r")!.learning && a.checkInvariants() == nil)
        _ = a.tick(now: at(30))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n2", budget: "r", want: 1_000, demandRate: 1_000), now: at(30))))
        #expect(g.capacity <= 100 && g.rate <= 100)
        let st = try #require(a.status("r"))
        #expect(st.committedRate <= 100 && st.pool + st.outstanding <= 100 && a.checkInvariants() == nil)
    }

    @Test("permits out above a lowered limit whose lease runs out come back only within the new limit")
    func permitsExpire() throws {
        var a = try Allocator(settings: settings, budgets: [concurrencyBudget(limit: 6)], now: at(0))
        _ = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "c", want: 6), now: at(0))))
        #expect(a.respec(concurrencyBudget(limit: 2), now: at(1)) == .applied)
        #expect(a.isDraining("c") && a.checkInvariants() == nil)
        _ = a.tick(now: at(10)) // the lease ends: its permits are free again, within the new limit
        #expect(!a.isDraining("c"))
        let st = try #require(a.status("c"))
        #expect(st.outstanding == 0 && st.pool == 2 && a.checkInvariants() == nil)
    }

    @Test("hostile rate terms never trap the refill: a huge burst refilled a few units per minute; 2^62 per nanosecond")
    func refillEdges() {
        // (burst / freeRate + 2) × period overflowed: 10^9 / 3 × 6·10^10 ns.
        var r = RateBook(limit: 1_000_000_000, period: .seconds(60), burst: 1_000_000_000, committedRate: 999_999_997, lastRefill: at(0))
        var pool: Int64 = 0
        r.refill(to: at(1_000), pool: &pool, outstanding: 0, learning: false)
        #expect(pool == 50) // 3 per minute for 1,000 s
        r.refill(to: Instant(nanoseconds: .max / 2), pool: &pool, outstanding: 0, learning: false)
        #expect(pool > 230_000_000 && pool < 231_000_000) // 3 per minute for ~146 years, no more
        // The quotient did not fit in 64 bits: 2 ns × 2^62 per ns.
        var fast = RateBook(limit: Checked.maxUnits, period: .nanoseconds(1), burst: Checked.maxUnits, lastRefill: at(0))
        var p2: Int64 = 0
        fast.refill(to: at(0) + .nanoseconds(2), pool: &p2, outstanding: 0, learning: false)
        #expect(p2 == Checked.maxUnits)
    }

    @Test("a quota lowered below what a node holds: the node is told to hold at most its share of what the new allowance leaves, gives the rest back at once, and spends no more after")
    func quotaRecalled() throws {
        let day = try CalendarWindow(.day)
        var alloc = try Allocator(settings: settings, budgets: [quotaBudget(allowance: 1_000, window: day)], now: at(0))
        var e = try Enforcer(settings: EnforcerSettings(node: "n"))
        let h = e.register(quotaBudget(allowance: 1_000, window: day))
        // The node holds a slice and spends 100 of it.
        _ = e.admit(Cost(requests: 1, tokens: 100), on: BudgetSet(h), now: at(0))
        for m in e.poll(now: at(0)) {
            if case .acquire(let req) = m, case .granted(let g) = alloc.acquire(req, now: at(0)) { _ = e.receive(g, now: at(0)) }
        }
        let held = e.status(h).available
        #expect(held > 150)
        // Lowered to 150: the node holds more than the new allowance leaves (150: nothing was
        // reported consumed yet), so it is told to hold at most 150.
        #expect(alloc.respec(quotaBudget(allowance: 150, window: day), now: at(1)) == .applied)
        let recalls = alloc.takePushes()
        #expect(recalls.count == 1 && recalls[0].grant.capacity == 150, "\(recalls)")
        #expect(e.receive(recalls[0].grant, now: at(1)) == .applied)
        #expect(e.status(h).available == 150 && e.status(h).released == held - 150)
        // Acknowledged at once, with the units given back.
        let acks = e.poll(now: at(1))
        #expect(acks.contains { if case .acquire(let r) = $0 { r.released == held - 150 } else { false } }, "\(acks)")
        for m in acks {
            switch m {
            case .acquire(let req): if case .granted(let g) = alloc.acquire(req, now: at(1)) { _ = e.receive(g, now: at(1)) }
            case .release(let rel): _ = alloc.release(rel, now: at(1))
            }
        }
        #expect(alloc.checkInvariants() == nil)
        // From here the node spends at most what it kept, and the coordinator grants nothing past 300.
        var spent: Int64 = 0
        for k in 0..<20 {
            let now = at(2 + Double(k) / 10)
            if e.admit(Cost(requests: 1, tokens: 50), on: BudgetSet(h), now: now).isAdmitted { spent += 50 }
            for m in e.poll(now: now) {
                switch m {
                case .acquire(let req): if case .granted(let g) = alloc.acquire(req, now: now) { _ = e.receive(g, now: now) }
                case .release(let rel): _ = alloc.release(rel, now: now)
                }
            }
        }
        #expect(spent <= 150, "spent \(spent) after the recall (100 before it, under the old allowance)")
        let st = try #require(alloc.status("q"))
        #expect(st.pool + st.outstanding + st.consumed + st.expiredSpent <= 1_000 && alloc.checkInvariants() == nil)
    }

    /// Polls `e`, answers from `alloc`, delivers grants (one exchange).
    func exchange(_ e: inout Enforcer, _ alloc: inout Allocator, now: Instant) {
        for m in e.poll(now: now) {
            switch m {
            case .acquire(let req): if case .granted(let g) = alloc.acquire(req, now: now) { _ = e.receive(g, now: now) }
            case .release(let rel): _ = alloc.release(rel, now: now)
            }
        }
    }

    @Test("a concurrency limit lowered below the permits in use: permits coming back above the node's share go back to the coordinator, and the limit holds once they have")
    func permitsRecalled() throws {
        var alloc = try Allocator(settings: settings, budgets: [concurrencyBudget(limit: 100)], now: at(0))
        var e = try Enforcer(settings: EnforcerSettings(node: "n"))
        let h = e.register(concurrencyBudget(limit: 100))
        var held: [Reservation] = []
        for round in 0..<40 where held.count < 50 {
            let now = at(0.05 * Double(round))
            while held.count < 50, case .admitted(let r) = e.reserve(.oneRequest, on: BudgetSet(h), now: now) { held.append(r) }
            exchange(&e, &alloc, now: now)
        }
        #expect(held.count >= 20, "\(held.count) in use")
        #expect(alloc.respec(concurrencyBudget(limit: 10), now: at(1)) == .applied)
        let recalls = alloc.takePushes()
        #expect(recalls.count == 1 && recalls[0].grant.capacity <= 10)
        _ = e.receive(recalls[0].grant, now: at(1))
        exchange(&e, &alloc, now: at(1))
        // The requests in flight end: their permits go back, not to the node's spendable ones.
        for (k, r) in held.enumerated() {
            e.settle(r, actual: .oneRequest, now: at(2 + Double(k) / 100))
            exchange(&e, &alloc, now: at(2 + Double(k) / 100))
            let st = e.status(h)
            #expect(max(0, st.available) + st.reserved <= max(10, Int64(held.count - k - 1)), "after \(k + 1) ended: \(st)")
        }
        #expect(e.status(h).available <= 10 && !alloc.isDraining("c"))
        let book = try #require(alloc.status("c"))
        #expect(book.outstanding <= 10 && alloc.checkInvariants() == nil)
        // Then the node can run 10 at once, not more.
        var now10 = 0
        while case .admitted = e.reserve(.oneRequest, on: BudgetSet(h), now: at(5)) { now10 += 1; if now10 > 20 { break } }
        #expect(now10 <= 10, "\(now10) at once after the recall")
    }

    @Test("a lost recall is sent again on the next event until the node acknowledges it")
    func recallResent() throws {
        var alloc = try Allocator(settings: settings, budgets: [concurrencyBudget(limit: 100)], now: at(0))
        _ = try #require(grant(alloc.acquire(AcquireRequest(requestID: 1, node: "n1", budget: "c", want: 60), now: at(0))))
        let n2 = try #require(grant(alloc.acquire(AcquireRequest(requestID: 1, node: "n2", budget: "c", want: 1), now: at(0))))
        #expect(alloc.respec(concurrencyBudget(limit: 10), now: at(1)) == .applied)
        let first = alloc.takePushes().filter { $0.node == "n1" }
        #expect(first.count == 1)
        // Lost. Another node's request 300 ms later brings it out again, with a new sequence
        // (n2 holds a free permit: nothing is recalled for it).
        func n2Asks(_ id: UInt64, at t: Double) {
            _ = alloc.acquire(AcquireRequest(requestID: id, node: "n2", budget: "c", want: 1, leaseID: n2.leaseID,
                                             holding: 1, available: 1, appliedSequence: .max), now: at(t))
        }
        n2Asks(2, at: 1.3)
        let again = alloc.takePushes().filter { $0.node == "n1" }
        #expect(again.count == 1 && again[0].grant.sequence > first[0].grant.sequence)
        // Acknowledged: no more.
        _ = alloc.acquire(AcquireRequest(requestID: 2, node: "n1", budget: "c", want: 1, leaseID: again[0].grant.leaseID,
                                         released: 50, appliedSequence: again[0].grant.sequence), now: at(1.4))
        n2Asks(3, at: 2)
        #expect(alloc.takePushes().filter { $0.node == "n1" }.isEmpty)
    }
}

/// A budget deleted from the configuration (`Allocator.withdraw`), in virtual time: every node
/// holding a lease stops using it at once, whatever its kind.
@Suite("Budgets withdrawn")
struct WithdrawTests {
    let settings = AllocatorSettings()

    @Test("a budget deleted: nodes holding a rate, quota or permit lease are told to stop at once, spend nothing more from it, and what they send back afterwards is answered unknown budget")
    func withdrawn() throws {
        let day = try CalendarWindow(.day)
        let specs = [rateBudget(limit: 1_000, burst: 1_000), quotaBudget(allowance: 1_000, window: day), concurrencyBudget(limit: 50)]
        var alloc = try Allocator(settings: settings, budgets: specs, now: at(0))
        var e = try Enforcer(settings: EnforcerSettings(node: "n"))
        let handles = specs.map { e.register($0) }
        /// One request on `h` (a permit held for good on the concurrency budget).
        func take(_ i: Int, now: Instant) -> Bool {
            i == 2 ? e.reserve(.oneRequest, on: BudgetSet(handles[i]), now: now).isAdmitted
                : e.admit(Cost(requests: 1, tokens: 10), on: BudgetSet(handles[i]), now: now).isAdmitted
        }
        // The node takes a lease of each and uses a little of each.
        for k in 0..<5 {
            for i in handles.indices { _ = take(i, now: at(0.1 * Double(k))) }
            RespecTests().exchange(&e, &alloc, now: at(0.1 * Double(k)))
        }
        for h in handles { #expect(e.status(h).available > 0, "\(e.status(h))") }
        // Deleted: one push per budget, each taking the slice to nothing.
        var pushes: [Push] = []
        for s in specs {
            pushes += alloc.withdraw(s.id, now: at(1))
            _ = alloc.remove(s.id)
        }
        #expect(pushes.count == 3 && pushes.allSatisfy { $0.grant.capacity == 0 && $0.grant.rate == 0 }, "\(pushes)")
        for p in pushes { #expect(e.receive(p.grant, now: at(1)) == .applied) }
        for h in handles { #expect(e.status(h).available <= 0, "\(e.status(h))") }
        // Nothing more is admitted on them; the node's messages get "unknown budget", and it
        // does not storm the coordinator with them.
        var admitted = 0, messages = 0
        let inUse = e.status(handles[2]).reserved
        #expect(inUse >= 1)
        for k in 0..<300 {
            if k == 5 {
                // Answered "unknown budget": the permits in use stay counted until the lease
                // ends (a restored budget's owner adopts them; nothing is freed twice).
                #expect(e.status(handles[2]).reserved == inUse)
            }
            let now = at(1 + 0.1 * Double(k))
            for i in handles.indices where take(i, now: now) { admitted += 1 }
            for m in e.poll(now: now) {
                messages += 1
                switch m {
                case .acquire(let req):
                    #expect(alloc.acquire(req, now: now) == .unknownBudget)
                    e.unknownBudget(req.budget, requestID: req.requestID, now: now) // (what LeaseClient does with that answer)
                case .release(let rel): _ = alloc.release(rel, now: now)
                }
            }
        }
        #expect(admitted == 0)
        // At most one ask per budget per refresh interval (1 s) while requests keep coming.
        #expect(messages <= 3 * 31, "\(messages) messages in 30 s for three deleted budgets")
    }
}
