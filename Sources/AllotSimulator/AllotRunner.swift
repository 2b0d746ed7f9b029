import AllotCore

/// The `allot` strategy: real `Enforcer`s on every node and a real `Allocator` on the
/// coordinator, exchanging lease messages over the simulated network.
struct AllotRunner {
    let scenario: Scenario
    let trace: [Arrival]
    var allocatorSettings: AllocatorSettings
    /// Check allocator and enforcer invariants after every event (property tests).
    var checkEveryStep = false

    private enum Event {
        case complete(Int32)
        case toCoordinator(Int32, Enforcer.Outgoing)
        case toNode(Int32, Grant)
        case nodeTimer(Int32)
        case coordinatorTick
    }

    init(scenario: Scenario, trace: [Arrival], checkEveryStep: Bool = false) {
        self.scenario = scenario
        self.trace = trace
        self.checkEveryStep = checkEveryStep
        allocatorSettings = AllocatorSettings()
    }

    func run() -> StrategyRun {
        let epoch = scenario.epoch
        var rng = SimRandom(seed: scenario.seed ^ 0xA110)
        var alloc = try! Allocator(settings: allocatorSettings, budgets: scenario.budgets, now: epoch)
        var fleet = SimGateways(scenario: scenario) { n in
            var s = EnforcerSettings(node: NodeID("node-\(n)"))
            s.refreshInterval = allocatorSettings.refreshInterval
            s.leaseTTL = allocatorSettings.leaseTTL
            // Retry after a few round trips of the network.
            var rtt = (scenario.network.latency + scenario.network.jitter) * 2
            if scenario.crosses(node: n), let x = scenario.crossRegion { rtt += (x.latency + x.jitter) * 2 }
            s.retryTimeout = max(.milliseconds(20), rtt * 3)
            s.prefetchLead = max(.milliseconds(50), rtt * 3)
            return s
        }
        var outcomes = [Outcome](repeating: .undecided, count: trace.count)
        var q = Replay<Event>(trace: trace, end: scenario.duration.nanoseconds)
        var messages = 0, crossing = 0
        var violation: String?
        var acquires = 0, releases = 0, zeroGrants = 0, resent = 0, grantsSent = 0
        let timerEvery: Int64 = 20_000_000
        for n in 0..<scenario.nodes { q.schedule(Int64(n) * timerEvery / Int64(scenario.nodes), .nodeTimer(Int32(n))) }
        q.schedule(0, .coordinatorTick)

        func send(_ n: Int32, _ t: Int64) {
            for m in fleet.nodes[Int(n)].poll(now: epoch + .nanoseconds(t)) {
                messages += 1
                if scenario.crosses(node: Int(n)) { crossing += 1 }
                if case .acquire = m { acquires += 1 } else { releases += 1 }
                if let d = scenario.delay(node: Int(n), &rng) { q.schedule(t + d, .toCoordinator(n, m)) }
            }
        }
        var pushes = 0
        func deliverPushes(_ t: Int64) {
            for p in alloc.takePushes() {
                messages += 1
                pushes += 1
                guard let n = fleet.index[p.node] else { continue }
                if scenario.crosses(node: Int(n)) { crossing += 1 }
                if let d = scenario.delay(node: Int(n), &rng) { q.schedule(t + d, .toNode(n, p.grant)) }
            }
        }
        func check(_ t: Int64) {
            guard checkEveryStep, violation == nil else { return }
            if let v = alloc.checkInvariants() { violation = "t=\(t): \(v)" }
        }

        while let (t, step) = q.next() {
            let now = epoch + .nanoseconds(t)
            guard case .event(let ev) = step else {
                guard case .arrival(let i) = step else { continue }
                let a = trace[i]
                let n = Int(a.node)
                let (outcome, endsAt) = fleet.arrive(i, a, at: t, now: now)
                outcomes[i] = outcome
                if let endsAt { q.schedule(endsAt, .complete(Int32(i))) }
                if fleet.nodes[n].wantsPoll { send(a.node, t) }
                if checkEveryStep, violation == nil, let v = fleet.nodes[n].checkInvariants() { violation = "t=\(t): \(v)" }
                continue
            }
            switch ev {
            case .complete(let i):
                fleet.complete(i, trace[Int(i)], now: now)
            case .toCoordinator(let n, let m):
                switch m {
                case .acquire(let req):
                    let outcome = alloc.acquire(req, now: now)
                    if case .resent = outcome { resent += 1 }
                    switch outcome {
                    case .granted(let g), .resent(let g):
                        messages += 1
                        if scenario.crosses(node: Int(n)) { crossing += 1 }
                        grantsSent += 1
                        if g.amount == 0 { zeroGrants += 1 }
                        if let d = scenario.delay(node: Int(n), &rng) { q.schedule(t + d, .toNode(n, g)) }
                    case .ignoredStale, .unknownBudget: break
                    }
                case .release(let rel):
                    _ = alloc.release(rel, now: now)
                }
                deliverPushes(t)
                check(t)
            case .toNode(let n, let g):
                _ = fleet.nodes[Int(n)].receive(g, now: now)
                if fleet.nodes[Int(n)].wantsPoll { send(n, t) }
            case .nodeTimer(let n):
                fleet.tick(Int(n), at: t, now: now, outcomes: &outcomes)
                send(n, t)
                q.schedule(t + timerEvery, .nodeTimer(n))
            case .coordinatorTick:
                _ = alloc.tick(now: now)
                deliverPushes(t)
                q.schedule(t + 50_000_000, .coordinatorTick)
            }
        }
        for i in outcomes.indices where outcomes[i].time < 0 { outcomes[i] = Outcome(time: trace[i].time, admitted: false, end: trace[i].time) }
        var run = StrategyRun(name: "allot", outcomes: outcomes, messages: messages, crossRegionMessages: crossing, invariantViolation: violation)
        run.detail = "acquires \(acquires) (re-sent \(resent)), grants \(grantsSent) (empty \(zeroGrants)), pushes \(pushes), releases \(releases)"
        return run
    }
}
