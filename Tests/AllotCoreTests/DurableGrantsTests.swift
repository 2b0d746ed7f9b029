import AllotCore
import Testing

/// The write-ahead of durable grants, without a database: what is sent, taken back and
/// written again for each answer the ledger can give.
@Suite("Durable grants (write-ahead)")
struct DurableGrantsTests {
    let w0 = Instant(seconds: 86_400 * 100)
    let w1 = Instant(seconds: 86_400 * 101)

    func change(_ budget: BudgetID, _ start: Instant, granted: Int64, consumed: Int64 = 0) -> LedgerChange {
        LedgerChange(budget: budget, windowStart: start, windowEnd: start + .seconds(86_400), allowance: 1_000,
                     delta: LedgerCounters(granted: granted, consumed: consumed))
    }

    func grant(_ id: UInt64, _ budget: BudgetID, _ amount: Int64) -> Grant {
        Grant(requestID: id, budget: budget, leaseID: LeaseID(id), epoch: 1, amount: amount, ttl: .seconds(10))
    }

    @Test("a recorded grant goes out; a retry of it while waiting is not served twice")
    func recorded() {
        var d = DurableGrants()
        let h = d.hold(grant(1, "q", 40), node: "gw-1", windowStart: w0, life: 5)
        #expect(d.isWaiting(node: "gw-1", budget: "q", requestID: 1))
        #expect(!d.isWaiting(node: "gw-2", budget: "q", requestID: 1))
        let out = d.recorded([change("q", w0, granted: 40)], held: [h], accepted: [true]) { _ in 5 }
        #expect(out.answers.count == 1 && out.answers[0].answer == .grant(grant(1, "q", 40)))
        #expect(out.revoke.isEmpty && out.retry.isEmpty)
        #expect(!d.isWaiting(node: "gw-1", budget: "q", requestID: 1))
    }

    @Test("refused under the cap: taken back as exhausted, the node told nothing was added")
    func refused() {
        var d = DurableGrants()
        let a = d.hold(grant(1, "q", 40), node: "gw-1", windowStart: w0, life: 1)
        let b = d.hold(grant(2, "r", 10), node: "gw-2", windowStart: w1, life: 1)
        let out = d.recorded([change("q", w0, granted: 40), change("r", w1, granted: 10)], held: [a, b], accepted: [false, true]) { _ in 1 }
        #expect(out.revoke.count == 1 && out.revoke[0].held == a && out.revoke[0].exhausted)
        #expect(out.answers.map(\.answer) == [.nothing(grant(1, "q", 0)), .grant(grant(2, "r", 10))])
        #expect(out.retry.isEmpty, "a refusal is an answer: nothing to write again")
    }

    @Test("a failed write: every held grant taken back (not exhausted), the node asked to retry, reports written again without the grants")
    func failed() {
        var d = DurableGrants()
        d.retryAfter = .milliseconds(300)
        let a = d.hold(grant(1, "q", 40), node: "gw-1", windowStart: w0, life: 1)
        let journal = [change("q", w0, granted: 40, consumed: 7), change("r", w1, granted: 10)]
        let out = d.recorded(journal, held: [a], accepted: nil) { _ in 1 }
        #expect(out.revoke.count == 1 && !out.revoke[0].exhausted)
        #expect(out.answers.map(\.answer) == [.retryLater(grant(1, "q", 0), retryAfter: .milliseconds(300))])
        #expect(out.retry == [change("q", w0, granted: 0, consumed: 7)], "the consumption is a fact; the grants were taken back")
        #expect(!d.isWaiting(node: "gw-1", budget: "q", requestID: 1))
    }

    @Test("a grant made for a node's previous life is recorded but not sent to the new one; a restart forgets what waited")
    func lives() {
        var d = DurableGrants()
        let a = d.hold(grant(1, "q", 40), node: "gw-1", windowStart: w0, life: 1)
        _ = d.hold(grant(2, "q", 40), node: "gw-2", windowStart: w0, life: 1)
        d.forget(node: "gw-2")
        #expect(!d.isWaiting(node: "gw-2", budget: "q", requestID: 2) && d.isWaiting(node: "gw-1", budget: "q", requestID: 1))
        let out = d.recorded([change("q", w0, granted: 80)], held: [a], accepted: [true]) { _ in 2 }
        #expect(out.answers.isEmpty && out.revoke.isEmpty, "it runs out on the retired lease")
    }
}
