import AllotCoordination
import AllotCore
import AllotCoordinator
import AllotTransport
import AllotWire
import Foundation
import Testing

/// `reach:` and `upstream:` in the configuration, and what a region's coordinator does with
/// a global budget before its upstream answers.
@Suite("Region configuration")
struct RegionConfigTests {
    static let region = """
    coordinator: {name: eu0, listen: 127.0.0.1:7400}
    cluster: {seeds: [127.0.0.1:7400, 127.0.0.1:7402]}
    upstream: {coordinators: [global-0:7400, global-1:7400], refresh_interval: 3s}
    budgets:
      - {id: world.day, kind: quota, allowance: 50000000, window: day, reach: global}
      - {id: eu.rps, kind: rate, limit: 100}
    tiers:
      - name: pro
        templates:
          - {name: tpd, scope: [tenant], kind: quota, allowance: 1000, window: day, reach: global}

    """

    @Test("reach and upstream are read; a region whose quotas are all global needs no ledger of its own")
    func accepted() throws {
        let cfg = try CoordinatorConfig(yaml: Self.region)
        #expect(cfg.upstream?.coordinators == ["global-0:7400", "global-1:7400"])
        #expect(cfg.upstream?.refreshInterval == .seconds(3))
        #expect(cfg.budgets.first { $0.id == "world.day" }?.reach == .global)
        #expect(cfg.budgets.first { $0.id == "eu.rps" }?.reach == .regional)
        #expect(cfg.tiers[0].templates[0].reach == .global)
        #expect(!cfg.hasQuotas)
        let core = try CoordinatorService.makeCore(config: cfg, logger: quietLogger("c"), now: WallClock.now())
        #expect(core.ledger == nil)
        #expect(core.settings.upstream?.node == "eu0")
        #expect(core.settings.upstream?.refreshInterval == .seconds(3))
        // Without an upstream (the global cluster itself), the same budgets are plain ones.
        let root = try CoordinatorConfig(yaml: Self.region.replacingOccurrences(of: "upstream: {coordinators: [global-0:7400, global-1:7400], refresh_interval: 3s}\n", with: ""))
        #expect(root.upstream == nil && root.hasQuotas)
    }

    @Test("bad reach and upstream settings are refused, naming the field")
    func refused() {
        let base = "coordinator: {name: eu0}\n"
        let cases: [(String, String)] = [
            ("budgets: [{id: x, kind: quota, allowance: 5, reach: worldwide}]", "budgets[0].reach"),
            ("budgets: [{id: x, kind: rate, limit: 5, reach: global}]", "rate budget cannot be global"),
            ("tiers: [{name: t, templates: [{name: x, kind: rate, limit: 5, reach: global}]}]", "rate budget cannot be global"),
            ("budgets: [{id: x, kind: quota, allowance: 5}]\nupstream: {coordinators: []}", "upstream.coordinators"),
            ("budgets: [{id: x, kind: quota, allowance: 5}]\nupstream: {coordinators: [nowhere]}", "upstream.coordinators[0]"),
            ("budgets: [{id: x, kind: quota, allowance: 5}]\nupstream: {coordinators: [g:1], refresh: 1s}", "upstream.refresh"),
            ("budgets: [{id: x, kind: quota, allowance: 5}]\nupstream: {coordinators: [g:1], refresh_interval: soon}", "upstream.refresh_interval"),
        ]
        for (yaml, field) in cases {
            do {
                _ = try CoordinatorConfig(yaml: base + yaml + "\n")
                Issue.record("accepted: \(yaml)")
            } catch {
                #expect("\(error)".contains(field), "\(yaml): \(error)")
            }
        }
    }

    @Test("a region grants a global budget nothing before its upstream does, asks upstream with the region's demand, and grants what arrives")
    func globalBudgetWaitsForUpstream() throws {
        var settings = CoordinatorCore.Settings()
        settings.name = "eu0"
        settings.upstream = UpstreamClient.Settings(node: "region-eu0")
        settings.tiers = [try Tier(name: "pro", templates: [
            try BudgetTemplate(name: "tpd", unit: .requests, kind: .quota(allowance: 1000, window: try CalendarWindow(.day)),
                               scope: [.tenant], reach: .global),
        ])]
        let regional = try BudgetSpec(id: "eu.day", unit: .requests, kind: .quota(allowance: 100, window: try CalendarWindow(.day)))
        let t0 = WallClock.now()
        let core = try CoordinatorCore(settings: settings, budgets: [regional], now: t0)
        func ask(_ budget: String, _ id: UInt64) -> Allot_V1_Grant {
            var a = Allot_V1_Acquire()
            a.requestID = id
            a.budget = budget
            a.want = 50
            a.demandRate = 40
            guard case .grants(let b) = core.acquire([a], from: "gw-1", now: t0).first?.body else { return Allot_V1_Grant() }
            return b.items[0]
        }
        // A regional budget is served at once; the tier's global one, created on first use,
        // has nothing until the global cluster grants.
        #expect(ask("eu.day", 1).amount == 50)
        let first = ask("pro.tpd/tenant=acme", 1)
        #expect(first.outcome == .granted && first.amount == 0)
        let out = core.machine { $0.upstreamStep(now: t0 + .milliseconds(10)) }
        guard case .acquire(let up)? = out.first else {
            Issue.record("the region did not ask upstream: \(out)")
            return
        }
        #expect(up.budget == "pro.tpd/tenant=acme" && up.node == "region-eu0" && up.demandRate == 40 && up.want > 0)
        #expect(!out.contains { if case .acquire(let a) = $0 { a.budget == "eu.day" } else { false } }, "a regional budget went upstream")
        core.machine { $0.upstreamReceive([Grant(requestID: up.requestID, budget: up.budget, leaseID: 7, epoch: 1, amount: 30, ttl: .seconds(30))],
                             now: t0 + .milliseconds(80)) }
        let second = ask("pro.tpd/tenant=acme", 2)
        #expect(second.amount == 30, "granted \(second.amount) of the 30 deposited")
        #expect(second.ttlNs <= Duration.seconds(30).nanoseconds)
    }
}
