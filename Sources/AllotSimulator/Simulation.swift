import AllotCore
import Foundation

/// The strategies the simulator compares on one trace.
public enum StrategyName: String, CaseIterable, Sendable, Codable {
    /// Expiring leases: Allot.
    case allot
    /// Every request asks the coordinator (envoyproxy/ratelimit with Redis).
    case central
    /// limit/N per node (Kong `local` policy).
    case staticSplit = "static-split"
    /// Local counters reconciled every S ms (Kong `sync_rate`, gubernator GLOBAL).
    case periodicSync = "periodic-sync"
    /// Check before, charge real tokens after (Kong AI Rate Limiting, Envoy AI Gateway).
    case postPaid = "post-paid"
    /// Reserve chars/4 + max_tokens in a window opened by the first request (LiteLLM).
    case estimateReserve = "estimate-reserve"
    /// `regions` only: Allot's hierarchy, a coordinator per region leasing from the global one.
    case allotRegions = "allot-regions"

    /// Whether this strategy can enforce the scenario's budgets (the peers model one
    /// rate or quota budget; `allot`, `central` and `static-split` take every mix).
    public func supports(_ s: Scenario) -> Bool {
        switch self {
        case .allotRegions: return RegionsRunner.supports(s)
        case .allot, .central, .staticSplit: return true
        case .periodicSync, .postPaid:
            guard s.budgets.count == 1 else { return false }
            if case .concurrency = s.budgets[0].kind { return false }
            return true
        case .estimateReserve:
            guard s.budgets.count == 1, case .rate = s.budgets[0].kind else { return false }
            return true
        }
    }
}

/// One scenario's results, every strategy side by side on the same trace.
public struct SimulationReport: Sendable, Codable {
    public var scenario: String
    public var nodes: Int
    public var seed: UInt64
    public var strategies: [StrategyMetrics]
    /// The primary budget's limit per second (rate budgets; nil otherwise), for plotting
    /// `admitted_per_second` against it.
    public var capPerSecond: Double?

    enum CodingKeys: String, CodingKey {
        case scenario, nodes, seed, strategies
        case capPerSecond = "cap_per_second"
    }

    public func metrics(_ s: StrategyName) -> StrategyMetrics? { strategies.first { $0.name == s.rawValue } }
}

public enum Simulation {
    /// Runs `strategies` on the scenario's trace. Deterministic for the scenario's seed.
    public static func run(_ scenario: Scenario, strategies: [StrategyName] = StrategyName.allCases,
                           checkEveryStep: Bool = false, syncInterval: Duration = .milliseconds(100)) -> SimulationReport {
        let trace = scenario.trace()
        let ideal = MetricsCalculator.ideal(scenario: scenario, trace: trace)
        var out: [StrategyMetrics] = []
        for s in strategies where s.supports(scenario) {
            let run: StrategyRun
            switch s {
            case .allot:
                run = AllotRunner(scenario: scenario, trace: trace, checkEveryStep: checkEveryStep).run()
            case .allotRegions:
                run = RegionsRunner(scenario: scenario, trace: trace, checkEveryStep: checkEveryStep).run()
            case .central:
                var loop = CentralLoop(name: s.rawValue, scenario: scenario, trace: trace, counter: ExactCounter(scenario: scenario))
                run = loop.run()
            case .staticSplit:
                run = StaticSplitRunner(scenario: scenario, trace: trace).run()
            case .periodicSync:
                run = PeriodicSyncRunner(scenario: scenario, trace: trace, syncInterval: syncInterval).run()
            case .postPaid:
                var loop = CentralLoop(name: s.rawValue, scenario: scenario, trace: trace, counter: PostPaidCounter(scenario: scenario))
                run = loop.run()
            case .estimateReserve:
                var loop = CentralLoop(name: s.rawValue, scenario: scenario, trace: trace, counter: EstimateReserveCounter(scenario: scenario))
                run = loop.run()
            }
            out.append(MetricsCalculator.measure(run, scenario: scenario, trace: trace, ideal: ideal))
        }
        var cap: Double?
        if case .rate(let limit, let period, _) = scenario.budgets[0].kind { cap = Double(limit) * 1e9 / Double(period.nanoseconds) }
        return SimulationReport(scenario: scenario.name.rawValue, nodes: scenario.nodes, seed: scenario.seed, strategies: out,
                                capPerSecond: cap)
    }
}

extension SimulationReport {
    /// A fixed-width table for terminals.
    public var table: String {
        var lines = ["scenario \(scenario), \(nodes) nodes, seed \(seed)"]
        let regions = strategies.contains { $0.crossRegionPer1k != nil }
        var header = ["strategy", "overshoot", "utilization", "fairness", "msgs/1k", "false-deny", "peak/period", "exact", "wait-p99"]
        var widths = [17, 10, 12, 9, 10, 11, 12, 6, 10]
        if regions {
            header.append("x-region/1k")
            widths.append(12)
        }
        func row(_ cells: [String]) -> String {
            zip(cells, widths).map { c, w in c.count >= w ? c + " " : c + String(repeating: " ", count: w - c.count) }.joined()
        }
        lines.append(row(header))
        for m in strategies {
            var cells = [m.name, f(m.overshoot, 3), f(m.utilization, 3), f(m.fairness, 3),
                         f(m.messagesPer1k, 1), f(m.falseDenyRate, 4), f(m.peakRollingRatio, 2),
                         m.conformant ? "yes" : "NO", f(m.decisionWaitP99Ms, 1) + "ms"]
            if regions { cells.append(m.crossRegionPer1k.map { f($0, 1) } ?? "-") }
            lines.append(row(cells))
        }
        for m in strategies { if let d = m.detail { lines.append("  \(m.name): \(d)") } }
        return lines.joined(separator: "\n")
    }

    /// One JSON object, keys as documented in docs/design.md.
    public var json: String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: try! enc.encode(self), as: UTF8.self)
    }

    private func f(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }
}
