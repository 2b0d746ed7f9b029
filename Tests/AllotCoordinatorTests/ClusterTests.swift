import AllotCluster
import AllotCore
import AllotCoordinator
import AllotNode
import AllotSimulator
import AllotTransport
import AllotWire
import Foundation
import Testing

/// Coordinators as a cluster, in process: gossip over the protocol's sessions, ownership by
/// rendezvous, redirects, and failover of a crashed coordinator with learning mode and a
/// shared ledger.
@Suite("Coordinator cluster", .serialized)
struct ClusterTests {
    static let addresses = ["c0:7000", "c1:7000", "c2:7000"]

    var allocator: AllocatorSettings { fastAllocator }

    static func budgets(quota: Int, rate: Int) throws -> [BudgetSpec] {
        var out: [BudgetSpec] = []
        for i in 0..<quota {
            out.append(try BudgetSpec(id: BudgetID("q\(i)"), unit: .requests, kind: .quota(allowance: 1500, window: try CalendarWindow(.month))))
        }
        for i in 0..<rate {
            out.append(try BudgetSpec(id: BudgetID("r\(i)"), unit: .requests, kind: .rate(limit: 200, period: .seconds(1), burst: 200)))
        }
        return out
    }

    /// Three coordinators sharing one SQLite ledger file (quota budgets in a cluster need a ledger).
    func formCluster(_ h: Harness, budgets: [BudgetSpec], ledgerPath: String = tempPath("ledger.db")) async throws {
        for (i, a) in Self.addresses.enumerated() {
            let store = try SQLiteLedger.open(path: ledgerPath)
            try await h.start("c\(i)", address: a, budgets: budgets, seeds: Self.addresses, ledger: store, allocator: allocator)
        }
        await h.wait(5) { Self.addresses.allSatisfy { h.core($0)?.members.list.count == 3 } }
    }

    @Test("rumours do not make members: a piggybacked member, or a coordinator certificate outside cluster.members, never counts for ownership or quorum")
    func rumoursDoNotCount() async throws {
        let h = Harness()
        let budgets = try Self.budgets(quota: 0, rate: 6)
        for (i, a) in Self.addresses.enumerated() {
            try await h.start("c\(i)", address: a, budgets: budgets, seeds: Self.addresses, allocator: allocator)
        }
        await h.wait(5) { Self.addresses.allSatisfy { h.core($0)?.members.list.count == 3 } }
        let target = Self.addresses[0]
        // c1's certificate (a real member) spreads a member nobody configured; c9's certificate
        // (a valid coordinator, not a member) announces itself.
        for (name, update) in [("c1", MemberID(name: "ghost", address: "10.9.9.9:1")), ("c9", MemberID(name: "c9", address: "10.9.9.9:2"))] {
            let conn = try await h.dial(as: .coordinator, name)(target)!.connect(onFrame: { _ in }, onClose: {})
            let from = name == "c1" ? MemberID(name: "c1", address: Self.addresses[1]) : update
            let envelope = Membership.Envelope(from: from, to: MemberID(name: "c0", address: target), message: .ping(seq: 0),
                                               updates: [Membership.Update(member: update, incarnation: 1, state: .alive)])
            conn.send([.hello(name: name), envelope.wire])
        }
        // Watched until membership itself gives up on them (they never answer a probe).
        var seen = Set<String>()
        for _ in 0..<60 {
            for a in Self.addresses { seen.formUnion(h.core(a)!.members.list.map(\.name)) }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(seen == ["c0", "c1", "c2"], "counted: \(seen.sorted())")
        await h.stopAll()
    }

    @Test("three coordinators form one view and split the budgets between them by rendezvous")
    func formation() async throws {
        let h = Harness()
        let budgets = try Self.budgets(quota: 6, rate: 6)
        try await formCluster(h, budgets: budgets)
        let views = Self.addresses.map { h.core($0)!.members.list }
        #expect(views.allSatisfy { $0.count == 3 && $0 == views[0] })
        // Every budget is served by exactly one coordinator, its rendezvous owner.
        for b in budgets {
            let holders = Self.addresses.filter { h.core($0)!.allocatorStatus(b.id) != nil }
            let owner = Rendezvous.owner(of: b.id, among: views[0])!
            #expect(holders == [owner.address], "\(b.id) held by \(holders), owner \(owner)")
        }
        // A budget sent to a coordinator that does not own it is redirected, not granted.
        let b = budgets[0].id
        let owner = Rendezvous.owner(of: b, among: views[0])!
        let other = Self.addresses.first { $0 != owner.address }!
        var item = Allot_V1_Acquire()
        item.requestID = 1
        item.budget = b.rawValue
        item.want = 10
        let answer = h.core(other)!.acquire([item], from: "n", now: WallClock.now())
        guard case .grants(let g) = answer.first?.body else {
            Issue.record("expected grants")
            await h.stopAll()
            return
        }
        #expect(g.items[0].outcome == .notOwner && g.items[0].owner.address == owner.address && g.items[0].amount == 0)
        await h.stopAll()
    }

    @Test("a node that knows one seed learns every coordinator and sends each budget to its owner")
    func routing() async throws {
        let h = Harness()
        let budgets = try Self.budgets(quota: 4, rate: 4)
        try await formCluster(h, budgets: budgets)
        let node = try TestNode("n0", budgets: budgets, seeds: [Self.addresses[1]], harness: h, leaseTTL: allocator.leaseTTL)
        // Past the cluster's learning time (one lease TTL after formation), every budget admits.
        await h.wait(6) { budgets.map { node.admit($0.id) }.allSatisfy { $0 } }
        for b in budgets { #expect(node.admit(b.id) || node.total(b.id) > 0, "\(b.id) never admitted") }
        #expect(node.client.members.count == 3)
        for a in Self.addresses {
            let c = h.core(a)!.counters
            #expect(c.grants > 0, "\(a) served nothing")
        }
        await node.stop()
        await h.stopAll()
    }

    @Test("below its quorum a coordinator drops every budget and grants nothing; with it back, it learns before granting")
    func quorum() throws {
        let me = MemberID(name: "c0", address: "c0:7000")
        let others = [MemberID(name: "c1", address: "c1:7000"), MemberID(name: "c2", address: "c2:7000")]
        var settings = CoordinatorCore.Settings()
        settings.member = me
        settings.quorum = 2
        settings.allocator = allocator
        let budgets = try (0..<12).map { try BudgetSpec(id: BudgetID("r\($0)"), unit: .requests, kind: .rate(limit: 100, period: .seconds(1), burst: 100)) }
        let core = try CoordinatorCore(settings: settings, budgets: budgets, now: WallClock.now())
        let t0 = WallClock.now()
        core.membersChanged([me] + others, now: t0)
        #expect(core.isServing)
        let mine = budgets.filter { Rendezvous.owner(of: $0.id, among: [me] + others) == me }
        #expect(!mine.isEmpty)
        func ask(_ b: BudgetSpec, _ id: UInt64, at t: Instant) -> Allot_V1_Grant {
            var item = Allot_V1_Acquire()
            item.requestID = id
            item.budget = b.id.rawValue
            item.want = 10
            item.demandRate = 10
            guard case .grants(let g) = core.acquire([item], from: "n", now: t).first?.body else { return Allot_V1_Grant() }
            return g.items[0]
        }
        // Partitioned away from both others: a minority of one.
        core.membersChanged([me], now: t0 + .seconds(1))
        #expect(!core.isServing)
        #expect(budgets.allSatisfy { core.allocatorStatus($0.id) == nil })
        let refused = ask(mine[0], 1, at: t0 + .seconds(1))
        #expect(refused.outcome == .unavailable && refused.amount == 0)
        // Healed: serving again, but its budgets are learned first (the majority granted them meanwhile).
        core.membersChanged([me] + others, now: t0 + .seconds(5))
        #expect(core.isServing)
        #expect(mine.allSatisfy { core.allocatorStatus($0.id)?.learning == true })
        #expect(ask(mine[0], 2, at: t0 + .seconds(5)).amount == 0)
        core.tick(now: t0 + .seconds(8))
        #expect(ask(mine[0], 3, at: t0 + .seconds(8)).capacity > 0)
    }

    @Test("only coordinator certificates gossip, and only under their own name")
    func gossipIdentity() throws {
        let node = try PeerIdentity(trustDomain: "test", role: .node, name: "n0")
        var session = Session(identity: node, now: WallClock.now())
        _ = session.frameReceived(.hello(name: "n0"), now: WallClock.now())
        let ping = Membership.Envelope(from: MemberID(name: "n0", address: "x:1"), to: MemberID(name: "c0", address: "c0:7000"),
                                       message: .ping(seq: 1), updates: [])
        guard case .reject(let code, _, _) = session.frameReceived(ping.wire, now: WallClock.now()) else {
            Issue.record("a node's gossip was accepted")
            return
        }
        #expect(code == .permissionDenied)
        // A coordinator naming another as the sender is refused by the core.
        var settings = CoordinatorCore.Settings()
        settings.member = MemberID(name: "c0", address: "c0:7000")
        let core = try CoordinatorCore(settings: settings, budgets: [], now: WallClock.now())
        let c1 = try PeerIdentity(trustDomain: "test", role: .coordinator, name: "c1")
        let spoofed = Membership.Envelope(from: MemberID(name: "c2", address: "c2:7000"), to: settings.member!, message: .ping(seq: 1), updates: [])
        guard case .gossip(let g) = spoofed.wire.body else { return }
        #expect(core.gossip(g, from: c1)?.kind == "error")
        #expect(core.counters.rejected["bad_gossip"] == 1)
    }

    @Test("failover: a coordinator crashes under load; nodes keep admitting, re-route within a bound, caps hold")
    func failover() async throws {
        let h = Harness()
        let budgets = try Self.budgets(quota: 6, rate: 6)
        let ledger = tempPath("ledger.db")
        try await formCluster(h, budgets: budgets, ledgerPath: ledger)
        var nodes: [TestNode] = []
        for i in 0..<8 {
            nodes.append(try TestNode("n\(i)", budgets: budgets, seeds: Self.addresses, harness: h, leaseTTL: allocator.leaseTTL))
        }
        // Warm up past the formation's learning time.
        await h.wait(6) { budgets.map { b in nodes.map { $0.admit(b.id) }.contains(true) }.allSatisfy { $0 } }
        for n in nodes { n.enforcer.withEnforcer { $0.longestAnswerWait = .zero } }
        // Load: each node offers ~40 req/s per budget (320/s per budget against 200/s rate caps
        // and quotas of 1,500 that run out), for 7 s; the owner of q0 crashes after 2 s.
        let victim = Rendezvous.owner(of: "q0", among: h.core(Self.addresses[0])!.members.list)!.address
        let start = WallClock.now()
        var crashedAt: Instant?
        var detectedAt: Instant?
        var admittedAfterCrash = 0
        let survivors = Self.addresses.filter { $0 != victim }
        while WallClock.now() - start < .seconds(7) {
            if crashedAt == nil && WallClock.now() - start >= .seconds(2) {
                h.crash(victim)
                crashedAt = WallClock.now()
            }
            if crashedAt != nil && detectedAt == nil && survivors.allSatisfy({ h.core($0)!.members.list.count == 2 }) {
                detectedAt = WallClock.now()
            }
            for n in nodes {
                for b in budgets where n.admit(b.id) && crashedAt != nil { admittedAfterCrash += 1 }
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(survivors.allSatisfy { h.core($0)!.members.list.count == 2 }, "the crash was not detected")
        #expect(admittedAfterCrash > 0)
        let waits = nodes.map { $0.enforcer.withEnforcer { $0.longestAnswerWait } }
        let reroute = waits.max()!
        print("failover: crash detected by all survivors after \(detectedAt.map { $0 - crashedAt! }.map { "\($0)" } ?? "never"); longest acquire answer after the crash \(reroute)")
        #expect(reroute <= .seconds(3), "re-routing took \(reroute)")
        for n in nodes { await n.stop() }
        // Quotas: never over the allowance, across the crash (the ledger is shared).
        for b in budgets where b.kind.isQuota {
            let total = nodes.reduce(0) { $0 + $1.total(b.id) }
            print("failover: \(b.id) admitted \(total) of 1500")
            #expect(total <= 1500, "\(b.id): \(total) admitted of 1500")
            #expect(total >= 1000, "\(b.id): only \(total) admitted of 1500")
        }
        // Rate budgets: within the token bucket over every interval, up to 1% of a second's allowance.
        for b in budgets where !b.kind.isQuota {
            let times = nodes.flatMap { $0.admitted.withLock { $0[b.id] ?? [] } }
            let over = BudgetChecker.replay(times: times, spec: b).excess
            print("failover: \(b.id) admitted \(times.count), worst excess over the bucket \(over)")
            #expect(over <= 2, "\(b.id): \(over) over the bucket (1% of a second's 200)")
        }
        await h.stopAll()
        let store = try SQLiteLedger.open(path: ledger)
        let row = try await store.load("q0", windowStart: try CalendarWindow(.month).window(containing: start).0)
        await store.close()
        #expect(row.committed <= 1500 && row.granted > 0)
    }
}
