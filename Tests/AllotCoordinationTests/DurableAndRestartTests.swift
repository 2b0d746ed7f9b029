import AllotCluster
import AllotCoordination
import AllotCore
import Testing

/// The durable-grant pipeline and node restarts through `CoordinatorMachine`: what the shell
/// is told to do, and what nodes are answered, at each ledger answer.
@Suite("Durable grants and restarts in virtual time")
struct DurableAndRestartTests {
    static func machine(_ specs: [BudgetSpec], durable: Bool) throws -> CoordinatorMachine {
        var s = CoordinatorMachine.Settings()
        s.allocator = fastAllocator
        s.durable = durable
        return try CoordinatorMachine(settings: s, budgets: specs, now: t0)
    }

    /// A durable machine whose quota `q0` (and rate budgets) resumed from an empty ledger row.
    static func resumed(quotaAllowance: Int64, rate: Int = 0) throws -> CoordinatorMachine {
        var m = try machine(try budgets(quota: 1, rate: rate, allowance: quotaAllowance), durable: true)
        _ = m.start()
        m.loaded("q0", row: LedgerCounters(), windowStart: m.loadWindow("q0", now: t0)!, now: t0)
        return m
    }

    static func ask(_ id: UInt64, _ b: BudgetID, want: Int64 = 10, node: NodeID = "n0") -> AcquireRequest {
        AcquireRequest(requestID: id, node: node, budget: b, want: want, demandRate: want)
    }

    static func writes(_ actions: [CoordinatorMachine.Action]) -> [([LedgerChange], [DurableGrants.Held])] {
        actions.compactMap { if case .writeLedger(let c, let h) = $0 { (c, h) } else { nil } }
    }

    static func sends(_ actions: [CoordinatorMachine.Action]) -> [(NodeID, [CoordinatorMachine.Answer])] {
        actions.compactMap { if case .send(let n, let a) = $0 { (n, a) } else { nil } }
    }

    @Test("a durable quota grants nothing while its row loads, then resumes from it; a grant waits for its record, a retry of it is not served twice")
    func loadThenHold() throws {
        let q = try budgets(quota: 1, rate: 0, allowance: 100)
        var m = try Self.machine(q, durable: true)
        guard case .loadLedger("q0") = m.start().first else { Issue.record("no load asked"); return }
        #expect(m.acquire([Self.ask(1, "q0")], from: "n0", now: t0).0 == [.unavailable(requestID: 1, budget: "q0", retryAfter: .milliseconds(20))])
        // The row says 95 of 100 are committed, all reported (no node can still hold any).
        m.loaded("q0", row: LedgerCounters(granted: 95, consumed: 95), windowStart: m.loadWindow("q0", now: t0)!, now: t0)
        #expect(m.loadWindow("q0", now: t0) == nil)
        let (answers, actions) = m.acquire([Self.ask(2, "q0")], from: "n0", now: t0 + .milliseconds(1))
        #expect(answers.isEmpty, "held until recorded")
        let w = try #require(Self.writes(actions).first)
        #expect(w.1.count == 1 && w.1[0].grant.amount == 5, "only what the row leaves")
        #expect(m.acquire([Self.ask(2, "q0")], from: "n0", now: t0 + .milliseconds(2)).0.isEmpty, "a retry waits with it")
        let sent = Self.sends(m.recorded(w.0, held: w.1, accepted: [true]))
        #expect(sent.count == 1 && sent[0].0 == "n0")
        guard case .grant(let g) = sent.first?.1.first else { Issue.record("no grant"); return }
        #expect(g.amount == 5 && g.requestID == 2)
    }

    @Test("a new owner whose row shows units still on nodes grants what the row leaves free at once (no learning pause), adopts what nodes report, and stays under the cap")
    func grantsFromRowWhileLearning() throws {
        let q = try budgets(quota: 1, rate: 0, allowance: 100)
        var m = try Self.machine(q, durable: true)
        _ = m.start()
        // The previous owner died: 60 granted, 20 consumed, so up to 40 may still be on nodes.
        m.loaded("q0", row: LedgerCounters(granted: 60, consumed: 20), windowStart: m.loadWindow("q0", now: t0)!, now: t0)
        let (answers, actions) = m.acquire([Self.ask(1, "q0", want: 100)], from: "n0", now: t0 + .milliseconds(1))
        #expect(answers.isEmpty, "held until recorded, not answered 'learning'")
        let w = try #require(Self.writes(actions).first)
        #expect(w.1.count == 1 && w.1[0].grant.amount == 40, "what the row leaves free: 100 − 60")
        guard case .grant(let g) = Self.sends(m.recorded(w.0, held: w.1, accepted: [true])).first?.1.first else {
            Issue.record("no grant"); return
        }
        #expect(g.amount == 40)
        // A node still holding 30 under the old owner's lease is adopted; nothing is left to add.
        var old = Self.ask(1, "q0", want: 50, node: "n1")
        old.leaseID = 7
        old.epoch = 1
        old.holding = 30
        let (a2, act2) = m.acquire([old], from: "n1", now: t0 + .milliseconds(2))
        #expect(Self.writes(act2).allSatisfy { $0.1.isEmpty })
        guard case .grant(let adopted) = a2.first else { Issue.record("no answer"); return }
        #expect(adopted.adopted && adopted.amount == 0)
    }

    @Test("a row read for a window that rolled over meanwhile is not taken, before or after the tick that rolls the books; the new window's row is")
    func rowOfRolledWindow() throws {
        let q = try BudgetSpec(id: "q0", unit: .requests, kind: .quota(allowance: 100, window: try CalendarWindow(.minute)))
        for tickFirst in [false, true] {
            var m = try Self.machine([q], durable: true)
            _ = m.start()
            let old = try #require(m.loadWindow("q0", now: t0))
            let end = try #require(m.allocator.window("q0")).end
            // The window ends while its row is read (the tick that rolls the books may come later).
            if tickFirst { _ = m.tick(now: end + .milliseconds(1)) }
            let new = try #require(m.loadWindow("q0", now: end + .milliseconds(1)))
            #expect(new > old)
            // The old window's row (all 100 used), taken for the new window, would starve it.
            let stale = m.loaded("q0", row: LedgerCounters(granted: 100, consumed: 100), windowStart: old, now: end + .milliseconds(2))
            #expect(!stale)
            #expect(m.loadWindow("q0", now: end + .milliseconds(2)) == new)
            let taken = m.loaded("q0", row: LedgerCounters(), windowStart: new, now: end + .milliseconds(3))
            #expect(taken)
            #expect(m.loadWindow("q0", now: end + .milliseconds(3)) == nil)
            let (_, actions) = m.acquire([Self.ask(1, "q0", want: 40)], from: "n0", now: end + .milliseconds(4))
            let w = try #require(Self.writes(actions).first)
            #expect(w.1.first?.grant.amount == 40, "tick first: \(tickFirst)")
        }
    }

    @Test("a new owner takes hostile ledger rows (every counter at the Int64 edges) without a trap, within the allowance")
    func hostileRows() throws {
        let edges: [Int64] = [.min, -1, 0, 60, 100, 101, Checked.maxUnits, .max]
        let q = try budgets(quota: 1, rate: 0, allowance: 100)
        for g in edges { for r in edges { for c in [Int64.min, 0, 50, .max] { for e in [Int64.min, 0, .max] {
            var m = try Self.machine(q, durable: true)
            _ = m.start()
            m.loaded("q0", row: LedgerCounters(granted: g, released: r, consumed: c, expired: e), windowStart: m.loadWindow("q0", now: t0)!, now: t0)
            let st = try #require(m.allocator.status("q0"))
            #expect(st.pool >= 0 && st.consumed + st.outstanding + st.pool <= 100, "row \(g) \(r) \(c) \(e): \(st)")
            #expect(m.allocator.checkInvariants() == nil, "row \(g) \(r) \(c) \(e)")
        } } } }
    }

    @Test("a record refused under the cap grants nothing and is taken back; nothing more is granted")
    func refused() throws {
        var m = try Self.resumed(quotaAllowance: 100)
        let (_, a1) = m.acquire([Self.ask(1, "q0", want: 40)], from: "n0", now: t0)
        let w1 = try #require(Self.writes(a1).first)
        // Another coordinator reached the cap first: the database refused the grants.
        guard case .grant(let nothing) = Self.sends(m.recorded(w1.0, held: w1.1, accepted: [false])).first?.1.first else {
            Issue.record("no answer"); return
        }
        #expect(nothing.amount == 0)
        #expect(m.counters.ledgerRefusals == 1 && m.counters.ledgerRevoked == 1)
        #expect(m.allocator.status("q0")!.outstanding == 0, "taken back")
        // The cap is reached: a new request is answered at once with nothing, no grant held.
        let (answers, more) = m.acquire([Self.ask(2, "q0", want: 10)], from: "n0", now: t0 + .milliseconds(2))
        #expect(Self.writes(more).allSatisfy { $0.1.isEmpty }, "\(more)")
        guard case .grant(let none) = answers.first else { Issue.record("no answer: \(answers)"); return }
        #expect(none.amount == 0)
    }

    @Test("a failed ledger write takes the grant back, tells the node to ask again later, and writes the reports again")
    func failedWrite() throws {
        var m = try Self.resumed(quotaAllowance: 100)
        let (_, a1) = m.acquire([Self.ask(1, "q0", want: 40)], from: "n0", now: t0)
        let w1 = try #require(Self.writes(a1).first)
        _ = m.recorded(w1.0, held: w1.1, accepted: [true])
        // The node asks again, reporting 30 used; the database is away for that write.
        let lease = w1.1[0].grant
        let again = AcquireRequest(requestID: 2, node: "n0", budget: "q0", want: 40, demandRate: 40, leaseID: lease.leaseID,
                                   epoch: lease.epoch, consumed: 30, holding: 10)
        let (_, a2) = m.acquire([again], from: "n0", now: t0 + .milliseconds(5))
        let w2 = try #require(Self.writes(a2).first)
        let after = m.recorded(w2.0, held: w2.1, accepted: nil)
        guard case .retryLater(_, let wait) = Self.sends(after).first?.1.first else { Issue.record("no retry-later"); return }
        #expect(wait > .zero)
        #expect(m.counters.ledgerRevoked == 1 && m.counters.ledgerRefusals == 0)
        let retry = Self.writes(after)
        #expect(!retry.isEmpty && retry.allSatisfy { $0.0.allSatisfy { $0.delta.granted == 0 } }, "\(retry)")
    }

    @Test("a node restarted under the same name is served at once (its new request ids are not stale); grants held for its old life are not sent to the new one")
    func nodeRestart() throws {
        var m = try Self.resumed(quotaAllowance: 1_000, rate: 1)
        m.hello(node: "n0", incarnation: 1)
        for id in 1...5 as ClosedRange<UInt64> { _ = m.acquire([Self.ask(id, "r0")], from: "n0", now: t0 + .milliseconds(Int64(id))) }
        let (_, held) = m.acquire([Self.ask(6, "q0")], from: "n0", now: t0 + .milliseconds(6))
        let w = try #require(Self.writes(held).first)
        // A new life: request ids start from 1 again.
        m.hello(node: "n0", incarnation: 2)
        #expect(m.counters.nodeRestarts == 1)
        // Answered, not dropped as stale; the old life's lease holds the whole bucket until it ends.
        guard case .grant = m.acquire([Self.ask(1, "r0")], from: "n0", now: t0 + .milliseconds(10)).0.first else {
            Issue.record("the new life's first request was not answered"); return
        }
        _ = m.tick(now: t0 + fastAllocator.leaseTTL + .milliseconds(100))
        guard case .grant(let g) = m.acquire([Self.ask(2, "r0")], from: "n0", now: t0 + fastAllocator.leaseTTL + .milliseconds(100)).0.first else {
            Issue.record("the new life was not granted"); return
        }
        #expect(g.capacity > 0)
        // The old life's held grant is recorded, but not sent to the new life.
        #expect(Self.sends(m.recorded(w.0, held: w.1, accepted: [true])).isEmpty)
        // The same hello again (a reconnect, not a restart) changes nothing.
        m.hello(node: "n0", incarnation: 2)
        #expect(m.counters.nodeRestarts == 1)
    }
}

/// When the shell must wake the machine (`nextWake`), instead of polling it.
@Suite("Wake-ups in virtual time")
struct WakeTests {
    @Test("the machine names its next deadline: none while nothing is out, a lease's end once one is, and ticking then expires it")
    func leaseEnd() throws {
        var m = try DurableAndRestartTests.machine(try budgets(quota: 0, rate: 1), durable: false)
        #expect(m.nextWake == .distantFuture, "nothing is out: nothing to wake for")
        _ = m.acquire([DurableAndRestartTests.ask(1, "r0")], from: "n0", now: t0)
        let wake = m.nextWake
        #expect(wake > t0 && wake <= t0 + fastAllocator.leaseTTL, "\(wake)")
        #expect(m.allocator.status("r0")!.holders == 1)
        // Woken at each deadline (and only then), the unrenewed lease ends by its TTL.
        var now = t0
        while m.nextWake <= t0 + fastAllocator.leaseTTL * 2 {
            now = m.nextWake
            _ = m.tick(now: now)
        }
        #expect(m.allocator.status("r0")!.holders == 0 && now <= t0 + fastAllocator.leaseTTL * 2)
    }

    @Test("with tier budgets, a retirement round every second")
    func retirementRounds() throws {
        var s = CoordinatorMachine.Settings()
        s.allocator = fastAllocator
        s.tiers = [try Tier(name: "pro", templates: [try BudgetTemplate(name: "rpm", unit: .requests, kind: .rate(limit: 60, period: .seconds(60), burst: 60), scope: [.consumer])])]
        var m = try CoordinatorMachine(settings: s, budgets: [], now: t0)
        #expect(m.nextWake == .distantFuture)
        _ = m.acquire([DurableAndRestartTests.ask(1, "pro.rpm/consumer=alice")], from: "n0", now: t0)
        #expect(m.allocator.contains("pro.rpm/consumer=alice"))
        _ = m.tick(now: t0)
        #expect(m.nextWake <= t0 + .seconds(1))
    }
}
