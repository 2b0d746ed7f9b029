import AllotConfig
import AllotCoordination
@testable import AllotCore
import Testing

/// Soft limits (issue 17): each percent of a budget's limit reported once per window, in
/// virtual time, through the pure `SoftLimits` and through `CoordinatorMachine`.
@Suite("Soft limits in virtual time")
struct SoftLimitTests {
    static func status(_ id: BudgetID, _ kind: BudgetKind, consumed: Int64, expired: Int64 = 0) -> Allocator.Status {
        Allocator.Status(budget: id, kind: kind, pool: 0, outstanding: 0, committedRate: 0, consumed: consumed,
                         expiredSpent: expired, holders: 0, epoch: 1, learning: false, grants: 0)
    }

    static func crossings(_ actions: [CoordinatorMachine.Action]) -> [SoftLimits.Crossing] {
        actions.flatMap { action -> [SoftLimits.Crossing] in
            if case .softLimitCrossed(let c) = action { return c }
            return []
        }
    }

    @Test("a quota: 80 % then 95 % of the window's allowance, each once; a jump past both reports both; the next window starts again")
    func quota() throws {
        var table = SoftLimitTable()
        table.explicit["day"] = [80, 95]
        var s = SoftLimits(table)
        let kind = BudgetKind.quota(allowance: 1_000, window: try CalendarWindow(.day))
        let day = try CalendarWindow(.day).window(containing: t0)
        #expect(s.observe(Self.status("day", kind, consumed: 799), quotaWindow: day.start, now: t0).isEmpty)
        let first = s.observe(Self.status("day", kind, consumed: 700, expired: 100), quotaWindow: day.start, now: t0)
        #expect(first.map(\.percent) == [80] && first[0].used == 800 && first[0].limit == 1_000, "expired leases count as spent")
        #expect(s.observe(Self.status("day", kind, consumed: 900), quotaWindow: day.start, now: t0).isEmpty, "once per window")
        #expect(s.observe(Self.status("day", kind, consumed: 950), quotaWindow: day.start, now: t0).map(\.percent) == [95])
        #expect(s.observe(Self.status("day", kind, consumed: 1_000), quotaWindow: day.start, now: t0).isEmpty)
        #expect(s.level("day", now: t0) == 95 && s.levels(now: t0).map(\.percent) == [95])
        // The window ends: the level shows no more; the next window reports again.
        let next = day.end + .seconds(1)
        #expect(s.level("day", now: next) == 0)
        let both = s.observe(Self.status("day", kind, consumed: 999), quotaWindow: day.end, now: next)
        #expect(both.map(\.percent) == [80, 95] && both.allSatisfy { $0.windowStart == day.end })
        #expect(s.counts["day"] == [80: 2, 95: 2])
        // Another budget without soft limits is never reported.
        #expect(s.observe(Self.status("other", kind, consumed: 1_000), quotaWindow: day.start, now: t0).isEmpty)
    }

    @Test("a rate budget counts what nodes reported in the current period, against its limit per period; a report lands in the period it arrives in")
    func rate() throws {
        var table = SoftLimitTable()
        table.templates["pro.tpm"] = [50]
        var s = SoftLimits(table)
        let kind = BudgetKind.rate(limit: 600, period: .seconds(60), burst: 600)
        let id: BudgetID = "pro.tpm/consumer=alice"
        let minute = Instant(nanoseconds: t0.nanoseconds - t0.nanoseconds % 60_000_000_000)
        // A budget first seen now was made now: its first report counts.
        #expect(s.observe(Self.status(id, kind, consumed: 299), quotaWindow: nil, now: minute + .seconds(1)).isEmpty)
        #expect(s.observe(Self.status(id, kind, consumed: 300), quotaWindow: nil, now: minute + .seconds(30)).map(\.used) == [300])
        #expect(s.observe(Self.status(id, kind, consumed: 10_000), quotaWindow: nil, now: minute + .seconds(40)).isEmpty, "once per period")
        // The next minute counts from what was reported before it: its first report counts.
        let next = s.observe(Self.status(id, kind, consumed: 10_300), quotaWindow: nil, now: minute + .seconds(61))
        #expect(next.map(\.used) == [300])
        // One report per period, each period its own (a 1 s period, reports every second).
        let second = BudgetKind.rate(limit: 100, period: .seconds(1), burst: 100)
        var fast = SoftLimits(table)
        var crossed: [Int64] = []
        for i in 1...5 {
            crossed += fast.observe(Self.status(id, second, consumed: Int64(i) * 60), quotaWindow: nil, now: minute + .seconds(Int64(i))).map(\.used)
        }
        #expect(crossed == [60, 60, 60, 60, 60], "each second's 60 of 100 crosses 50 %")
        // Idle for a while: pruning keeps a rate budget's last count, so the next report is
        // counted alone (20, not the 320 reported since the budget was made).
        fast.prune(now: minute + .seconds(300))
        #expect(fast.observe(Self.status(id, second, consumed: 320), quotaWindow: nil, now: minute + .seconds(301)).isEmpty)
        // Its books retired and made again: counted from 0.
        fast.forget(id)
        #expect(fast.observe(Self.status(id, second, consumed: 50), quotaWindow: nil, now: minute + .seconds(302)).map(\.used) == [50])
        // An explicit budget with an empty list has none, whatever a template says.
        table.explicit["pro.tpm/consumer=bob"] = []
        #expect(table.percents(for: "pro.tpm/consumer=bob").isEmpty && table.percents(for: "pro.tpm/consumer=carol") == [50])
    }

    @Test("books at the edges of Int64 (untrusted reports): no trap, 100 % of Int64.max is reached only by Int64.max")
    func edges() throws {
        var table = SoftLimitTable()
        table.explicit["q"] = [1, 100]
        var s = SoftLimits(table)
        let kind = BudgetKind.quota(allowance: .max, window: try CalendarWindow(.month))
        #expect(s.observe(Self.status("q", kind, consumed: .min, expired: .min), quotaWindow: nil, now: t0).isEmpty)
        #expect(s.observe(Self.status("q", kind, consumed: .max / 100 + 1), quotaWindow: nil, now: t0).map(\.percent) == [1])
        #expect(s.observe(Self.status("q", kind, consumed: .max - 1), quotaWindow: nil, now: t0).isEmpty)
        #expect(s.observe(Self.status("q", kind, consumed: .max, expired: .max), quotaWindow: nil, now: t0).map(\.percent) == [100])
        let rate = BudgetKind.rate(limit: 1, period: .nanoseconds(1), burst: 1)
        table.explicit["r"] = [100]
        var r = SoftLimits(table)
        _ = r.observe(Self.status("r", rate, consumed: .max), quotaWindow: nil, now: Instant(nanoseconds: .max))
        _ = r.observe(Self.status("r", rate, consumed: 0), quotaWindow: nil, now: Instant(nanoseconds: .min))
    }

    @Test("through the coordinator's machine: a node's reports cross 50 % and 90 % of a quota, each reported once, as they arrive")
    func machine() throws {
        var settings = CoordinatorMachine.Settings()
        settings.allocator = fastAllocator
        settings.softLimits.explicit["q0"] = [50, 90]
        var m = try CoordinatorMachine(settings: settings, budgets: try budgets(quota: 1, rate: 1, allowance: 1_000), now: t0)
        var now = t0
        var lease: LeaseID = 0, consumed: Int64 = 0
        var reported: [(Int, Int64)] = []
        for i in 1...12 {
            now = now + .milliseconds(100)
            let (answers, actions) = m.acquire([AcquireRequest(requestID: UInt64(i), node: "n0", budget: "q0", want: 100, demandRate: 100,
                                                               leaseID: lease, consumed: consumed)], from: "n0", now: now)
            if case .grant(let g)? = answers.first, g.leaseID != 0 { lease = g.leaseID }
            reported += Self.crossings(actions).map { ($0.percent, $0.used) }
            consumed += 100 // spent before the next report
            reported += Self.crossings(m.release([ReleaseRequest(node: "n0", budget: "q0", leaseID: lease, consumed: consumed, released: 0, final: false)],
                                                 from: "n0", now: now)).map { ($0.percent, $0.used) }
            reported += Self.crossings(m.tick(now: now)).map { ($0.percent, $0.used) }
        }
        #expect(reported.map(\.0) == [50, 90], "\(reported)")
        #expect(reported.map(\.1) == [500, 900], "reported as the report that crossed it arrived")
        #expect(m.softLimits.counts["q0"] == [50: 1, 90: 1])
        #expect(m.softLimits.level("q1", now: now) == 0 && m.softLimits.counts["r0"] == nil)
    }

    @Test("through the coordinator's machine: a rate budget (200/s) reported at 120 per second crosses 50 % once in each second, not at 40 per second")
    func machineRate() throws {
        var settings = CoordinatorMachine.Settings()
        settings.allocator = fastAllocator
        settings.softLimits.explicit["r0"] = [50]
        var m = try CoordinatorMachine(settings: settings, budgets: try budgets(quota: 0, rate: 1), now: t0)
        var now = Instant(nanoseconds: t0.nanoseconds - t0.nanoseconds % 1_000_000_000)
        var lease: LeaseID = 0, consumed: Int64 = 0, id: UInt64 = 0
        var crossings: [Instant] = []
        for (perSecond, seconds) in [(Int64(40), 3), (120, 4)] {
            for _ in 0..<seconds * 5 {
                now = now + .milliseconds(200)
                id += 1
                let (answers, actions) = m.acquire([AcquireRequest(requestID: id, node: "n0", budget: "r0", want: 100, demandRate: 100,
                                                                   leaseID: lease, consumed: consumed)], from: "n0", now: now)
                if case .grant(let g)? = answers.first, g.leaseID != 0 { lease = g.leaseID }
                crossings += Self.crossings(actions).map { _ in now }
                consumed += perSecond / 5
                crossings += Self.crossings(m.tick(now: now)).map { _ in now }
            }
        }
        // 3 s at 40/s: none; then 4 s at 120/s: one per second (the first second's reports
        // straddle the change, so at least 3).
        #expect((3...4).contains(crossings.count), "\(crossings)")
        #expect(Set(crossings.map { $0.nanoseconds / 1_000_000_000 }).count == crossings.count, "at most once per second")
        #expect(crossings.allSatisfy { $0 - Instant(nanoseconds: t0.nanoseconds - t0.nanoseconds % 1_000_000_000) > .seconds(3) })
    }

    @Test("configuration: percents 1 to 100 on a budget, a template or a tier (a template's own list wins); concurrency and bad values are refused by name")
    func config() throws {
        let yaml = """
        budgets:
          - {id: day, unit: tokens, kind: quota, allowance: 1000, window: day, soft_limits: [95, 80]}
        tiers:
          - name: pro
            soft_limits: [90]
            templates:
              - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 600, period: 1m}
              - {name: month, scope: [consumer], unit: tokens, kind: quota, allowance: 9000, window: month, soft_limits: [50]}
              - {name: inflight, scope: [consumer], kind: concurrency, limit: 3}
        """
        let c = try DeploymentConfig(yaml: yaml)
        #expect(c.softLimits.percents(for: "day") == [80, 95])
        #expect(c.softLimits.percents(for: "pro.tpm/consumer=a") == [90])
        #expect(c.softLimits.percents(for: "pro.month/consumer=a") == [50])
        #expect(c.softLimits.percents(for: "pro.inflight/consumer=a").isEmpty)
        for (bad, field) in [("soft_limits: [0]", "budgets[0].soft_limits"), ("soft_limits: [101]", "budgets[0].soft_limits"),
                             ("soft_limits: [-1]", "budgets[0].soft_limits"), ("soft_limits: [80, 80]", "budgets[0].soft_limits"),
                             ("soft_limit: [80]", "soft_limit")] {
            #expect(throws: AllotError.self) { try DeploymentConfig(yaml: "budgets:\n  - {id: d, unit: tokens, kind: quota, allowance: 10, window: day, \(bad)}\n") }
            do { _ = try DeploymentConfig(yaml: "budgets:\n  - {id: d, unit: tokens, kind: quota, allowance: 10, window: day, \(bad)}\n") } catch {
                #expect(error.message.contains(field), "\(error.message)")
            }
        }
        do {
            _ = try DeploymentConfig(yaml: "budgets:\n  - {id: c, kind: concurrency, limit: 3, soft_limits: [80]}\n")
            Issue.record("a concurrency budget's soft limits were accepted")
        } catch {
            #expect(error.message.contains("budgets[0].soft_limits") && error.message.contains("concurrency"))
        }
    }
}
