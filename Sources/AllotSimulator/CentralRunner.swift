import AllotCore

/// The shape shared by every strategy that asks a central counter on each request
/// (`central`, `post-paid`, `estimate-reserve`): request → counter decides → reply, and
/// optionally a settle message when the request ends. Only the counter differs.
protocol CentralCounter {
    /// Decide arrival `i` at counter time `t`.
    mutating func decide(_ a: Arrival, at t: Int64) -> Bool
    /// The request admitted at `takenAt` ended; settle it at counter time `t`.
    mutating func settle(_ a: Arrival, takenAt: Int64, at t: Int64)
    /// Whether requests send a settle message when they end.
    var settles: Bool { get }
    /// For window counters: the most real units admitted in one of its own windows, over
    /// its limit, minus one (> 0: the counter let more through than it believed).
    var ownWindowExcess: Double? { get }
}

extension CentralCounter {
    var ownWindowExcess: Double? { nil }
}

struct CentralLoop<Counter: CentralCounter> {
    let name: String
    let scenario: Scenario
    let trace: [Arrival]
    var counter: Counter

    private enum Event {
        case atCounter(Int32)
        case reply(Int32, Bool, Int64)
        case settle(Int32, Int64)
    }

    mutating func run() -> StrategyRun {
        var rng = SimRandom(seed: scenario.seed ^ 0xCE17)
        var q = Replay<Event>(trace: trace, end: scenario.duration.nanoseconds)
        var outcomes = [Outcome](repeating: .undecided, count: trace.count)
        var messages = 0, crossing = 0
        func count(_ node: Int32) {
            messages += 1
            if scenario.crosses(node: Int(node)) { crossing += 1 }
        }
        while let (t, step) = q.next() {
            guard case .event(let ev) = step else {
                guard case .arrival(let i) = step else { continue }
                count(trace[i].node)
                if let d = scenario.delay(node: Int(trace[i].node), &rng) {
                    q.schedule(t + d, .atCounter(Int32(i)))
                } else {
                    outcomes[i] = Outcome(time: t, admitted: false, end: t) // timed out: denied
                }
                continue
            }
            switch ev {
            case .atCounter(let i):
                let a = trace[Int(i)]
                let ok = counter.decide(a, at: t)
                count(a.node)
                if let d = scenario.delay(node: Int(a.node), &rng) {
                    q.schedule(t + d, .reply(i, ok, t))
                } else {
                    outcomes[Int(i)] = Outcome(time: a.time, admitted: false, end: a.time)
                    if ok && counter.settles {
                        // The node never learns it was admitted; the counter's reservation
                        // is settled (as unused) when the counter times it out.
                        q.schedule(t + a.duration, .settle(i, t))
                    }
                }
            case .reply(let i, let ok, let decidedAt):
                let a = trace[Int(i)]
                outcomes[Int(i)] = Outcome(time: decidedAt, admitted: ok, end: t + a.duration, wait: t - a.time)
                if ok && counter.settles {
                    count(a.node)
                    if let d = scenario.delay(node: Int(a.node), &rng) { q.schedule(t + a.duration + d, .settle(i, decidedAt)) }
                }
            case .settle(let i, let takenAt):
                counter.settle(trace[Int(i)], takenAt: takenAt, at: t)
            }
        }
        for i in outcomes.indices where outcomes[i].time < 0 {
            outcomes[i] = Outcome(time: trace[i].time, admitted: false, end: trace[i].time)
        }
        var run = StrategyRun(name: name, outcomes: outcomes, messages: messages, crossRegionMessages: crossing, invariantViolation: nil)
        run.ownWindowExcess = counter.ownWindowExcess
        return run
    }
}

/// `central`: an exact counter asked on every request (envoyproxy/ratelimit with Redis):
/// exact, but one round trip and two messages per request.
struct ExactCounter: CentralCounter {
    var limiters: ExactLimiterSet
    let settles: Bool

    init(scenario: Scenario) {
        limiters = ExactLimiterSet(specs: scenario.budgets, epoch: scenario.epoch)
        settles = scenario.name == .tokens || scenario.budgets.contains { $0.kind.isConcurrency }
    }

    mutating func decide(_ a: Arrival, at t: Int64) -> Bool {
        limiters.tryTake(settles ? a.bound : a.cost, at: t)
    }

    mutating func settle(_ a: Arrival, takenAt: Int64, at t: Int64) {
        limiters.settle(bound: a.bound, actual: a.cost, takenAt: takenAt, at: t)
    }
}

/// `post-paid`: check that something is left before the call, charge the real tokens after
/// it (Kong AI Rate Limiting, Envoy AI Gateway). Fixed windows of one period.
struct PostPaidCounter: CentralCounter {
    let spec: BudgetSpec
    let epoch: Instant
    var window: Int64 = .min
    var windowEnd: Int64 = .min
    var used: Int64 = 0
    var tally = WindowTally()
    let settles = true

    init(scenario: Scenario) {
        spec = scenario.budgets[0]
        epoch = scenario.epoch
    }

    var ownWindowExcess: Double? { tally.excess(over: limit) }

    private mutating func roll(_ t: Int64) {
        guard t >= windowEnd else { return }
        tally.newWindow()
        switch spec.kind {
        case .rate(_, let p, _):
            window = t / p.nanoseconds * p.nanoseconds
            windowEnd = window + p.nanoseconds
        case .quota(_, let w):
            let (s, e) = w.window(containing: epoch + .nanoseconds(t))
            window = s.nanoseconds - epoch.nanoseconds
            windowEnd = e.nanoseconds - epoch.nanoseconds
        case .concurrency: break
        }
        used = 0
    }

    var limit: Int64 {
        switch spec.kind {
        case .rate(let l, _, _): l
        case .quota(let a, _): a
        case .concurrency(let l): l
        }
    }

    mutating func decide(_ a: Arrival, at t: Int64) -> Bool {
        roll(t)
        guard used < limit else { return false }
        tally.admit(spec.amount(for: a.cost))
        return true
    }

    mutating func settle(_ a: Arrival, takenAt: Int64, at t: Int64) {
        roll(t)
        used += spec.amount(for: a.cost)
    }
}

/// `estimate-reserve`: one central counter per request that reserves an estimate
/// (characters / 4 + max_tokens) and corrects it when the request ends, in a fixed window
/// opened by the first request (LiteLLM).
struct EstimateReserveCounter: CentralCounter {
    let limit: Int64
    let period: Int64
    let unitIsTokens: Bool
    var windowStart: Int64 = .min
    var windowEnd: Int64 = .min
    var used: Int64 = 0
    var tally = WindowTally()
    let settles = true

    var ownWindowExcess: Double? { tally.excess(over: limit) }

    init(scenario: Scenario) {
        let spec = scenario.budgets[0]
        unitIsTokens = spec.unit == .tokens
        if case .rate(let l, let p, _) = spec.kind {
            limit = l
            period = p.nanoseconds
        } else {
            limit = spec.kind.ceiling
            period = 60_000_000_000
        }
    }

    private func estimate(_ a: Arrival) -> Int64 { unitIsTokens ? a.tokensEstimate : 1 }
    private func actual(_ a: Arrival) -> Int64 { unitIsTokens ? a.tokens : 1 }

    mutating func decide(_ a: Arrival, at t: Int64) -> Bool {
        if t >= windowEnd {
            windowStart = t
            windowEnd = t + period
            used = 0
            tally.newWindow()
        }
        guard used + estimate(a) <= limit else { return false }
        used += estimate(a)
        tally.admit(actual(a))
        return true
    }

    mutating func settle(_ a: Arrival, takenAt: Int64, at t: Int64) {
        guard takenAt >= windowStart, t < windowEnd else { return }
        used += actual(a) - estimate(a)
    }
}

/// Real units a window counter admitted in its current window, and the most in any of them.
struct WindowTally {
    private var current: Int64 = 0
    private var most: Int64 = 0
    mutating func newWindow() { current = 0 }
    mutating func admit(_ units: Int64) {
        current += units
        most = max(most, current)
    }
    /// The most admitted in one window over `limit`, minus one.
    func excess(over limit: Int64) -> Double { Double(most) / Double(limit) - 1 }
}
