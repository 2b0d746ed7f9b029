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
        var nodes: [Enforcer] = []
        var set: BudgetSet?
        for n in 0..<scenario.nodes {
            var s = EnforcerSettings(node: NodeID("node-\(n)"))
            s.refreshInterval = allocatorSettings.refreshInterval
            s.leaseTTL = allocatorSettings.leaseTTL
            // Retry after a few round trips of the network.
            var rtt = (scenario.network.latency + scenario.network.jitter) * 2
            if scenario.crosses(node: n), let x = scenario.crossRegion { rtt += (x.latency + x.jitter) * 2 }
            s.retryTimeout = max(.milliseconds(20), rtt * 3)
            s.prefetchLead = max(.milliseconds(50), rtt * 3)
            var e = try! Enforcer(settings: s)
            let hs = scenario.budgets.map { e.register($0) }
            set = try! BudgetSet(hs)
            nodes.append(e)
        }
        let budgets = set!
        let holds = scenario.name == .tokens || scenario.budgets.contains { $0.kind.isConcurrency }
        var outcomes = [Outcome](repeating: .undecided, count: trace.count)
        var inFlight: [Int32: Reservation] = [:]
        var nodeInFlight = [[Int32]](repeating: [], count: scenario.nodes)
        var q = Replay<Event>(trace: trace, end: scenario.duration.nanoseconds)
        var messages = 0, crossing = 0
        var violation: String?
        var acquires = 0, releases = 0, zeroGrants = 0, resent = 0, grantsSent = 0
        let timerEvery: Int64 = 20_000_000
        for n in 0..<scenario.nodes { q.schedule(Int64(n) * timerEvery / Int64(scenario.nodes), .nodeTimer(Int32(n))) }
        q.schedule(0, .coordinatorTick)

        func send(_ n: Int32, _ t: Int64) {
            for m in nodes[Int(n)].poll(now: epoch + .nanoseconds(t)) {
                messages += 1
                if scenario.crosses(node: Int(n)) { crossing += 1 }
                if case .acquire = m { acquires += 1 } else { releases += 1 }
                if let d = scenario.delay(node: Int(n), &rng) { q.schedule(t + d, .toCoordinator(n, m)) }
            }
        }
        var nodeIndex: [NodeID: Int32] = [:]
        for n in 0..<scenario.nodes { nodeIndex[nodes[n].settings.node] = Int32(n) }
        var pushes = 0
        func deliverPushes(_ t: Int64) {
            for p in alloc.takePushes() {
                messages += 1
                pushes += 1
                guard let n = nodeIndex[p.node] else { continue }
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
                if holds {
                    if case .admitted(let r) = nodes[n].reserve(a.bound, on: budgets, now: now) {
                        outcomes[i] = Outcome(time: t, admitted: true, end: t + a.duration)
                        inFlight[Int32(i)] = r
                        nodeInFlight[n].append(Int32(i))
                        q.schedule(t + a.duration, .complete(Int32(i)))
                    } else {
                        outcomes[i] = Outcome(time: t, admitted: false, end: t)
                    }
                } else {
                    let ok = nodes[n].admit(a.cost, on: budgets, now: now).isAdmitted
                    outcomes[i] = Outcome(time: t, admitted: ok, end: t)
                }
                if nodes[n].wantsPoll { send(a.node, t) }
                if checkEveryStep, violation == nil, let v = nodes[n].checkInvariants() { violation = "t=\(t): \(v)" }
                continue
            }
            switch ev {
            case .complete(let i):
                guard let r = inFlight.removeValue(forKey: i) else { break } // aborted
                let a = trace[Int(i)]
                nodes[Int(a.node)].settle(r, actual: a.cost, now: now)
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
                _ = nodes[Int(n)].receive(g, now: now)
                if nodes[Int(n)].wantsPoll { send(n, t) }
            case .nodeTimer(let n):
                for case .leaseExpired(_, let permits) in nodes[Int(n)].tick(now: now) where permits > 0 {
                    // The node's concurrency lease ended with requests in flight: abort them,
                    // the coordinator will hand their permits to others.
                    for i in nodeInFlight[Int(n)] where inFlight.removeValue(forKey: i) != nil {
                        outcomes[Int(i)].end = t
                    }
                }
                nodeInFlight[Int(n)].removeAll { inFlight[$0] == nil }
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
