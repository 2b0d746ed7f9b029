import AllotCore

/// A named workload: who sends how much, when, over which network, against which budgets.
public struct Scenario: Sendable {
    public enum Name: String, CaseIterable, Sendable {
        case steady, contention, zipf, shift, burst, runaway, lossy, tokens
        /// Step 5: two regions (the first half of the nodes, the second), the global
        /// coordinator (or counter) beside the first; 60 ± 20 ms one way between them. A
        /// global quota; demand moves from the first region to the second halfway.
        case regions
    }

    /// Which budgets the requests are charged to.
    public enum BudgetMix: String, Sendable, CaseIterable {
        /// One budget (the scenario's own), for comparing strategies.
        case primary
        /// The scenario's budget plus a quota and a concurrency budget, all charged at once;
        /// only `allot`, `central` and `static-split` take part. For the property tests.
        case all
    }

    /// `tokens` only: which text the prompts hold, and whether demand comes in bursts.
    public enum TextMix: String, Sendable, CaseIterable {
        /// 80% code, JSON and CJK, which tokenize more densely than characters/4.
        case dense
        /// English prose only (about 4 characters per token).
        case english
    }
    public enum Pattern: String, Sendable, CaseIterable {
        /// Quiet 60 s, then a 30 s burst, in a 90 s cycle.
        case bursty
        /// The same mean demand, steady.
        case steady
    }

    public var name: Name
    public var textMix: TextMix = .dense
    public var pattern: Pattern = .bursty
    public var nodes: Int
    public var seed: UInt64
    public var duration: Duration
    public var network: NetworkModel
    /// `regions`: added one way between the second region and the first (where the global
    /// coordinator, or the central counter, lives).
    public var crossRegion: NetworkModel?
    /// The budgets every request is charged to; the first is the one metrics are about.
    public var budgets: [BudgetSpec]
    /// Mean request rate per node, requests per second (scenarios scale around it).
    public var perNodeRate: Double
    /// The simulation's epoch as wall-clock time (quota windows follow the calendar).
    public var epoch: Instant
    /// Budget sizes relative to demand, drawn from the seed in `.all` mode.
    var scale: Double = 1

    /// Builds a scenario. `perNodeRate` defaults to 1,000 requests/s (20 for `tokens`);
    /// `nodes` to 16 (6 for `regions`: three gateways per region).
    public init(_ name: Name, nodes: Int? = nil, seed: UInt64 = 1, duration: Duration? = nil,
                perNodeRate: Double? = nil, mix: BudgetMix = .primary,
                textMix: TextMix = .dense, pattern: Pattern = .bursty) {
        self.name = name
        self.textMix = textMix
        self.pattern = pattern
        self.nodes = max(name == .regions ? 2 : 1, nodes ?? (name == .regions ? 6 : 16))
        self.seed = seed
        self.perNodeRate = perNodeRate ?? (name == .tokens ? 20 : 1000)
        self.duration = duration ?? (name == .tokens ? .seconds(150) : .seconds(30))
        self.network = name == .lossy
            ? NetworkModel(latency: .milliseconds(20), jitter: .milliseconds(10), loss: 0.05)
            : NetworkModel()
        if name == .regions { crossRegion = NetworkModel(latency: .milliseconds(60), jitter: .milliseconds(20)) }
        // 2026-01-01T00:00:50Z: a minute window rolls over 10 s in.
        self.epoch = Instant(nanoseconds: 1_767_225_650 * 1_000_000_000)
        var rng = SimRandom(seed: seed ^ 0xB0D6E7)
        self.scale = mix == .all ? 0.3 + 1.2 * rng.unit() : 1
        let demand = self.perNodeRate * Double(self.nodes) // requests per second, fleet-wide
        var list: [BudgetSpec] = []
        func req(_ perSecond: Double, burstSeconds: Double = 1) -> BudgetSpec {
            let l = max(1, Int64(perSecond))
            return try! BudgetSpec(id: "requests_per_second", unit: .requests,
                                   kind: .rate(limit: l, period: .seconds(1), burst: max(1, Int64(perSecond * burstSeconds))))
        }
        switch name {
        case .steady: list.append(req(demand * 1.25 * scale))
        case .contention: list.append(req(demand / 1.5 * scale))
        case .zipf, .shift, .lossy: list.append(req(demand / 1.2 * scale))
        case .burst, .runaway: list.append(req(demand * scale))
        case .regions:
            // Busy nodes offer the base rate, quiet ones a tenth: over the run, the quota is
            // 80% of what is offered, so it runs out in the second region's busy half.
            let offered = self.perNodeRate * 1.1 * Double(self.nodes) / 2 * self.duration.secondsDouble
            list.append(try! BudgetSpec(id: "global_requests_per_day", unit: .requests,
                                        kind: .quota(allowance: max(1, Int64(offered * 0.8 * scale)), window: try! CalendarWindow(.day)),
                                        reach: .global))
        case .tokens:
            // Mean tokens per request is about 1,360 and mean demand 1.47× the base rate (see
            // the trace): a per-minute budget at 80% of mean demand, with a 30-second burst (it
            // must hold the upper bounds reserved by requests in flight for seconds).
            let perMinute = Int64(demand * Self.tokensMeanFactor * 1_360 * 60 * 0.8 * scale)
            list.append(try! BudgetSpec(id: "tokens_per_minute", unit: .tokens,
                                        kind: .rate(limit: perMinute, period: .seconds(60), burst: perMinute / 2)))
        }
        if mix == .all {
            let perMinute = demand * 60 * (0.4 + rng.unit())
            let tokensFactor: Double = name == .tokens ? 1_360 * Self.tokensMeanFactor : 1
            list.append(try! BudgetSpec(id: "quota_per_minute", unit: name == .tokens ? .tokens : .requests,
                                        kind: .quota(allowance: Int64(perMinute * tokensFactor), window: try! CalendarWindow(.minute))))
            // Little's law: requests in flight ≈ rate × mean duration.
            let inFlight = demand * Scenario.meanDuration(name)
            list.append(try! BudgetSpec(id: "in_flight", unit: .requests,
                                        kind: .concurrency(limit: max(4, Int64(inFlight * (0.5 + rng.unit()))))))
        }
        self.budgets = list
    }

    /// Mean time a request stays in flight, in seconds.
    static func meanDuration(_ n: Name) -> Double { n == .tokens ? 5 : 0.02 }

    /// Generates the demand trace: deterministic for the seed.
    public func trace() -> [Arrival] {
        var rng = SimRandom(seed: seed)
        let end = duration.nanoseconds
        var weights = [Double](repeating: 1, count: nodes)
        if name == .zipf {
            for i in 0..<nodes { weights[i] = 1 / Double(i + 1) }
            weights.shuffle(using: &rng)
            let sum = weights.reduce(0, +)
            weights = weights.map { $0 * Double(nodes) / sum }
        }
        var out: [Arrival] = []
        out.reserveCapacity(Int(perNodeRate * Double(nodes) * duration.secondsDouble * 1.2))
        let hotNodeMoves: Int64 = 3_000_000_000
        for node in 0..<nodes {
            var t: Int64 = 0
            while true {
                // Thinning: draw at the peak rate, keep with probability rate/peak.
                let peak = peakRate(weight: weights[node])
                t += Int64(rng.exponential(mean: 1e9 / peak))
                if t >= end { break }
                let r = rateAt(node: node, t: t, weight: weights[node], hotEvery: hotNodeMoves)
                if rng.unit() * peak > r { continue }
                out.append(makeArrival(at: t, node: node, rng: &rng))
            }
        }
        out.sort { $0.time != $1.time ? $0.time < $1.time : $0.node < $1.node }
        return out
    }

    /// `tokens`: agent-like traffic, quiet for 60 s then a 30 s burst at 4× (20× the quiet
    /// rate), in a 90 s cycle: bursts straddle minute boundaries, as real bursts do.
    static let tokensQuiet = 0.2, tokensBurst = 4.0
    static let tokensMeanFactor = (60 * tokensQuiet + 30 * tokensBurst) / 90

    private func peakRate(weight: Double) -> Double {
        switch name {
        case .tokens: perNodeRate * (pattern == .steady ? Self.tokensMeanFactor : Self.tokensBurst)
        case .shift: perNodeRate * Double(nodes) * 0.5 + perNodeRate
        case .burst: perNodeRate * 4
        case .runaway: perNodeRate * 50
        default: perNodeRate * weight
        }
    }

    /// `regions`: 0 for the first half of the nodes (beside the global coordinator), 1 for the rest.
    public func region(of node: Int) -> Int { crossRegion != nil && node >= nodes / 2 ? 1 : 0 }

    /// A message's delay between `node` and the coordinator (or counter), nil when lost.
    func delay(node: Int, _ rng: inout SimRandom) -> Int64? {
        guard let d = network.delay(&rng) else { return nil }
        guard region(of: node) == 1, let x = crossRegion else { return d }
        return x.delay(&rng).map { d + $0 }
    }

    /// Whether a message between `node` and the coordinator crosses regions.
    func crosses(node: Int) -> Bool { region(of: node) == 1 }

    private func rateAt(node: Int, t: Int64, weight: Double, hotEvery: Int64) -> Double {
        switch name {
        case .shift:
            let hot = Int(t / hotEvery) % nodes
            let total = perNodeRate * Double(nodes)
            return node == hot ? total * 0.5 : total * 0.5 / Double(max(1, nodes - 1))
        case .burst:
            // Half the usual demand, with a 500 ms burst at 4× every 5 s.
            return t % 5_000_000_000 >= 4_500_000_000 ? perNodeRate * 4 : perNodeRate * 0.5
        case .tokens:
            if pattern == .steady { return perNodeRate * Self.tokensMeanFactor }
            let phase = t % 90_000_000_000
            let bursting = phase >= 45_000_000_000 && phase < 75_000_000_000
            return perNodeRate * (bursting ? Self.tokensBurst : Self.tokensQuiet)
        case .regions:
            let busy = region(of: node) == (t < duration.nanoseconds / 2 ? 0 : 1)
            return busy ? perNodeRate : perNodeRate / 10
        case .runaway:
            // One agent consumer jumps to 50× its rate a third of the way in.
            let jumped = node == 0 && t >= duration.nanoseconds / 3
            return jumped ? perNodeRate * 50 : perNodeRate * 0.5
        default:
            return perNodeRate * weight
        }
    }

    private func makeArrival(at t: Int64, node: Int, rng: inout SimRandom) -> Arrival {
        if name != .tokens {
            let d = Int64(rng.exponential(mean: Scenario.meanDuration(name) * 1e9))
            return Arrival(time: t, node: Int32(node), tokens: 1, tokensUpperBound: 1, tokensEstimate: 1, duration: d)
        }
        // LLM-like: prompt 50..5,000 tokens of some kind of text, max_tokens from a menu,
        // output 20–100% of max_tokens. Costs vary ~100×; requests stay in flight for seconds.
        // Mostly text that tokenizes densely: code, JSON and CJK (chat in English is 20%).
        let u = rng.unit()
        let kind: TextKind = textMix == .english || u < 0.2 ? .english : u < 0.5 ? .code : u < 0.75 ? .json : .cjk
        let promptTokens = rng.logUniform(50, 5_000)
        let chars = promptTokens * kind.charsPerToken
        let bytes = Int64(chars * kind.bytesPerChar)
        let maxTokens = Int64([128, 256, 512, 1024][Int(rng.next() % 4)])
        let output = Int64(Double(maxTokens) * (0.2 + 0.8 * rng.unit()))
        let tokens = Int64(promptTokens) + output
        // Streamed at about 60 tokens per second after a 300 ms first token.
        let duration = Int64((0.3 + Double(output) / 60) * 1e9)
        return Arrival(time: t, node: Int32(node), tokens: tokens, tokensUpperBound: bytes + maxTokens,
                       tokensEstimate: Int64(chars / 4) + maxTokens, duration: duration)
    }
}
