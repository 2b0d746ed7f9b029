import AllotCoordination
import AllotCore

/// `allot-regions` (step 5): the hierarchy. Each region has its own coordinator (the real
/// `CoordinatorMachine`, its global budgets upstream-backed) beside its gateways, leasing
/// from the global coordinator (a `CoordinatorMachine` too) through its `UpstreamClient`;
/// only the regions' coordinators cross regions, at a slower refresh. Nodes are real
/// `Enforcer`s, as in `allot`.
struct RegionsRunner {
    let scenario: Scenario
    let trace: [Arrival]
    var checkEveryStep = false
    /// The leaves refresh every second (leases of 5 s); the global level every second too,
    /// with leases of 15 s renewed 5 s before they end.
    var leaf: AllocatorSettings = {
        var a = AllocatorSettings()
        a.leaseTTL = .seconds(5)
        return a
    }()
    var global: AllocatorSettings = {
        var a = AllocatorSettings()
        a.leaseTTL = .seconds(15)
        a.refreshInterval = .seconds(1)
        return a
    }()

    static func supports(_ s: Scenario) -> Bool {
        s.crossRegion != nil && s.budgets.allSatisfy { !$0.kind.isRate }
    }

    func run() -> StrategyRun {
        let epoch = scenario.epoch, scenario = self.scenario, leaf = self.leaf, global = self.global
        var g = CoordinatorMachine.Settings()
        g.allocator = global
        var side = Regions(global: try! CoordinatorMachine(settings: g, budgets: scenario.budgets, now: epoch))
        // In a region every budget of the scenario is global: leased from the global coordinator.
        let reaching = scenario.budgets.map { b in
            var b = b
            b.reach = .global
            return b
        }
        for r in 0..<2 {
            var s = CoordinatorMachine.Settings()
            s.allocator = leaf
            var us = UpstreamClient.Settings(node: NodeID("region-\(r)"))
            us.refreshInterval = global.refreshInterval
            us.renewMargin = leaf.leaseTTL
            // The second region is a cross-region round trip away.
            us.retryTimeout = r == 0 ? .milliseconds(100) : .milliseconds(400)
            s.upstream = us
            side.regions.append(try! CoordinatorMachine(settings: s, budgets: reaching, now: epoch))
        }
        // Gateways talk to their own region's coordinator: the regional network only.
        let fleet = SimGateways(scenario: scenario) { n in
            var s = EnforcerSettings(node: NodeID("node-\(n)"))
            s.refreshInterval = leaf.refreshInterval
            s.leaseTTL = leaf.leaseTTL
            let rtt = (scenario.network.latency + scenario.network.jitter) * 2
            s.retryTimeout = max(.milliseconds(20), rtt * 3)
            s.prefetchLead = max(.milliseconds(50), rtt * 3)
            return s
        }
        var loop = FleetLoop<Regions>(scenario: scenario, trace: trace, seed: scenario.seed ^ 0x4E61,
                                      checkEveryStep: checkEveryStep, fleet: fleet)
        let outcomes = loop.run(&side)
        var run = StrategyRun(name: StrategyName.allotRegions.rawValue, outcomes: outcomes, messages: loop.messages,
                              crossRegionMessages: loop.crossing, invariantViolation: loop.violation)
        run.detail = "regional coordinators lease from the global one; \(loop.crossing) messages crossed regions"
        return run
    }

    /// Two regional coordinators beside their gateways, each leasing from the global
    /// coordinator through its `UpstreamClient`: `CoordinatorMachine`s all three.
    struct Regions: CoordinatorSide {
        enum Event {
            case toRegion(Int32, Enforcer.Outgoing)
            case regionTick(Int32)
            case toGlobal(Int32, Enforcer.Outgoing)
            case fromGlobal(Int32, Grant)
            case globalTick
        }

        var global: CoordinatorMachine
        var regions: [CoordinatorMachine] = []

        mutating func start(_ loop: inout FleetLoop<Self>) {
            loop.schedule(0, .regionTick(0))
            loop.schedule(25_000_000, .regionTick(1))
            loop.schedule(0, .globalTick)
        }

        /// Within a region: the intra-region network only.
        private static func local(_ loop: inout FleetLoop<Self>) -> Int64? { loop.scenario.network.delay(&loop.rng) }

        /// Between region `r`'s coordinator and the global one (beside region 0).
        private static func upstream(_ r: Int32, _ loop: inout FleetLoop<Self>) -> Int64? {
            guard let d = loop.scenario.network.delay(&loop.rng) else { return nil }
            guard r == 1, let x = loop.scenario.crossRegion else { return d }
            return x.delay(&loop.rng).map { d + $0 }
        }

        mutating func sent(_ m: Enforcer.Outgoing, from n: Int32, at t: Int64, _ loop: inout FleetLoop<Self>) {
            if let d = Self.local(&loop) { loop.schedule(t + d, .toRegion(n, m)) }
        }

        mutating func handle(_ e: Event, at t: Int64, now: Instant, _ loop: inout FleetLoop<Self>) {
            switch e {
            case .toRegion(let n, let m):
                let r = loop.scenario.region(of: Int(n))
                var actions: [CoordinatorMachine.Action]
                switch m {
                case .acquire(let req):
                    let answers: [CoordinatorMachine.Answer]
                    (answers, actions) = regions[r].acquire([req], from: req.node, now: now)
                    for case .grant(let g) in answers {
                        loop.messages += 1
                        if let d = Self.local(&loop) { loop.schedule(t + d, .toNode(n, g)) }
                    }
                case .release(let rel):
                    actions = regions[r].release([rel], from: rel.node, now: now)
                }
                deliverPushes(actions, t, &loop)
                loop.check(self, at: t)
            case .regionTick(let r):
                deliverPushes(regions[Int(r)].tick(now: now), t, &loop)
                for m in regions[Int(r)].upstreamStep(now: now) { toGlobal(r, m, t, &loop) }
                loop.check(self, at: t)
                loop.schedule(t + 50_000_000, .regionTick(r))
            case .toGlobal(let r, let m):
                // The global coordinator's pushes are not sent: a region asks at every refresh.
                switch m {
                case .acquire(let req):
                    for case .grant(let g) in global.acquire([req], from: req.node, now: now).0 {
                        loop.messages += 1
                        if r == 1 { loop.crossing += 1 }
                        if let d = Self.upstream(r, &loop) { loop.schedule(t + d, .fromGlobal(r, g)) }
                    }
                case .release(let rel):
                    _ = global.release([rel], from: rel.node, now: now)
                }
                loop.check(self, at: t)
            case .fromGlobal(let r, let g):
                regions[Int(r)].upstreamReceive([g], now: now)
                loop.check(self, at: t)
            case .globalTick:
                _ = global.tick(now: now)
                loop.schedule(t + 50_000_000, .globalTick)
            }
        }

        private mutating func deliverPushes(_ actions: [CoordinatorMachine.Action], _ t: Int64, _ loop: inout FleetLoop<Self>) {
            for case .push(let pushes) in actions {
                for p in pushes {
                    loop.messages += 1
                    if let d = Self.local(&loop), let n = loop.fleet.index[p.node] { loop.schedule(t + d, .toNode(n, p.grant)) }
                }
            }
        }

        private func toGlobal(_ r: Int32, _ m: Enforcer.Outgoing, _ t: Int64, _ loop: inout FleetLoop<Self>) {
            loop.messages += 1
            if r == 1 { loop.crossing += 1 }
            if let d = Self.upstream(r, &loop) { loop.schedule(t + d, .toGlobal(r, m)) }
        }

        func violation(at t: Int64) -> String? {
            if let v = global.allocator.checkInvariants() { return "t=\(t) global: \(v)" }
            for r in 0..<2 { if let v = regions[r].allocator.checkInvariants() { return "t=\(t) region \(r): \(v)" } }
            return nil
        }
    }
}
