import AllotCluster
import AllotCore
import AllotCoordinator
import AllotNode
import AllotSimulator
import AllotTransport
import AllotWire
import Foundation
import Testing

/// Coordinators as a cluster, in process and in real time: gossip over the protocol's
/// sessions, ownership by rendezvous, redirects through the lease client. The cluster's rules
/// (quorum, failover, learning) are tested in virtual time in AllotCoordinationTests; a
/// failover of real processes in AllotNetworkTests.
@Suite("Coordinator cluster (in process, real time)", .serialized)
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
}
