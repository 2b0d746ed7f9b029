import Testing
@testable import AllotCore

/// Charges of zero and charges above the reservation (virtual time, real machines).
/// One round of a node talking to its coordinator, answered at once.
private func exchange(_ e: inout Enforcer, _ alloc: inout Allocator, _ now: Instant) {
    for m in e.poll(now: now) {
        switch m {
        case .acquire(let req): if case .granted(let g) = alloc.acquire(req, now: now) { _ = e.receive(g, now: now) }
        case .release(let rel): _ = alloc.release(rel, now: now)
        }
    }
}

@Suite("Zero charges and charges above the bound")
struct SettleEdgeTests {
    @Test("a zero charge needs no lease and is never refused by a closed budget")
    func zeroNeedsNoLease() throws {
        var e = try Enforcer(settings: EnforcerSettings(node: "n"))
        let tokens = e.register(quotaBudget("tokens"))
        let set = try BudgetSet([tokens])
        // No lease at all, fail mode closed: a request that costs no tokens still goes.
        guard case .admitted(let r) = e.reserve(Cost(requests: 1), on: set, now: at(0)) else {
            Issue.record("a zero charge was refused")
            return
        }
        e.settle(r, actual: Cost(requests: 1), now: at(0.1))
        #expect(e.poll(now: at(0.1)).isEmpty, "nothing to ask for a zero amount")
        #expect(!e.reserve(.tokens(1), on: set, now: at(0.2)).isAdmitted) // one token still needs a lease
    }

    /// One node, one quota: reserve 100, the upstream reports `used`.
    func overrun(used: Int64, allowance: Int64) throws -> (alloc: Allocator, debt: Int64) {
        let q = quotaBudget("q", allowance: allowance)
        var alloc = try Allocator(budgets: [q], now: at(0))
        var e = try Enforcer(settings: EnforcerSettings(node: "n"))
        let set = try BudgetSet([e.register(q)])
        _ = e.reserve(.tokens(100), on: set, now: at(0))
        exchange(&e, &alloc, at(0))
        guard case .admitted(let r) = e.reserve(.tokens(100), on: set, now: at(0.01)) else {
            Issue.record("not admitted")
            return (alloc, 0)
        }
        e.settle(r, actual: .tokens(used), now: at(0.02))
        for ms in stride(from: 30, through: 3_000, by: 10) { exchange(&e, &alloc, at(Double(ms) / 1_000)) }
        for m in e.shutdown(now: at(3)) { if case .release(let rel) = m { _ = alloc.release(rel, now: at(3)) } }
        #expect(alloc.checkInvariants() == nil)
        return (alloc, e.status(set[0]).debt)
    }

    @Test("usage above the bound is charged in full: the node asks for the rest, and the ledger counts it once")
    func overrunRepaid() throws {
        let (alloc, debt) = try overrun(used: 5_000, allowance: 100_000)
        #expect(debt == 0)
        #expect(alloc.status("q")?.consumed == 5_000)
    }

    @Test("an overrun beyond the allowance stays a debt on the node, never counted twice")
    func overrunBeyondAllowance() throws {
        let (alloc, debt) = try overrun(used: 5_000, allowance: 1_000)
        #expect(alloc.status("q")!.consumed + debt == 5_000)
        #expect(alloc.status("q")!.consumed <= 1_000)
    }

    @Test("while a node is in debt, what another request gives back repays the debt before anything is admitted")
    func refundRepaysDebt() throws {
        let q = quotaBudget("q", allowance: 1_000)
        var alloc = try Allocator(budgets: [q], now: at(0))
        var e = try Enforcer(settings: EnforcerSettings(node: "n"))
        let set = try BudgetSet([e.register(q)])
        _ = e.reserve(.tokens(100), on: set, now: at(0))
        exchange(&e, &alloc, at(0))
        guard case .admitted(let a) = e.reserve(.tokens(100), on: set, now: at(0.01)),
              case .admitted(let b) = e.reserve(.tokens(100), on: set, now: at(0.01)) else {
            Issue.record("not admitted")
            return
        }
        e.settle(a, actual: .tokens(5_000), now: at(0.02)) // far above its bound: the node owes
        #expect(e.status(set[0]).debt > 0)
        let owed = e.status(set[0]).debt
        e.settle(b, actual: .tokens(10), now: at(0.03))     // 90 given back: to the debt
        #expect(e.status(set[0]).debt == owed - 90)
        #expect(!e.reserve(.tokens(1), on: set, now: at(0.04)).isAdmitted, "admitted while in debt")
        for ms in stride(from: 50, through: 3_000, by: 10) { exchange(&e, &alloc, at(Double(ms) / 1_000)) }
        for m in e.shutdown(now: at(3)) { if case .release(let rel) = m { _ = alloc.release(rel, now: at(3)) } }
        #expect(alloc.checkInvariants() == nil)
        #expect(alloc.status("q")!.consumed + e.status(set[0]).debt == 5_010)
        #expect(alloc.status("q")!.consumed <= 1_000)
    }

    @Test("a request reserved at zero that cost something after all is owed, asked for and counted once")
    func zeroReservedThenCharged() throws {
        let q = quotaBudget("q", allowance: 100_000)
        var alloc = try Allocator(budgets: [q], now: at(0))
        var e = try Enforcer(settings: EnforcerSettings(node: "n"))
        let set = try BudgetSet([e.register(q)])
        guard case .admitted(let r) = e.reserve(Cost(requests: 1), on: set, now: at(0)) else {
            Issue.record("a zero charge was refused")
            return
        }
        e.settle(r, actual: .tokens(900), now: at(0.01))
        for ms in stride(from: 20, through: 2_000, by: 10) { exchange(&e, &alloc, at(Double(ms) / 1_000)) }
        for m in e.shutdown(now: at(3)) { if case .release(let rel) = m { _ = alloc.release(rel, now: at(3)) } }
        #expect(e.status(set[0]).debt == 0)
        #expect(alloc.status("q")?.consumed == 900)
    }

    @Test("two slices of one set that both run short are taken one after the other, never given back in turn")
    func orderedAcquisition() throws {
        let a = quotaBudget("a", allowance: 1_000_000), b = quotaBudget("b", allowance: 1_000_000)
        var alloc = try Allocator(budgets: [a, b], now: at(0))
        var e = try Enforcer(settings: EnforcerSettings(node: "n"))
        let set = try BudgetSet([e.register(a), e.register(b)])
        var admitted = 0
        // Small requests size the slices small; then one much larger request needs both to grow.
        for ms in stride(from: 0, through: 3_000, by: 10) {
            let now = at(Double(ms) / 1_000)
            let cost: Int64 = ms >= 1_000 ? 50_000 : 10
            if e.reserve(.tokens(cost), on: set, now: now).isAdmitted && cost > 10 { admitted += 1 }
            for m in e.poll(now: now) {
                switch m {
                case .acquire(let req): if case .granted(let g) = alloc.acquire(req, now: now) { _ = e.receive(g, now: now) }
                case .release(let rel): _ = alloc.release(rel, now: now)
                }
            }
            #expect(alloc.checkInvariants() == nil)
        }
        #expect(admitted > 0, "the large requests were never admitted")
    }
}
