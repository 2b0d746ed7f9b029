import AllotCore

/// `static-split`: every node enforces limit/N on its own (Kong's `local` policy):
/// no messages, never over the cap, but skewed traffic is denied on hot nodes while cold
/// nodes waste their share.
struct StaticSplitRunner {
    let scenario: Scenario
    let trace: [Arrival]

    func run() -> StrategyRun {
        let kinds = scenario.budgets.map { ExactLimiter.split($0.kind, scenario.nodes) }
        var nodes = (0..<scenario.nodes).map { _ in
            ExactLimiterSet(specs: scenario.budgets, kinds: kinds, epoch: scenario.epoch)
        }
        let holds = scenario.name == .tokens || scenario.budgets.contains { $0.kind.isConcurrency }
        var ends = EventQueue<Int32>()
        var outcomes = [Outcome](repeating: .undecided, count: trace.count)
        for (i, a) in trace.enumerated() {
            while let e = ends.peekTime, e <= a.time {
                let (_, j) = ends.pop()!
                let b = trace[Int(j)]
                nodes[Int(b.node)].settle(bound: b.bound, actual: b.cost, takenAt: b.time, at: e)
            }
            let ok = nodes[Int(a.node)].tryTake(holds ? a.bound : a.cost, at: a.time)
            outcomes[i] = Outcome(time: a.time, admitted: ok, end: a.time + a.duration)
            if ok && holds { ends.push(a.time + a.duration, Int32(i)) }
        }
        return StrategyRun(name: "static-split", outcomes: outcomes, messages: 0, invariantViolation: nil)
    }
}

/// `periodic-sync`: every node admits against its local copy of the global counter and
/// reconciles with the owner every `syncInterval` (Kong's `sync_rate`, gubernator GLOBAL).
/// Between syncs every node spends the same remaining budget. Token costs are counted after
/// the request, as those plugins do.
struct PeriodicSyncRunner {
    let scenario: Scenario
    let trace: [Arrival]
    var syncInterval: Duration = .milliseconds(100)

    private enum Event {
        case complete(Int32)
        case sync(Int32)
        case atOwner(Int32, Int64)
        case reply(Int32, ExactLimiter)
    }

    func run() -> StrategyRun {
        let spec = scenario.budgets[0]
        let postPaid = scenario.name == .tokens
        var rng = SimRandom(seed: scenario.seed ^ 0x5C)
        var owner = ExactLimiter(kind: spec.kind, epoch: scenario.epoch)
        var copies = [ExactLimiter](repeating: owner, count: scenario.nodes)
        var unsent = [Int64](repeating: 0, count: scenario.nodes)
        var sinceSend = [Int64](repeating: 0, count: scenario.nodes)
        var q = Replay<Event>(trace: trace, end: scenario.duration.nanoseconds)
        var outcomes = [Outcome](repeating: .undecided, count: trace.count)
        var messages = 0, crossing = 0
        let s = syncInterval.nanoseconds
        for n in 0..<scenario.nodes { q.schedule(Int64(n) * s / Int64(scenario.nodes), .sync(Int32(n))) }
        func hit(_ n: Int, _ amount: Int64, _ t: Int64) {
            copies[n].take(amount, at: t)
            unsent[n] += amount
            sinceSend[n] += amount
        }
        while let (t, step) = q.next() {
            guard case .event(let ev) = step else {
                guard case .arrival(let i) = step else { continue }
                let a = trace[i]
                let n = Int(a.node)
                let amount = spec.amount(for: a.cost)
                let ok = copies[n].fits(postPaid ? 1 : amount, at: t)
                outcomes[i] = Outcome(time: t, admitted: ok, end: t + a.duration)
                if ok {
                    if postPaid { q.schedule(t + a.duration, .complete(Int32(i))) } else { hit(n, amount, t) }
                }
                continue
            }
            switch ev {
            case .complete(let i):
                let a = trace[Int(i)]
                hit(Int(a.node), spec.amount(for: a.cost), t)
            case .sync(let n):
                messages += 1
                if scenario.crosses(node: Int(n)) { crossing += 1 }
                let hits = unsent[Int(n)]
                unsent[Int(n)] = 0
                sinceSend[Int(n)] = 0
                if let d = scenario.delay(node: Int(n), &rng) { q.schedule(t + d, .atOwner(n, hits)) }
                q.schedule(t + s, .sync(n))
            case .atOwner(let n, let hits):
                owner.take(hits, at: t)
                owner.clampAtZero()
                messages += 1
                if scenario.crosses(node: Int(n)) { crossing += 1 }
                if let d = scenario.delay(node: Int(n), &rng) { q.schedule(t + d, .reply(n, owner)) }
            case .reply(let n, let snapshot):
                // Adopt the owner's view, then re-apply what this node admitted since it sent.
                copies[Int(n)] = snapshot
                copies[Int(n)].take(sinceSend[Int(n)], at: t)
            }
        }
        for i in outcomes.indices where outcomes[i].time < 0 {
            outcomes[i] = Outcome(time: trace[i].time, admitted: false, end: trace[i].time)
        }
        return StrategyRun(name: "periodic-sync", outcomes: outcomes, messages: messages, crossRegionMessages: crossing, invariantViolation: nil)
    }
}
