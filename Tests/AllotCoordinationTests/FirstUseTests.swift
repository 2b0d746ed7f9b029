import AllotCluster
import AllotCoordination
import AllotCore
import Testing

/// A budget made on first use (a new consumer's tier budget) right after a cluster formed:
/// ownership "moved recently" for every budget then, so without proof it is learned for a
/// lease TTL and a new consumer's first requests are refused. With a ledger, its making is
/// claimed first: the first coordinator ever to make it grants from a full pool at once; a
/// budget made before (it existed: nodes may hold its leases) is still learned.
@Suite("Budgets made on first use: claimed in the ledger, in virtual time")
struct FirstUseTests {
    static let me = MemberID(name: "c0", address: "c0:7000")
    static let all = [me, MemberID(name: "c1", address: "c1:7000"), MemberID(name: "c2", address: "c2:7000")]

    /// c0 in a three-member cluster formed at t0, with one tier; the consumer whose budget c0 owns.
    static func formed(durable: Bool) throws -> (CoordinatorMachine, BudgetID) {
        var s = CoordinatorMachine.Settings()
        s.member = me
        s.quorum = 2
        s.durable = durable
        s.allocator = fastAllocator
        s.tiers = [try Tier(name: "pro", templates: [try BudgetTemplate(name: "rpm", unit: .requests, kind: .rate(limit: 100, period: .seconds(1), burst: 100), scope: [.consumer])])]
        var m = try CoordinatorMachine(settings: s, budgets: [], now: t0)
        _ = m.viewChanged(all, now: t0)
        let id = try #require((0..<100).lazy.map { BudgetID("pro.rpm/consumer=user\($0)") }.first { Rendezvous.owner(of: $0, among: all) == me })
        #expect(m.view!.movedRecently(id, now: t0 + .milliseconds(100)), "formation makes every budget 'moved' for a TTL")
        return (m, id)
    }

    static func ask(_ m: inout CoordinatorMachine, _ id: BudgetID, _ request: UInt64, at t: Instant) -> ([CoordinatorMachine.Answer], [CoordinatorMachine.Action]) {
        m.acquire([AcquireRequest(requestID: request, node: "n0", budget: id, want: 10, demandRate: 10)], from: "n0", now: t)
    }

    @Test("never made anywhere (the ledger's first record): unavailable for one ledger round trip, then granted from a full pool")
    func fresh() throws {
        var (m, id) = try Self.formed(durable: true)
        let t = t0 + .milliseconds(100)
        let (first, actions) = Self.ask(&m, id, 1, at: t)
        #expect(first == [.unavailable(requestID: 1, budget: id, retryAfter: .milliseconds(10))])
        #expect(actions.contains { if case .claimBudget(id) = $0 { true } else { false } })
        #expect(m.isClaiming(id))
        // Asked again before the ledger answered: still waiting, no second claim.
        let (again, more) = Self.ask(&m, id, 2, at: t + .milliseconds(5))
        #expect(again == [.unavailable(requestID: 2, budget: id, retryAfter: .milliseconds(20))])
        #expect(!more.contains { if case .claimBudget = $0 { true } else { false } })
        m.claimed(id, fresh: true, now: t + .milliseconds(8))
        #expect(!m.isClaiming(id) && m.allocator.status(id)?.learning == false)
        guard case .grant(let g) = Self.ask(&m, id, 3, at: t + .milliseconds(15)).0.first else { Issue.record("no grant"); return }
        #expect(g.amount > 0, "served within the first 100 ms, though the cluster formed a moment ago")
        #expect(m.counters.budgetsClaimed["new"] == 1)
    }

    @Test("made before (the ledger has its record): learned for a lease TTL when ownership moved lately, as before")
    func existed() throws {
        var (m, id) = try Self.formed(durable: true)
        let t = t0 + .milliseconds(100)
        _ = Self.ask(&m, id, 1, at: t)
        m.claimed(id, fresh: false, now: t + .milliseconds(8))
        #expect(m.allocator.status(id)?.learning == true)
        guard case .grant(let g) = Self.ask(&m, id, 2, at: t + .milliseconds(15)).0.first else { Issue.record("no answer"); return }
        #expect(g.amount == 0)
        #expect(m.counters.budgetsClaimed["existed"] == 1)
    }

    @Test("without a ledger nothing proves it new: learned for a lease TTL after formation (unchanged)")
    func noLedger() throws {
        var (m, id) = try Self.formed(durable: false)
        let (answers, actions) = Self.ask(&m, id, 1, at: t0 + .milliseconds(100))
        #expect(!actions.contains { if case .claimBudget = $0 { true } else { false } })
        guard case .grant(let g) = answers.first else { Issue.record("no answer"); return }
        #expect(g.amount == 0 && m.allocator.status(id)?.learning == true)
    }

    @Test("ownership lost while the claim is out: the late answer changes nothing")
    func lostMeanwhile() throws {
        var (m, id) = try Self.formed(durable: true)
        _ = Self.ask(&m, id, 1, at: t0 + .milliseconds(100))
        _ = m.viewChanged([Self.me], now: t0 + .milliseconds(150))
        #expect(!m.isClaiming(id) && !m.allocator.contains(id))
        m.claimed(id, fresh: true, now: t0 + .milliseconds(160))
        #expect(!m.allocator.contains(id))
    }

    @Test("a cluster's first formation (the ledger has no record of its budgets): configured rate budgets are claimed and start full; formed again after a restart (records there) they learn")
    func firstFormation() throws {
        var s = CoordinatorMachine.Settings()
        s.member = Self.me
        s.quorum = 2
        s.durable = true
        s.allocator = fastAllocator
        let specs = try (0..<12).map { try BudgetSpec(id: BudgetID("r\($0)"), unit: .requests, kind: .rate(limit: 100, period: .seconds(1), burst: 100)) }
        let mine = specs.filter { Rendezvous.owner(of: $0.id, among: Self.all) == Self.me }.map(\.id)
        #expect(!mine.isEmpty)
        for fresh in [true, false] {
            var m = try CoordinatorMachine(settings: s, budgets: specs, now: t0)
            let actions = m.viewChanged(Self.all, now: t0)
            let claims = actions.compactMap { if case .claimBudget(let b) = $0 { b } else { nil } }
            #expect(Set(claims) == Set(mine), "every budget it owns is claimed, nothing learned yet")
            for b in mine { m.claimed(b, fresh: fresh, now: t0 + .milliseconds(5)) }
            guard case .grant(let g) = Self.ask(&m, mine[0], 1, at: t0 + .milliseconds(10)).0.first else { Issue.record("no answer"); return }
            if fresh {
                #expect(g.amount > 0 && mine.allSatisfy { m.allocator.status($0)?.learning == false }, "first formation: full at once")
            } else {
                #expect(g.amount == 0 && mine.allSatisfy { m.allocator.status($0)?.learning == true }, "a restart: learned for a TTL")
            }
        }
    }
}
