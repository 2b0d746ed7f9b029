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

    /// The claim the machine asked for, with its generation.
    static func claim(_ actions: [CoordinatorMachine.Action]) -> (BudgetID, UInt64)? {
        actions.lazy.compactMap { if case .claimBudget(let b, let g) = $0 { (b, g) } else { nil } }.first
    }

    @Test("never made anywhere (the ledger's first record): unavailable for one ledger round trip, then granted from a full pool")
    func fresh() throws {
        var (m, id) = try Self.formed(durable: true)
        let t = t0 + .milliseconds(100)
        let (first, actions) = Self.ask(&m, id, 1, at: t)
        #expect(first == [.unavailable(requestID: 1, budget: id, retryAfter: .milliseconds(10))])
        let (claimed, generation) = try #require(Self.claim(actions))
        #expect(claimed == id && m.isClaiming(id, generation: generation))
        // Asked again before the ledger answered: still waiting, no second claim.
        let (again, more) = Self.ask(&m, id, 2, at: t + .milliseconds(5))
        #expect(again == [.unavailable(requestID: 2, budget: id, retryAfter: .milliseconds(20))])
        #expect(Self.claim(more) == nil)
        m.claimed(id, generation: generation, .new, now: t + .milliseconds(8))
        #expect(!m.isClaiming(id, generation: generation) && m.allocator.status(id)?.learning == false)
        guard case .grant(let g) = Self.ask(&m, id, 3, at: t + .milliseconds(15)).0.first else { Issue.record("no grant"); return }
        #expect(g.amount > 0, "served within the first 100 ms, though the cluster formed a moment ago")
        #expect(m.counters.budgetsClaimed["new"] == 1)
    }

    @Test("made before by another coordinator, or unknown (the ledger failed): learned for a lease TTL, even where this one's view did not move (it may be stale)")
    func existed() throws {
        for answer in [ClaimAnswer.madeBy("c2"), .madeBy("")] {
            var (m, id) = try Self.formed(durable: true)
            let t = t0 + fastAllocator.leaseTTL * 3 // long after formation: the view did not move
            #expect(!m.view!.movedRecently(id, now: t))
            let (_, generation) = try #require(Self.claim(Self.ask(&m, id, 1, at: t).1))
            m.claimed(id, generation: generation, answer, now: t + .milliseconds(8))
            #expect(m.allocator.status(id)?.learning == true, "\(answer)")
            guard case .grant(let g) = Self.ask(&m, id, 2, at: t + .milliseconds(15)).0.first else { Issue.record("no answer"); return }
            #expect(g.amount == 0)
        }
    }

    @Test("made last by this coordinator, its ownership settled: served at once, as without a ledger")
    func madeByMe() throws {
        var (m, id) = try Self.formed(durable: true)
        let t = t0 + fastAllocator.leaseTTL * 3
        let (_, generation) = try #require(Self.claim(Self.ask(&m, id, 1, at: t).1))
        m.claimed(id, generation: generation, .madeBy("c0"), now: t + .milliseconds(8))
        #expect(m.allocator.status(id)?.learning == false && m.counters.budgetsClaimed["existed"] == 1)
    }

    @Test("without a ledger nothing proves it new: learned for a lease TTL after formation (unchanged)")
    func noLedger() throws {
        var (m, id) = try Self.formed(durable: false)
        let (answers, actions) = Self.ask(&m, id, 1, at: t0 + .milliseconds(100))
        #expect(Self.claim(actions) == nil)
        guard case .grant(let g) = answers.first else { Issue.record("no answer"); return }
        #expect(g.amount == 0 && m.allocator.status(id)?.learning == true)
    }

    @Test("ownership lost while the claim is out, then made again: the first claim's late answer changes nothing")
    func lostMeanwhile() throws {
        var (m, id) = try Self.formed(durable: true)
        let (_, old) = try #require(Self.claim(Self.ask(&m, id, 1, at: t0 + .milliseconds(100)).1))
        _ = m.viewChanged([Self.me], now: t0 + .milliseconds(150))
        #expect(!m.isClaiming(id, generation: old) && !m.allocator.contains(id))
        _ = m.viewChanged(Self.all, now: t0 + .seconds(1))
        let (_, again) = try #require(Self.claim(Self.ask(&m, id, 2, at: t0 + .seconds(1)).1))
        #expect(again != old)
        m.claimed(id, generation: old, .new, now: t0 + .seconds(1) + .milliseconds(5))
        #expect(m.isClaiming(id, generation: again), "the old answer is not this claim's")
        m.claimed(id, generation: again, .madeBy("c1"), now: t0 + .seconds(1) + .milliseconds(6))
        #expect(m.allocator.status(id)?.learning == true)
    }
}
