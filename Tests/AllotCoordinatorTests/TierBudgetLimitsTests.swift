import AllotCore
import AllotCoordinator
import AllotWire
import Testing

/// Budgets made from tier templates on first use (virtual time): the keys a node may ask
/// for, the caps that keep one node from locking every new consumer out, and retirement.
@Suite("Tier budgets: key limits, caps, retirement")
struct TierBudgetLimitsTests {
    static let t0 = Instant(seconds: 100)

    func core(perNode: Int = 100, window: CalendarWindow.Period = .minute) throws -> CoordinatorCore {
        var s = CoordinatorCore.Settings()
        s.allocator.leaseTTL = .seconds(2)
        s.tierLimits.perNode = perNode
        s.tiers = [try Tier(name: "pro", templates: [
            BudgetTemplate(name: "rpm", unit: .requests, kind: .rate(limit: 60, period: .seconds(1), burst: 60), scope: [.consumer]),
            BudgetTemplate(name: "day", unit: .tokens, kind: .quota(allowance: 1000, window: try CalendarWindow(window)), scope: [.consumer]),
        ])]
        return try CoordinatorCore(settings: s, budgets: [], now: Self.t0)
    }

    func ask(_ core: CoordinatorCore, _ budget: String, node: NodeID = "a", request: UInt64 = 1, lease: UInt64 = 0,
             consumed: Int64 = 0, now: Instant = t0) -> Allot_V1_Grant? {
        var a = Allot_V1_Acquire()
        a.requestID = request
        a.budget = budget
        a.want = 10
        a.leaseID = lease
        a.consumed = consumed
        guard case .grants(let g)? = core.acquire([a], from: node, now: now).first?.body else { return nil }
        return g.items.first
    }

    @Test("key values: printable ASCII without , = or space, at most 128 bytes; anything else is not made")
    func keys() throws {
        let c = try core()
        #expect(ask(c, "pro.rpm/consumer=alice")?.outcome == .granted)
        #expect(ask(c, "pro.rpm/consumer=meta-llama/Llama-3:8b@x")?.outcome == .granted)
        for bad in ["pro.rpm/consumer=" + String(repeating: "x", count: 129), "pro.rpm/consumer=a b", "pro.rpm/consumer=é",
                    "pro.rpm/consumer=a\u{0}", "pro.rpm/consumer=", "pro.rpm/consumer=a=b", "pro.rpm/consumer=a,model=b"] {
            #expect(ask(c, bad)?.outcome == .unknownBudget, "\(bad)")
        }
        #expect(c.counters.tierBudgetsMade == 2)
    }

    @Test("a node at its cap is refused new tier budgets; other nodes still get theirs")
    func perNodeCap() throws {
        let c = try core(perNode: 3)
        for i in 0..<3 { #expect(ask(c, "pro.rpm/consumer=u\(i)", node: "a")?.outcome == .granted) }
        #expect(ask(c, "pro.rpm/consumer=u3", node: "a")?.outcome == .unknownBudget)
        #expect(c.counters.rejected["tier_budgets_per_node_cap"] == 1)
        #expect(ask(c, "pro.rpm/consumer=new", node: "b")?.outcome == .granted, "another node is not locked out")
        // What node a made is still served to it (the cap is on making, not on using).
        #expect(ask(c, "pro.rpm/consumer=u0", node: "a", request: 2)?.outcome == .granted)
    }

    @Test("idle tier budgets are retired once nobody holds them and their bucket would be full again; asked again, they are made anew")
    func retirement() throws {
        let c = try core()
        let g = try #require(ask(c, "pro.rpm/consumer=alice"))
        #expect(g.amount > 0)
        // Held: not retired while the lease runs (2 s), whatever the time since its last use.
        c.tick(now: Self.t0 + .milliseconds(1_500))
        #expect(c.allocatorStatus("pro.rpm/consumer=alice") != nil)
        // Lease over at +2 s; idle for a TTL and one period of refill after that: retired.
        c.tick(now: Self.t0 + .seconds(3))
        #expect(c.allocatorStatus("pro.rpm/consumer=alice") != nil, "not yet: the bucket is still refilling")
        c.tick(now: Self.t0 + .seconds(6))
        #expect(c.allocatorStatus("pro.rpm/consumer=alice") == nil)
        #expect(c.counters.tierBudgetsRetired == 1)
        #expect(ask(c, "pro.rpm/consumer=alice", request: 2, now: Self.t0 + .seconds(7))?.amount ?? 0 > 0)
        #expect(c.counters.tierBudgetsMade == 2)
    }

    @Test("a quota without a ledger keeps its count until its window ends, then retires")
    func quotaKeepsItsCount() throws {
        let c = try core()
        let g = try #require(ask(c, "pro.day/consumer=bob"))
        #expect(g.amount > 0)
        // Spent 7 and gave the rest back.
        var r = Allot_V1_Release()
        r.budget = "pro.day/consumer=bob"
        r.leaseID = g.leaseID
        r.consumed = 7
        r.released = g.amount - 7
        r.final = true
        c.release([r], from: "a", now: Self.t0 + .milliseconds(10))
        c.tick(now: Self.t0 + .seconds(10))
        #expect(c.allocatorStatus("pro.day/consumer=bob")?.consumed == 7, "kept: its window's count exists only here")
        // The minute window rolls over: nothing consumed in the new one, so it retires.
        c.tick(now: Self.t0 + .seconds(75))
        c.tick(now: Self.t0 + .seconds(80))
        #expect(c.allocatorStatus("pro.day/consumer=bob") == nil)
    }
}
