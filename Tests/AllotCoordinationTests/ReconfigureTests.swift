import AllotCoordination
import AllotCore
import Testing

/// A new configuration version in force on a coordinator (`CoordinatorMachine.reconfigure`),
/// in virtual time: tier budgets already made take the new template's terms; deleted budgets
/// go; new ones learn; a bad configuration changes nothing.
@Suite("Configuration changed at run time")
struct ReconfigureTests {
    static func tier(tpm: Int64) throws -> Tier {
        try Tier(name: "pro", templates: [try BudgetTemplate(name: "tpm", unit: .tokens, kind: .rate(limit: tpm, period: .seconds(60), burst: tpm),
                                                             scope: [.consumer])])
    }

    /// A coordinator with the pro tier's tokens/min at `tpm` and no explicit budget.
    static func machine(tpm: Int64) throws -> CoordinatorMachine {
        var s = CoordinatorMachine.Settings()
        s.allocator = fastAllocator
        s.tiers = [try tier(tpm: tpm)]
        return try CoordinatorMachine(settings: s, budgets: [], now: t0)
    }

    static func pushes(_ actions: [CoordinatorMachine.Action]) -> [Push] {
        actions.flatMap { a -> [Push] in
            if case .push(let p) = a { return p }
            return []
        }
    }

    @Test("a tier's tokens/min lowered 10×: every budget made from it takes the new terms; holders are recalled; raised back, the pool grows at once")
    func tierLoweredAndRaised() throws {
        var m = try Self.machine(tpm: 60_000)
        let id: BudgetID = "pro.tpm/consumer=alice"
        // Three nodes ask in rounds, each showing it applied the last terms it got, until all hold a share.
        var last: [NodeID: Grant] = [:]
        for round in 0..<6 {
            for n in [NodeID("n0"), NodeID("n1"), NodeID("n2")] {
                let g = last[n]
                let req = AcquireRequest(requestID: UInt64(round + 1), node: n, budget: id, want: 20_000, demandRate: 20_000,
                                         leaseID: g?.leaseID ?? 0, available: 0, rateInUse: g?.rate ?? 0, capacityInUse: g?.capacity ?? 0,
                                         appliedSequence: g?.sequence ?? 0)
                let (answers, actions) = m.acquire([req], from: n, now: t0 + .milliseconds(100 * round))
                if case .grant(let granted) = answers.first { last[n] = granted }
                for p in Self.pushes(actions) { last[p.node] = p.grant }
            }
        }
        _ = m.acquire([DurableAndRestartTests.ask(1, "pro.tpm/consumer=bob", want: 100)], from: "n0", now: t0)
        let before = try #require(m.allocator.status(id))
        #expect(before.holders == 3)
        let (report, actions) = try m.reconfigure(budgets: [], tiers: [try Self.tier(tpm: 6_000)], softLimits: SoftLimitTable(), now: t0 + .seconds(1))
        #expect(Set(report.changed) == [id, "pro.tpm/consumer=bob"] && report.removed.isEmpty && report.added.isEmpty)
        #expect(Set(Self.pushes(actions).filter { $0.grant.budget == id }.map(\.node)).count == 3)
        #expect(m.allocator.spec(id)?.kind == .rate(limit: 6_000, period: .seconds(60), burst: 6_000))
        #expect(m.allocator.isDraining(id) && m.allocator.checkInvariants() == nil)
        // A consumer's budget made after the change has the new terms from the start.
        _ = m.acquire([DurableAndRestartTests.ask(1, "pro.tpm/consumer=carol", want: 100)], from: "n0", now: t0 + .seconds(1))
        #expect(m.allocator.spec("pro.tpm/consumer=carol")?.kind.ceiling == 6_000)
        // Raised back before the recalls were applied: in force at once, nothing counted twice.
        let (raised, _) = try m.reconfigure(budgets: [], tiers: [try Self.tier(tpm: 60_000)], softLimits: SoftLimitTable(), now: t0 + .seconds(2))
        #expect(raised.changed.contains(id))
        let st = try #require(m.allocator.status(id))
        #expect(st.pool + st.outstanding <= 60_000 && st.committedRate <= 60_000)
        #expect(m.allocator.checkInvariants() == nil)
    }

    @Test("a budget deleted goes (its holders told to stop at once, then unknown budget); one added learns for a lease TTL; another kind under the same id is a new budget")
    func addedRemovedReplaced() throws {
        var s = CoordinatorMachine.Settings()
        s.allocator = fastAllocator
        let r0 = try BudgetSpec(id: "r0", unit: .requests, kind: .rate(limit: 100, period: .seconds(1), burst: 100))
        let c0 = try BudgetSpec(id: "c0", unit: .requests, kind: .concurrency(limit: 4))
        var m = try CoordinatorMachine(settings: s, budgets: [r0, c0], now: t0)
        _ = m.acquire([DurableAndRestartTests.ask(1, "r0"), DurableAndRestartTests.ask(2, "c0")], from: "n0", now: t0)
        let r1 = try BudgetSpec(id: "r1", unit: .requests, kind: .rate(limit: 50, period: .seconds(1), burst: 50))
        let c0AsRate = try BudgetSpec(id: "c0", unit: .requests, kind: .rate(limit: 10, period: .seconds(1), burst: 10))
        let (report, actions) = try m.reconfigure(budgets: [c0AsRate, r1], tiers: [], softLimits: SoftLimitTable(), now: t0 + .seconds(1))
        #expect(report.removed == ["r0"] && report.added == ["r1"] && report.replaced == ["c0"])
        // The deleted budget's lease is withdrawn: its holder is told to stop using it at once.
        let withdrawn = Self.pushes(actions).filter { $0.grant.budget == "r0" }
        #expect(withdrawn.count == 1 && withdrawn[0].node == "n0" && withdrawn[0].grant.rate == 0 && withdrawn[0].grant.capacity == 0, "\(withdrawn)")
        let (answers, _) = m.acquire([DurableAndRestartTests.ask(3, "r0"), DurableAndRestartTests.ask(4, "r1")], from: "n0", now: t0 + .seconds(1))
        #expect(answers.first == .unknownBudget(requestID: 3, budget: "r0"))
        #expect(m.allocator.status("r1")?.learning == true && m.allocator.status("c0")?.learning == true)
        if case .grant(let g) = answers.last { #expect(g.amount == 0 && g.rate == 0) } else { Issue.record("r1: \(answers)") }
        _ = m.tick(now: t0 + .seconds(4))
        #expect(m.allocator.status("r1")?.learning == false)
    }

    @Test("a configuration that cannot be taken (an id twice) changes nothing")
    func refused() throws {
        var s = CoordinatorMachine.Settings()
        s.allocator = fastAllocator
        let r0 = try BudgetSpec(id: "r0", unit: .requests, kind: .rate(limit: 100, period: .seconds(1), burst: 100))
        var m = try CoordinatorMachine(settings: s, budgets: [r0], now: t0)
        let low = try BudgetSpec(id: "r0", unit: .requests, kind: .rate(limit: 1, period: .seconds(1), burst: 1))
        #expect(throws: AllotError.self) { try m.reconfigure(budgets: [low, low], tiers: [], softLimits: SoftLimitTable(), now: t0) }
        #expect(m.allocator.spec("r0") == r0)
    }

    @Test("a tier removed and restored within a lease TTL (a rollback): its budgets made again learn first; after a TTL they need not")
    func removedAndRestored() throws {
        var m = try Self.machine(tpm: 6_000)
        let id: BudgetID = "pro.tpm/consumer=alice"
        _ = m.acquire([DurableAndRestartTests.ask(1, id, want: 6_000)], from: "n0", now: t0)
        #expect(m.allocator.status(id)?.holders == 1)
        let (gone, _) = try m.reconfigure(budgets: [], tiers: [], softLimits: SoftLimitTable(), now: t0 + .seconds(1))
        #expect(gone.removed == [id])
        _ = try m.reconfigure(budgets: [], tiers: [try Self.tier(tpm: 6_000)], softLimits: SoftLimitTable(), now: t0 + .seconds(1))
        let (answers, _) = m.acquire([DurableAndRestartTests.ask(1, id, want: 6_000, node: "n1")], from: "n1", now: t0 + .milliseconds(1_100))
        #expect(m.allocator.status(id)?.learning == true, "n0 may still hold the old budget's lease")
        if case .grant(let g) = answers.first { #expect(g.rate == 0 && g.capacity == 0) } else { Issue.record("\(answers)") }
        // Removed again, and made long after: fresh.
        _ = try m.reconfigure(budgets: [], tiers: [], softLimits: SoftLimitTable(), now: t0 + .seconds(2))
        _ = try m.reconfigure(budgets: [], tiers: [try Self.tier(tpm: 6_000)], softLimits: SoftLimitTable(), now: t0 + .seconds(2))
        _ = m.tick(now: t0 + .seconds(6))
        _ = m.acquire([DurableAndRestartTests.ask(2, id, want: 6_000, node: "n1")], from: "n1", now: t0 + .seconds(6))
        #expect(m.allocator.status(id)?.learning == false)
    }
}
