import AllotCore

/// The measured quality of one strategy on one trace.
public struct StrategyMetrics: Sendable, Codable {
    public var name: String
    /// max over windows of (admitted − allowed) / allowed; 0 when never over. Rate budgets:
    /// sliding windows of 0.1–10 periods (see `overshootOnePeriod` for one period only).
    public var overshoot: Double
    /// The same over sliding windows of exactly one period.
    public var overshootOnePeriod: Double
    /// admitted / what an exact global limiter with zero latency admits on the same trace.
    public var utilization: Double
    /// Jain's index of per-node admitted/demand.
    public var fairness: Double
    public var messagesPer1k: Double
    /// Share of requests denied while every budget they were charged to had room.
    public var falseDenyRate: Double
    /// Most admitted in a rolling period / the per-period limit (rate budgets).
    public var peakRollingRatio: Double
    /// Admissions never broke any budget's exact definition (every interval, every window,
    /// every instant), and no engine invariant broke while running.
    public var conformant: Bool
    public var invariantViolation: String?
    public var admitted: Int
    public var requests: Int
    public var detail: String?
    /// Window counters (post-paid, estimate-reserve): the most real units admitted in one of
    /// the counter's own windows over its limit, minus one. Above 0 the counter let through
    /// more than it believed it did (late charging, or estimates below the real count).
    public var ownWindowExcess: Double?
    /// 99th percentile of how long a request waited for its decision, ms (a round trip to
    /// the counter for central strategies; 0 when nodes decide locally).
    public var decisionWaitP99Ms: Double
    /// `regions`: messages between the regions per 1,000 admitted requests.
    public var crossRegionPer1k: Double?
    /// The primary budget's units admitted in each second of the run (by decision time).
    public var admittedPerSecond: [Int64]

    enum CodingKeys: String, CodingKey {
        case name, overshoot, utilization, fairness
        case overshootOnePeriod = "overshoot_one_period"
        case messagesPer1k = "messages_per_1k"
        case falseDenyRate = "false_deny_rate"
        case peakRollingRatio = "peak_rolling_ratio"
        case conformant
        case invariantViolation = "invariant_violation"
        case admitted, requests, detail
        case ownWindowExcess = "own_window_excess"
        case decisionWaitP99Ms = "decision_wait_p99_ms"
        case crossRegionPer1k = "cross_region_per_1k"
        case admittedPerSecond = "admitted_per_second"
    }
}

enum MetricsCalculator {
    static func measure(_ run: StrategyRun, scenario: Scenario, trace: [Arrival], ideal: [Int64]) -> StrategyMetrics {
        let specs = scenario.budgets
        var checkers = specs.map { BudgetChecker(spec: $0, epoch: scenario.epoch) }
        var order = Array(0..<trace.count)
        let outcomes = run.outcomes
        func time(_ i: Int) -> Int64 { outcomes[i].time >= 0 ? outcomes[i].time : trace[i].time }
        order.sort { time($0) != time($1) ? time($0) < time($1) : $0 < $1 }
        var falseDenies = 0
        var admittedCount = 0
        let nodes = scenario.nodes
        var demand = [Int64](repeating: 0, count: nodes)
        var perSecond = [Int64](repeating: 0, count: max(1, Int((scenario.duration.nanoseconds + 999_999_999) / 1_000_000_000)))
        var got = [Int64](repeating: 0, count: nodes)
        let primary = specs[0]
        for i in order {
            let a = trace[i]
            let o = outcomes[i]
            let t = time(i)
            let amountP = primary.amount(for: a.cost)
            demand[Int(a.node)] += amountP
            if o.admitted {
                admittedCount += 1
                got[Int(a.node)] += amountP
                perSecond[min(perSecond.count - 1, max(0, Int(t / 1_000_000_000)))] += amountP
                for k in checkers.indices {
                    checkers[k].admit(specs[k].amount(for: a.cost), at: t, end: max(o.end, t))
                }
            } else {
                var room = true
                for k in checkers.indices where !checkers[k].hasRoom(specs[k].amount(for: a.cost), at: t) { room = false }
                if room { falseDenies += 1 }
            }
        }
        let admittedP = got.reduce(0, +)
        let idealP = ideal.reduce(0, +)
        var xs: [Double] = []
        for n in 0..<nodes where demand[n] > 0 { xs.append(Double(got[n]) / Double(demand[n])) }
        let sum = xs.reduce(0, +), sq = xs.reduce(0) { $0 + $1 * $1 }
        let jain = sq > 0 ? sum * sum / (Double(xs.count) * sq) : 1
        var waits = outcomes.map(\.wait)
        waits.sort()
        let waitP99 = waits.isEmpty ? 0 : Double(waits[min(waits.count - 1, waits.count * 99 / 100)]) / 1e6
        return StrategyMetrics(
            name: run.name,
            overshoot: checkers.map(\.overshoot).max() ?? 0,
            overshootOnePeriod: checkers.map(\.overshootOnePeriod).max() ?? 0,
            utilization: idealP > 0 ? Double(admittedP) / Double(idealP) : 1,
            fairness: jain,
            messagesPer1k: admittedCount > 0 ? Double(run.messages) * 1000 / Double(admittedCount) : 0,
            falseDenyRate: trace.isEmpty ? 0 : Double(falseDenies) / Double(trace.count),
            peakRollingRatio: checkers[0].peakRollingRatio,
            conformant: checkers.allSatisfy(\.conformant) && run.invariantViolation == nil,
            invariantViolation: run.invariantViolation,
            admitted: admittedCount,
            requests: trace.count,
            detail: run.detail,
            ownWindowExcess: run.ownWindowExcess,
            decisionWaitP99Ms: waitP99,
            crossRegionPer1k: scenario.crossRegion == nil ? nil
                : admittedCount > 0 ? Double(run.crossRegionMessages) * 1000 / Double(admittedCount) : 0,
            admittedPerSecond: perSecond)
    }

    /// What an exact global limiter with zero latency admits, per node, in the primary unit.
    static func ideal(scenario: Scenario, trace: [Arrival]) -> [Int64] {
        var set = ExactLimiterSet(specs: scenario.budgets, epoch: scenario.epoch)
        var ends = MinHeap<Int64, Void>()
        var endCosts: [Int64: [(Cost, Int64)]] = [:]
        var got = [Int64](repeating: 0, count: scenario.nodes)
        let primary = scenario.budgets[0]
        let holds = scenario.budgets.contains { $0.kind.isConcurrency }
        for a in trace {
            while let e = ends.first?.key, e <= a.time {
                _ = ends.pop()
                if var list = endCosts[e], let (c, takenAt) = list.popLast() {
                    set.settle(bound: c, actual: c, takenAt: takenAt, at: e)
                    endCosts[e] = list.isEmpty ? nil : list
                }
            }
            if set.tryTake(a.cost, at: a.time) {
                got[Int(a.node)] += primary.amount(for: a.cost)
                if holds {
                    let e = a.time + a.duration
                    ends.push(e, ())
                    endCosts[e, default: []].append((a.cost, a.time))
                }
            }
        }
        return got
    }
}
