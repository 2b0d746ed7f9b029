import AllotCore

/// The `allot` strategy: real `Enforcer`s on every node and a real `Allocator` on the
/// coordinator, exchanging lease messages over the simulated network.
struct AllotRunner {
    let scenario: Scenario
    let trace: [Arrival]
    var allocatorSettings: AllocatorSettings
    /// Check allocator and enforcer invariants after every event (property tests).
    var checkEveryStep = false

    init(scenario: Scenario, trace: [Arrival], checkEveryStep: Bool = false) {
        self.scenario = scenario
        self.trace = trace
        self.checkEveryStep = checkEveryStep
        allocatorSettings = AllocatorSettings()
    }

    func run() -> StrategyRun {
        let settings = allocatorSettings, scenario = self.scenario
        let fleet = SimGateways(scenario: scenario) { n in
            var s = EnforcerSettings(node: NodeID("node-\(n)"))
            s.refreshInterval = settings.refreshInterval
            s.leaseTTL = settings.leaseTTL
            // Retry after a few round trips of the network.
            var rtt = (scenario.network.latency + scenario.network.jitter) * 2
            if scenario.crosses(node: n), let x = scenario.crossRegion { rtt += (x.latency + x.jitter) * 2 }
            s.retryTimeout = max(.milliseconds(20), rtt * 3)
            s.prefetchLead = max(.milliseconds(50), rtt * 3)
            return s
        }
        var loop = FleetLoop<Coordinator>(scenario: scenario, trace: trace, seed: scenario.seed ^ 0xA110,
                                          checkEveryStep: checkEveryStep, fleet: fleet)
        var side = Coordinator(alloc: try! Allocator(settings: settings, budgets: scenario.budgets, now: scenario.epoch))
        let outcomes = loop.run(&side)
        var run = StrategyRun(name: "allot", outcomes: outcomes, messages: loop.messages, crossRegionMessages: loop.crossing,
                              invariantViolation: loop.violation)
        run.detail = "acquires \(side.acquires) (re-sent \(side.resent)), grants \(side.grantsSent) (empty \(side.zeroGrants)), pushes \(side.pushes), releases \(side.releases)"
        return run
    }

    /// One coordinator's real `Allocator`, ticked every 50 ms; its pushes go out after each event.
    struct Coordinator: CoordinatorSide {
        enum Event {
            case toCoordinator(Int32, Enforcer.Outgoing)
            case tick
        }

        var alloc: Allocator
        var acquires = 0, releases = 0, zeroGrants = 0, resent = 0, grantsSent = 0, pushes = 0

        mutating func start(_ loop: inout FleetLoop<Self>) { loop.schedule(0, .tick) }

        mutating func sent(_ m: Enforcer.Outgoing, from n: Int32, at t: Int64, _ loop: inout FleetLoop<Self>) {
            if loop.scenario.crosses(node: Int(n)) { loop.crossing += 1 }
            if case .acquire = m { acquires += 1 } else { releases += 1 }
            if let d = loop.scenario.delay(node: Int(n), &loop.rng) { loop.schedule(t + d, .toCoordinator(n, m)) }
        }

        mutating func handle(_ e: Event, at t: Int64, now: Instant, _ loop: inout FleetLoop<Self>) {
            switch e {
            case .toCoordinator(let n, let m):
                switch m {
                case .acquire(let req):
                    let outcome = alloc.acquire(req, now: now)
                    if case .resent = outcome { resent += 1 }
                    switch outcome {
                    case .granted(let g), .resent(let g):
                        loop.messages += 1
                        if loop.scenario.crosses(node: Int(n)) { loop.crossing += 1 }
                        grantsSent += 1
                        if g.amount == 0 { zeroGrants += 1 }
                        if let d = loop.scenario.delay(node: Int(n), &loop.rng) { loop.schedule(t + d, .toNode(n, g)) }
                    case .ignoredStale, .unknownBudget: break
                    }
                case .release(let rel):
                    _ = alloc.release(rel, now: now)
                }
                deliverPushes(t, &loop)
                loop.check(self, at: t)
            case .tick:
                _ = alloc.tick(now: now)
                deliverPushes(t, &loop)
                loop.schedule(t + 50_000_000, .tick)
            }
        }

        private mutating func deliverPushes(_ t: Int64, _ loop: inout FleetLoop<Self>) {
            for p in alloc.takePushes() {
                loop.messages += 1
                pushes += 1
                guard let n = loop.fleet.index[p.node] else { continue }
                if loop.scenario.crosses(node: Int(n)) { loop.crossing += 1 }
                if let d = loop.scenario.delay(node: Int(n), &loop.rng) { loop.schedule(t + d, .toNode(n, p.grant)) }
            }
        }

        func violation(at t: Int64) -> String? {
            alloc.checkInvariants().map { "t=\(t): \($0)" }
        }
    }
}
