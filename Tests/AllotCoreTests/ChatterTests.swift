import Testing
@testable import AllotCore

/// Regression: three nodes sharing a consumer's budgets at a few requests per second, one of
/// them a rate budget the consumer is over. The demo showed each node re-asking for its
/// monthly quota on every poll: a slice counts as low at one request's cost, but its want
/// (enough for the interval) did not exceed what it held, so the coordinator answered
/// "you hold your share" every time. A low slice now asks only while it wants more.
@Suite("Lease chatter")
struct ChatterTests {
    @Test("a node holding its fair share of a quota does not ask again on every poll")
    func quietQuota() throws {
        let rpm = try BudgetSpec(id: "rpm", unit: .requests, kind: .rate(limit: 120, period: .seconds(60), burst: 6))
        let month = try BudgetSpec(id: "month", unit: .tokens, kind: .quota(allowance: 2_000_000, window: try CalendarWindow(.month)))
        var es: [Enforcer] = []
        var set: BudgetSet!
        for n in 0..<3 {
            var e = try Enforcer(settings: EnforcerSettings(node: NodeID("n\(n)")))
            set = try BudgetSet([e.register(rpm), e.register(month)])
            es.append(e)
        }
        var alloc = try Allocator(budgets: [rpm, month], now: at(1000))
        var acquires: [String: Int] = [:]
        var zero = 0
        for i in 0..<800 { // 8 s, one attempt per 10 ms... offered 4/s: one every 25 ticks
            let now = at(1000 + Double(i) * 0.01)
            if i % 25 == 0 {
                let k = (i / 25) % 3
                if case .admitted(let r) = es[k].reserve(Cost(requests: 1, tokens: 400), on: set, now: now) {
                    es[k].settle(r, actual: Cost(requests: 1, tokens: 180), now: now)
                }
            }
            for k in 0..<3 {
            _ = es[k].tick(now: now)
            for m in es[k].poll(now: now) {
                switch m {
                case .acquire(let req):
                    acquires[req.budget.rawValue, default: 0] += 1
                    if case .granted(let g) = alloc.acquire(req, now: now) {
                        if g.amount == 0 && g.rate == 0 { zero += 1 }
                        _ = es[k].receive(g, now: now)
                    }
                case .release(let rel): _ = alloc.release(rel, now: now)
                }
            }
            }
        }
        // 8 s, 3 nodes, ~100 polls per second each: before the fix, ~1,450 month acquires.
        #expect(acquires["month", default: 0] <= 40, "\(acquires), \(zero) empty answers")
        #expect(acquires["rpm", default: 0] <= 120, "\(acquires)")
    }
}
