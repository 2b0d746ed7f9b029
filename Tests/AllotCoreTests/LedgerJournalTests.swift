import Testing
@testable import AllotCore

/// The allocator's side of the durable ledger: what it journals, how a refused grant is taken
/// back, and how a new owner resumes a quota window from the ledger's counters.
@Suite("Ledger journal")
struct LedgerJournalTests {
    let settings = AllocatorSettings() // lease TTL 10 s, refresh interval 1 s

    func journaling(_ budgets: [BudgetSpec]) throws -> Allocator {
        var a = try Allocator(settings: settings, budgets: [], now: at(0))
        a.journaling = true
        for b in budgets { try a.add(b, now: at(0)) }
        return a
    }

    @Test("grants, releases, reports and expiries of a quota are journaled once; rate budgets are not")
    func journal() throws {
        var a = try journaling([quotaBudget(allowance: 1000, window: try CalendarWindow(.day)), rateBudget()])
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "q", want: 300), now: at(1))))
        _ = a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "r", want: 10), now: at(1))
        var j = a.takeJournal()
        #expect(j.count == 1 && j[0].budget == "q" && j[0].delta == LedgerCounters(granted: g.amount))
        #expect(j[0].allowance == 1000 && j[0].windowEnd - j[0].windowStart == .seconds(86_400))
        #expect(a.takeJournal().isEmpty)
        _ = a.release(ReleaseRequest(node: "n", budget: "q", leaseID: g.leaseID, consumed: 100, released: 50, final: false), now: at(2))
        j = a.takeJournal()
        #expect(j.first?.delta == LedgerCounters(released: 50, consumed: 100))
        _ = a.tick(now: at(20)) // the lease expires unreturned
        j = a.takeJournal()
        #expect(j.first?.delta == LedgerCounters(expired: g.amount - 150))
    }

    @Test("a revoked grant goes back to the pool and a retry of the request is sized afresh")
    func revoke() throws {
        var a = try journaling([quotaBudget(allowance: 1000, window: try CalendarWindow(.day))])
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 7, node: "n", budget: "q", want: 400), now: at(1))))
        #expect(g.amount == 400)
        let revoked = a.revoke(g, node: "n")
        #expect(revoked)
        #expect(a.status("q")!.pool == 1000 && a.status("q")!.outstanding == 0)
        #expect(a.checkInvariants() == nil)
        // The same request again is a new grant (which would be recorded again), not a re-send.
        guard case .granted(let again) = a.acquire(AcquireRequest(requestID: 7, node: "n", budget: "q", want: 400), now: at(2)) else {
            Issue.record("expected a fresh grant")
            return
        }
        #expect(again.amount == 400)
        // Refused under the cap: nothing is left here either.
        let refused = a.revoke(again, node: "n", exhausted: true)
        #expect(refused)
        #expect(a.status("q")!.pool == 0)
        #expect(a.checkInvariants() == nil)
    }

    @Test("a new owner resumes from the ledger: reported holdings are adopted out of the unreported units")
    func resumeFromLedger() throws {
        var a = try journaling([quotaBudget(allowance: 1000, window: try CalendarWindow(.day))])
        // Ledger: 700 granted, 100 back, 450 consumed, 50 expired: 100 may still be on nodes.
        let row = LedgerCounters(granted: 700, released: 100, consumed: 450, expired: 50)
        #expect(row.committed == 600 && row.unreported == 100)
        _ = a.ownershipGained("q", epoch: 9, committed: row.committed, adoptable: row.unreported, now: at(10))
        // A node reports holding 80 under the old owner's lease: adopted, nothing new.
        let adopted = try #require(grant(a.acquire(AcquireRequest(requestID: 3, node: "n", budget: "q", want: 500, leaseID: 41, epoch: 2, holding: 80), now: at(11))))
        #expect(adopted.adopted && adopted.amount == 0 && adopted.epoch == 9)
        // A node claiming more than the ledger allows for is held to it.
        let liar = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "m", budget: "q", want: 500, leaseID: 5, epoch: 2, holding: 500), now: at(11))))
        #expect(liar.adopted)
        #expect(a.status("q")!.outstanding == 100)
        #expect(a.checkInvariants() == nil)
        _ = a.tick(now: at(20.5)) // learning over (the adopted leases run to 21)
        // Free: 1000 − 600 committed (of which 100 now out on adopted leases, 500 consumed).
        #expect(a.status("q")!.pool == 400)
        _ = a.release(ReleaseRequest(node: "n", budget: "q", leaseID: adopted.leaseID, consumed: 30, released: 50, final: false), now: at(20.6))
        #expect(a.status("q")!.pool == 450 && a.status("q")!.consumed == 530)
        #expect(a.checkInvariants() == nil)
    }

    @Test("a new owner holding the ledger row grants what it leaves free at once, while adopting what nodes hold")
    func grantsWhileLearningFromLedger() throws {
        var a = try journaling([quotaBudget(allowance: 1000, window: try CalendarWindow(.day))])
        // Ledger: 700 granted, 100 back, 450 consumed, 50 expired: 100 may still be on nodes.
        let row = LedgerCounters(granted: 700, released: 100, consumed: 450, expired: 50)
        _ = a.ownershipGained("q", epoch: 9, committed: row.committed, adoptable: row.unreported, fromLedger: true, now: at(10))
        #expect(a.status("q")!.learning && a.status("q")!.pool == 400)
        // A node new to the budget is served at once, from what the row leaves free.
        let fresh = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "m", budget: "q", want: 300), now: at(10.001))))
        #expect(fresh.amount == 300 && fresh.epoch == 9 && !fresh.adopted)
        // A node holding 80 under the old owner's lease: adopted out of the 100, with nothing
        // new in that answer (a durable grant the ledger refused would hide the adoption from
        // it); asked again under its new lease, it gets its share of what is left.
        let adopted = try #require(grant(a.acquire(AcquireRequest(requestID: 3, node: "n", budget: "q", want: 500, leaseID: 41, epoch: 2, holding: 80), now: at(10.002))))
        #expect(adopted.adopted && adopted.amount == 0 && adopted.retryAfter == .zero)
        let more = try #require(grant(a.acquire(AcquireRequest(requestID: 4, node: "n", budget: "q", want: 500, leaseID: adopted.leaseID, epoch: 9, holding: 80), now: at(10.003))))
        #expect(!more.adopted && more.amount > 0 && more.amount <= 100)
        // A node claiming more than the ledger allows for is held to it (the last 20 it may hold).
        let liar = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "x", budget: "q", want: 500, leaseID: 5, epoch: 2, holding: 500), now: at(10.004))))
        #expect(liar.adopted && liar.amount == 0)
        // Never past the allowance: counted as used (consumed, or unreported and not adopted)
        // + out + free is the allowance; what went out new is exactly what the row left free.
        let granted = fresh.amount + more.amount
        var st = a.status("q")!
        #expect(st.consumed == 500 && st.outstanding == 100 + granted && st.pool == 400 - granted)
        #expect(st.consumed + st.outstanding + st.pool == 1000)
        #expect(a.checkInvariants() == nil)
        let j = a.takeJournal() // the new grants go to the ledger (written ahead of sending)
        #expect(j.first?.delta.granted == granted)
        // The allowance lowered to 1000 − pool while learning: the pool shrinks with it.
        let lowered = 1000 - st.pool
        _ = a.respec(quotaBudget(allowance: lowered, window: try CalendarWindow(.day)), now: at(10.005))
        st = a.status("q")!
        #expect(st.pool == 0 && a.checkInvariants() == nil)
        // Learning ends at 20 (the leases run to 20.001 and later): the same books.
        _ = a.tick(now: at(20.0005))
        #expect(!a.status("q")!.learning && a.status("q")!.pool == 0)
        _ = a.release(ReleaseRequest(node: "m", budget: "q", leaseID: fresh.leaseID, consumed: 100, released: 200, final: false), now: at(20.0008))
        #expect(a.status("q")!.pool == 200)
        #expect(a.checkInvariants() == nil)
    }

    @Test("another coordinator that may still grant (a view skew) stops even a ledger-backed quota's grants until learning ends")
    func extendedLearningFromLedger() throws {
        var a = try journaling([quotaBudget(allowance: 1000, window: try CalendarWindow(.day))])
        _ = a.ownershipGained("q", epoch: 9, committed: 600, adoptable: 100, fromLedger: true, now: at(10))
        a.extendLearning("q", now: at(11))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "m", budget: "q", want: 300), now: at(11.001))))
        #expect(g.amount == 0 && g.retryAfter > .zero)
        _ = a.tick(now: at(21.5)) // learning over (extended to 21)
        let later = try #require(grant(a.acquire(AcquireRequest(requestID: 2, node: "m", budget: "q", want: 300), now: at(21.6))))
        #expect(later.amount == 300)
        #expect(a.checkInvariants() == nil)
    }

    @Test("without a ledger row a new owner of a quota grants nothing while learning")
    func noLedgerNoGrantsWhileLearning() throws {
        var a = try journaling([quotaBudget(allowance: 1000, window: try CalendarWindow(.day))])
        _ = a.ownershipGained("q", epoch: 9, committed: 1000, now: at(10))
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "m", budget: "q", want: 300), now: at(10.001))))
        #expect(g.amount == 0 && g.retryAfter > .zero)
    }

    @Test("resuming without learning counts everything committed as consumed")
    func resumeWithoutLearning() throws {
        var a = try journaling([quotaBudget(allowance: 1000, window: try CalendarWindow(.day))])
        a.resume("q", epoch: 4, ledger: LedgerCounters(granted: 300, released: 20, consumed: 280), now: at(1))
        #expect(a.status("q")!.pool == 720 && a.status("q")!.epoch == 4 && !a.status("q")!.learning)
        let g = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "n", budget: "q", want: 5000), now: at(2))))
        #expect(g.amount == 720 && g.epoch == 4)
    }
}

/// A new owner takes a quota's ledger row as read from a database: hostile or corrupt rows at
/// the Int64 edges neither trap nor grant past the allowance.
@Suite("Ledger rows at the edges")
struct LedgerRowEdgeTests {
    static let edges: [Int64] = [.min, .min + 1, -1, 0, 1, 999, 1000, 1001, Checked.maxUnits, .max - 1, .max]

    @Test("a row's sums saturate")
    func sumsSaturate() {
        for g in Self.edges { for r in Self.edges {
            let row = LedgerCounters(granted: g, released: r, consumed: .max, expired: .min)
            #expect(row.unreported >= 0)
            if g == .max && r < 0 { #expect(row.committed == .max) }
            if g == .min && r > 0 { #expect(row.committed == .min) }
        } }
        var a = LedgerCounters(granted: .max, released: .min)
        a += LedgerCounters(granted: 1, released: -1)
        #expect(a.granted == .max && a.released == .min)
    }

    @Test("ownership from an extreme row: no trap, nothing past the allowance, invariants hold")
    func extremeRows() throws {
        for committed in Self.edges {
            for adoptable in Self.edges {
                var a = try LedgerJournalTests().journaling([quotaBudget(allowance: 1000, window: try CalendarWindow(.day))])
                _ = a.ownershipGained("q", epoch: 9, committed: committed, adoptable: adoptable, fromLedger: true, now: at(10))
                let st = try #require(a.status("q"))
                #expect(st.pool >= 0 && st.pool <= 1000)
                #expect(st.consumed >= 0 && st.consumed + st.pool <= 1000)
                // A node new to the budget asks for everything, a liar claims Int64.max held.
                let fresh = try #require(grant(a.acquire(AcquireRequest(requestID: 1, node: "m", budget: "q", want: .max), now: at(10.001))))
                _ = a.acquire(AcquireRequest(requestID: 1, node: "x", budget: "q", want: .max, leaseID: 5, epoch: 2, holding: .max), now: at(10.002))
                #expect(fresh.amount >= 0 && fresh.amount <= 1000 - min(1000, max(0, committed)))
                let after = try #require(a.status("q"))
                #expect(after.consumed + after.outstanding + after.pool <= 1000)
                #expect(a.checkInvariants() == nil, "committed \(committed), adoptable \(adoptable)")
            }
        }
    }
}
