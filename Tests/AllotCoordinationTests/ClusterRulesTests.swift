import AllotCluster
import AllotCoordination
import AllotCore
import AllotSimulator
import Testing

let t0 = Instant(nanoseconds: 1_780_000_000_000_000_000)

let fastAllocator: AllocatorSettings = {
    var a = AllocatorSettings()
    a.leaseTTL = .seconds(2)
    a.refreshInterval = .milliseconds(200)
    return a
}()

func budgets(quota: Int, rate: Int, allowance: Int64 = 1_500, limit: Int64 = 200) throws -> [BudgetSpec] {
    var out: [BudgetSpec] = []
    for i in 0..<quota {
        out.append(try BudgetSpec(id: BudgetID("q\(i)"), unit: .requests, kind: .quota(allowance: allowance, window: try CalendarWindow(.month))))
    }
    for i in 0..<rate {
        out.append(try BudgetSpec(id: BudgetID("r\(i)"), unit: .requests, kind: .rate(limit: limit, period: .seconds(1), burst: limit)))
    }
    return out
}

/// A gateway node's real `Enforcer` with `budgets` registered, on the coordinators' lease terms.
func node(_ name: String, budgets: [BudgetSpec], allocator: AllocatorSettings) throws -> (Enforcer, [BudgetID: BudgetHandle]) {
    var s = EnforcerSettings(node: NodeID(name))
    s.leaseTTL = allocator.leaseTTL
    s.refreshInterval = allocator.refreshInterval
    s.renewMargin = allocator.leaseTTL / 3
    var e = try Enforcer(settings: s)
    var h: [BudgetID: BudgetHandle] = [:]
    for b in budgets { h[b.id] = e.register(b) }
    return (e, h)
}

/// The cluster's rules through `CoordinatorMachine`s in virtual time: ownership, redirects,
/// quorum, failover with learning and the shared ledger. Deterministic, no sockets, no clock.
@Suite("Cluster rules in virtual time")
struct ClusterRulesTests {
    static let names = ["c0", "c1", "c2"]

    @Test("three members split the budgets by rendezvous; a node with a stale view is redirected and then served everywhere")
    func formation() throws {
        let specs = try budgets(quota: 6, rate: 6)
        var c = try VirtualCluster(coordinators: Self.names, nodes: 4, budgets: specs, allocator: fastAllocator, durable: true, now: t0)
        c.viewChanged(Self.names)
        c.run(for: .milliseconds(20))
        // Node 0 still believes c0 is alone: everything it asks goes to c0 first.
        c.nodeView[0] = [c.members[0]]
        c.run(for: .seconds(3)) { _ in 1 }
        for b in specs {
            let holders = Self.names.filter { c.coordinators[$0]!.allocator.contains(b.id) }
            #expect(holders == [Rendezvous.owner(of: b.id, among: c.members)!.name], "\(b.id) held by \(holders)")
        }
        let redirects = Self.names.map { c.coordinators[$0]!.counters.redirects }.reduce(0, +)
        #expect(redirects > 0)
        // After formation's learning (one lease TTL), every node admitted on every budget: node
        // 0 too, through the redirects.
        for n in 0..<4 {
            for b in specs { #expect(c.admittedBy[n][b.id, default: 0] > 20, "n\(n) \(b.id): \(c.admittedBy[n][b.id, default: 0])") }
        }
    }

    @Test("below its quorum a member drops every budget and grants nothing; with it back, it learns for a lease TTL before granting")
    func quorum() throws {
        let me = MemberID(name: "c0", address: "c0:7000")
        let others = [MemberID(name: "c1", address: "c1:7000"), MemberID(name: "c2", address: "c2:7000")]
        var s = CoordinatorMachine.Settings()
        s.member = me
        s.quorum = 2
        s.allocator = fastAllocator
        let specs = try (0..<12).map { try BudgetSpec(id: BudgetID("r\($0)"), unit: .requests, kind: .rate(limit: 100, period: .seconds(1), burst: 100)) }
        var m = try CoordinatorMachine(settings: s, budgets: specs, now: t0)
        _ = m.viewChanged([me] + others, now: t0)
        #expect(m.view!.serving)
        let mine = specs.filter { Rendezvous.owner(of: $0.id, among: [me] + others) == me }
        #expect(!mine.isEmpty)
        func ask(_ b: BudgetSpec, _ id: UInt64, at t: Instant) -> CoordinatorMachine.Answer? {
            m.acquire([AcquireRequest(requestID: id, node: "n", budget: b.id, want: 10, demandRate: 10)], from: "n", now: t).0.first
        }
        // Partitioned away from both others: a minority of one.
        _ = m.viewChanged([me], now: t0 + .seconds(1))
        #expect(!m.view!.serving)
        #expect(specs.allSatisfy { !m.allocator.contains($0.id) })
        #expect(ask(mine[0], 1, at: t0 + .seconds(1)) == .unavailable(requestID: 1, budget: mine[0].id, retryAfter: .milliseconds(20)))
        // Healed: serving again, but its budgets are learned first (the majority granted them meanwhile).
        _ = m.viewChanged([me] + others, now: t0 + .seconds(5))
        #expect(m.view!.serving)
        #expect(mine.allSatisfy { m.allocator.status($0.id)?.learning == true })
        guard case .grant(let during) = ask(mine[0], 2, at: t0 + .seconds(5)) else { Issue.record("no answer"); return }
        #expect(during.amount == 0 && during.capacity == 0)
        _ = m.tick(now: t0 + .seconds(8))
        guard case .grant(let after) = ask(mine[0], 3, at: t0 + .seconds(8)) else { Issue.record("no answer"); return }
        #expect(after.capacity > 0)
    }

    @Test("failover: the owner of quotas and rate budgets crashes under load, half the nodes never hear of it, the ledger is away during the takeover; quotas never exceed the ledger's cap, rates stay within the bucket, moved budgets are served again")
    func failover() throws {
        let specs = try budgets(quota: 6, rate: 6)
        var c = try VirtualCluster(coordinators: Self.names, nodes: 8, budgets: specs, allocator: fastAllocator, durable: true, now: t0)
        c.viewChanged(Self.names)
        c.run(for: .seconds(3)) { _ in 0 }
        // 8 nodes each try 1 request per budget per 10 ms (800/s against 200/s rates and
        // quotas of 1,500 that run out); the owner of r0 crashes after 2 s of it and the
        // survivors notice 0.5 s later. Half the nodes never hear of the new view and spend
        // the leases they hold from it until they end: the new owners must learn first.
        let victim = Rendezvous.owner(of: "r0", among: c.members)!.name
        let moved = specs.filter { Rendezvous.owner(of: $0.id, among: c.members)!.name == victim }.map(\.id)
        #expect(moved.contains { $0.rawValue.hasPrefix("q") } && moved.contains { $0.rawValue.hasPrefix("r") })
        c.run(for: .seconds(2)) { _ in 1 }
        c.crash(victim)
        c.deaf = [0, 1, 2, 3]
        let crashedAt = c.now
        c.run(for: .milliseconds(500)) { _ in 1 }
        // The survivors take over while the database is away for 300 ms: the moved quotas'
        // rows are read again until they arrive, grants wait or are taken back.
        c.ledgerDown = true
        c.viewChanged(Self.names.filter { $0 != victim })
        c.run(for: .milliseconds(300)) { _ in 1 }
        c.ledgerDown = false
        c.run(for: .milliseconds(3_700)) { _ in 1 }
        let quotas = specs.filter(\.kind.isQuota).map { c.admitted[$0.id, default: []].count }
        let excess = specs.filter { !$0.kind.isQuota }.map { BudgetChecker.replay(times: c.admitted[$0.id, default: []], spec: $0).excess }
        print("failover (virtual time): quotas admitted \(quotas.min()!)–\(quotas.max()!) of 1,500; rate excess \(excess.max()!); moved \(moved.map(\.rawValue).sorted())")
        for b in specs where b.kind.isQuota {
            let total = c.admitted[b.id, default: []].count
            #expect(total <= 1_500 && total >= 1_000, "\(b.id): \(total) admitted of 1,500")
            let row = c.ledger[b.id]!.values.first!
            #expect(row.committed <= 1_500)
        }
        for b in specs where !b.kind.isQuota {
            let times = c.admitted[b.id, default: []]
            let over = BudgetChecker.replay(times: times, spec: b).excess
            #expect(over <= 2, "\(b.id): \(over) over the bucket")
            #expect(times.count > 1_000, "\(b.id): \(times.count)")
        }
        // The moved rate budgets were served again after detection plus one lease TTL of learning.
        for b in moved where b.rawValue.hasPrefix("r") {
            let after = c.admitted[b]!.filter { $0 > (crashedAt + .milliseconds(500) + fastAllocator.leaseTTL).nanoseconds }
            #expect(after.count > 100, "\(b): \(after.count) admitted after the takeover")
        }
    }

    @Test("a member that appears lately keeps the budgets it may have granted in learning until it has seen this one")
    func peerSeesMe() throws {
        let members = Self.names.map { MemberID(name: $0, address: "\($0):7000") }
        var s = CoordinatorMachine.Settings()
        s.member = members[0]
        s.allocator = fastAllocator
        let specs = try budgets(quota: 0, rate: 24)
        var m = try CoordinatorMachine(settings: s, budgets: specs, now: t0)
        _ = m.viewChanged(Array(members[0...1]), now: t0)
        _ = m.tick(now: t0 + .seconds(3))
        let mine = specs.map(\.id).filter { m.allocator.contains($0) }
        #expect(mine.allSatisfy { m.allocator.status($0)?.learning == false })
        // c2 appears; it may have granted c0's budgets whose next owner it is, while cut off.
        _ = m.viewChanged(members, now: t0 + .seconds(4))
        let altC2 = mine.filter { m.allocator.contains($0) && m.view!.alternate(of: $0)?.name == "c2" }
        #expect(!altC2.isEmpty)
        #expect(altC2.allSatisfy { m.allocator.status($0)?.learning == true })
        // It probes c0 a second later: learning runs one lease TTL from then.
        m.peerSeesMe(members[2], now: t0 + .seconds(5))
        _ = m.tick(now: t0 + .seconds(6) + .milliseconds(500))
        #expect(altC2.allSatisfy { m.allocator.status($0)?.learning == true })
        _ = m.tick(now: t0 + .seconds(7) + .milliseconds(100))
        #expect(altC2.allSatisfy { m.allocator.status($0)?.learning == false })
    }
}
