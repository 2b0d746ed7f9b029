import AllotCore

/// `allot-regions` (step 5): the hierarchy. Each region has its own coordinator (a real
/// `Allocator` whose global budgets are upstream-backed) beside its gateways, leasing from
/// the global coordinator through a real `UpstreamClient`; only the regions' coordinators
/// cross regions, at a slower refresh. Nodes are real `Enforcer`s, as in `allot`.
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

    private enum Event {
        case complete(Int32)
        case toRegion(Int32, Enforcer.Outgoing)
        case toNode(Int32, Grant)
        case nodeTimer(Int32)
        case regionTick(Int32)
        case toGlobal(Int32, Enforcer.Outgoing)
        case fromGlobal(Int32, Grant)
        case globalTick
    }

    func run() -> StrategyRun {
        let epoch = scenario.epoch
        var rng = SimRandom(seed: scenario.seed ^ 0x4E61)
        var globalAlloc = try! Allocator(settings: global, budgets: scenario.budgets, now: epoch)
        var regionAllocs: [Allocator] = []
        var clients: [UpstreamClient] = []
        for r in 0..<2 {
            var a = try! Allocator(settings: leaf, budgets: [], now: epoch)
            var us = UpstreamClient.Settings(node: NodeID("region-\(r)"))
            us.refreshInterval = global.refreshInterval
            us.renewMargin = leaf.leaseTTL
            // The second region is a cross-region round trip away.
            us.retryTimeout = r == 0 ? .milliseconds(100) : .milliseconds(400)
            var c = UpstreamClient(settings: us)
            for b in scenario.budgets {
                try! a.addUpstreamBacked(b, now: epoch)
                c.register(b.id)
            }
            regionAllocs.append(a)
            clients.append(c)
        }
        // Gateways talk to their own region's coordinator: the regional network only.
        var fleet = SimGateways(scenario: scenario) { n in
            var s = EnforcerSettings(node: NodeID("node-\(n)"))
            s.refreshInterval = leaf.refreshInterval
            s.leaseTTL = leaf.leaseTTL
            let rtt = (scenario.network.latency + scenario.network.jitter) * 2
            s.retryTimeout = max(.milliseconds(20), rtt * 3)
            s.prefetchLead = max(.milliseconds(50), rtt * 3)
            return s
        }
        var outcomes = [Outcome](repeating: .undecided, count: trace.count)
        var q = Replay<Event>(trace: trace, end: scenario.duration.nanoseconds)
        var messages = 0, crossing = 0
        var violation: String?
        let timerEvery: Int64 = 20_000_000
        for n in 0..<scenario.nodes { q.schedule(Int64(n) * timerEvery / Int64(scenario.nodes), .nodeTimer(Int32(n))) }
        q.schedule(0, .regionTick(0))
        q.schedule(25_000_000, .regionTick(1))
        q.schedule(0, .globalTick)

        /// Within a region: the intra-region network only.
        func local(_ rng: inout SimRandom) -> Int64? { scenario.network.delay(&rng) }
        /// Between region `r`'s coordinator and the global one (beside region 0).
        func upstream(_ r: Int32, _ rng: inout SimRandom) -> Int64? {
            guard let d = scenario.network.delay(&rng) else { return nil }
            guard r == 1, let x = scenario.crossRegion else { return d }
            return x.delay(&rng).map { d + $0 }
        }
        func send(_ n: Int32, _ t: Int64) {
            for m in fleet.nodes[Int(n)].poll(now: epoch + .nanoseconds(t)) {
                messages += 1
                if let d = local(&rng) { q.schedule(t + d, .toRegion(n, m)) }
            }
        }
        func deliverPushes(_ r: Int, _ t: Int64) {
            for p in regionAllocs[r].takePushes() {
                messages += 1
                if let d = local(&rng), let n = fleet.index[p.node] { q.schedule(t + d, .toNode(n, p.grant)) }
            }
        }
        func toGlobal(_ r: Int32, _ m: Enforcer.Outgoing, _ t: Int64) {
            messages += 1
            if r == 1 { crossing += 1 }
            if let d = upstream(r, &rng) { q.schedule(t + d, .toGlobal(r, m)) }
        }
        func check(_ t: Int64) {
            guard checkEveryStep, violation == nil else { return }
            if let v = globalAlloc.checkInvariants() { violation = "t=\(t) global: \(v)" }
            for r in 0..<2 where violation == nil {
                if let v = regionAllocs[r].checkInvariants() { violation = "t=\(t) region \(r): \(v)" }
            }
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
            case .toRegion(let n, let m):
                let r = scenario.region(of: Int(n))
                switch m {
                case .acquire(let req):
                    switch regionAllocs[r].acquire(req, now: now) {
                    case .granted(let g), .resent(let g):
                        messages += 1
                        if let d = local(&rng) { q.schedule(t + d, .toNode(n, g)) }
                    case .ignoredStale, .unknownBudget: break
                    }
                case .release(let rel):
                    _ = regionAllocs[r].release(rel, now: now)
                }
                deliverPushes(r, t)
                check(t)
            case .toNode(let n, let g):
                _ = fleet.nodes[Int(n)].receive(g, now: now)
                if fleet.nodes[Int(n)].wantsPoll { send(n, t) }
            case .nodeTimer(let n):
                fleet.tick(Int(n), at: t, now: now, outcomes: &outcomes)
                send(n, t)
                q.schedule(t + timerEvery, .nodeTimer(n))
            case .regionTick(let r):
                _ = regionAllocs[Int(r)].tick(now: now)
                deliverPushes(Int(r), t)
                var views: [BudgetID: UpstreamClient.RegionView] = [:]
                for b in scenario.budgets { views[b.id] = regionAllocs[Int(r)].regionView(b.id, now: now) } // ticked above
                for action in clients[Int(r)].poll(now: now, views: views) {
                    switch action {
                    case .withdraw(let b, let amount): _ = regionAllocs[Int(r)].withdraw(b, max: amount, now: now)
                    case .send(let m): toGlobal(r, m, t)
                    }
                }
                check(t)
                q.schedule(t + 50_000_000, .regionTick(r))
            case .toGlobal(let r, let m):
                switch m {
                case .acquire(let req):
                    switch globalAlloc.acquire(req, now: now) {
                    case .granted(let g), .resent(let g):
                        messages += 1
                        if r == 1 { crossing += 1 }
                        if let d = upstream(r, &rng) { q.schedule(t + d, .fromGlobal(r, g)) }
                    case .ignoredStale, .unknownBudget: break
                    }
                case .release(let rel):
                    _ = globalAlloc.release(rel, now: now)
                }
                check(t)
            case .fromGlobal(let r, let g):
                regionAllocs[Int(r)].advance(g.budget, now: now)
                guard let view = regionAllocs[Int(r)].regionView(g.budget, now: now),
                      let d = clients[Int(r)].receive(g, now: now, view: view) else { break }
                regionAllocs[Int(r)].deposit(g.budget, amount: d.amount, expiresAt: d.expiresAt, now: now)
                check(t)
            case .globalTick:
                _ = globalAlloc.tick(now: now)
                q.schedule(t + 50_000_000, .globalTick)
            }
        }
        for i in outcomes.indices where outcomes[i].time < 0 { outcomes[i] = Outcome(time: trace[i].time, admitted: false, end: trace[i].time) }
        var run = StrategyRun(name: StrategyName.allotRegions.rawValue, outcomes: outcomes, messages: messages,
                              crossRegionMessages: crossing, invariantViolation: violation)
        run.detail = "regional coordinators lease from the global one; \(crossing) messages crossed regions"
        return run
    }
}
