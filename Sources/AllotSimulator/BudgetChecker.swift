import AllotCore

/// Replays admissions in time order against one budget's exact definition, and measures
/// how far a strategy strayed from it.
///
/// - rate: a token bucket with the budget's rate and burst, started full. The admissions
///   conform (admitted over every interval T ≤ burst + rate·T) exactly when this bucket never
///   goes below zero; `overshoot` uses sliding windows of one period, as the issue defines it.
/// - quota: the sum per calendar window against the allowance.
/// - concurrency: requests in flight at every instant against the limit.
public struct BudgetChecker: Sendable {
    public private(set) var spec: BudgetSpec
    public let epoch: Instant

    // rate: level × period-in-ns (Int128: exact, no overflow)
    private var level: Int128 = 0
    private var lastT: Int64 = 0
    /// Sliding windows of 0.1, 0.5, 1, 2, 5 and 10 periods (index 2 is one period).
    private var windows: [SlidingSum] = []
    static let windowPeriods: [Double] = [0.1, 0.5, 1, 2, 5, 10]
    private(set) var worstDeficit: Int128 = 0
    // quota
    private var winEnd: Int64 = .min
    private var winSum: Int64 = 0
    private(set) var maxOver: Int64 = 0
    // concurrency
    private var ends = MinHeap<Int64, Void>()
    private(set) var maxInFlight: Int64 = 0

    /// `epoch`: the instant that admission times are counted from (quota windows need it).
    public init(spec: BudgetSpec, epoch: Instant) {
        self.spec = spec
        self.epoch = epoch
        if case .rate(_, let p, let b) = spec.kind {
            level = Int128(b) * Int128(p.nanoseconds)
            windows = Self.windowPeriods.map { SlidingSum(length: Int64(Double(p.nanoseconds) * $0)) }
        }
    }

    /// Advance to `t` (non-decreasing).
    private mutating func advance(_ t: Int64) {
        switch spec.kind {
        case .rate(let l, let p, let b):
            let cap = Int128(b) * Int128(p.nanoseconds)
            level = min(cap, level + Int128(t - lastT) * Int128(l))
            lastT = t
        case .quota(_, let w):
            if t >= winEnd {
                winEnd = w.window(containing: epoch + .nanoseconds(t)).end.nanoseconds - epoch.nanoseconds
                winSum = 0
            }
        case .concurrency:
            while let e = ends.first?.key, e <= t { _ = ends.pop() }
        }
    }

    /// Would an exact limiter with this strategy's history admit `amount` at `t`?
    mutating func hasRoom(_ amount: Int64, at t: Int64) -> Bool {
        advance(t)
        switch spec.kind {
        case .rate(_, let p, _): return level >= Int128(amount) * Int128(p.nanoseconds)
        case .quota(let a, _): return winSum + amount <= a
        case .concurrency(let l): return Int64(ends.count) < l
        }
    }

    /// Records an admission of `amount` at `t` (ns since `epoch`, non-decreasing), in flight until `end`.
    public mutating func admit(_ amount: Int64, at t: Int64, end: Int64) {
        advance(t)
        switch spec.kind {
        case .rate(_, let p, _):
            level -= Int128(amount) * Int128(p.nanoseconds)
            if level < 0 { worstDeficit = max(worstDeficit, -level) }
            for k in windows.indices { windows[k].add(amount, at: t) }
        case .quota(let a, _):
            winSum += amount
            maxOver = max(maxOver, winSum - a)
        case .concurrency(let l):
            ends.push(end, ())
            maxInFlight = max(maxInFlight, Int64(ends.count))
            _ = l
        }
    }

    /// The budget's limit changes at `t` (ns since `epoch`, a configuration applied at run
    /// time; rate budgets of the same period). Raised: the bucket's room grows by the
    /// difference at once, as the coordinator's pool does. Lowered: the bucket is clipped to the
    /// new burst, from the instant the new terms are in force on every node. So an interval
    /// inside one regime is checked against that regime's burst + rate·T, an interval across a
    /// change against the larger of the two, never their sum.
    public mutating func change(to new: BudgetSpec, at t: Int64) {
        guard case .rate(_, let p, let oldBurst) = spec.kind, case .rate(_, let q, let burst) = new.kind, p == q else { return }
        advance(t)
        let period = Int128(p.nanoseconds)
        level = burst >= oldBurst ? level + Int128(burst - oldBurst) * period : min(level, Int128(burst) * period)
        spec = new
    }

    /// Replays single-unit admissions at absolute times (ns, any order), counted from the first.
    public static func replay(times: [Int64], spec: BudgetSpec) -> BudgetChecker {
        let sorted = times.sorted()
        let first = sorted.first ?? 0
        var checker = BudgetChecker(spec: spec, epoch: Instant(nanoseconds: first))
        for t in sorted { checker.admit(1, at: t - first, end: t - first) }
        return checker
    }

    /// True when the admissions never broke the budget's definition.
    public var conformant: Bool {
        switch spec.kind {
        case .rate: worstDeficit == 0
        case .quota: maxOver <= 0
        case .concurrency(let l): maxInFlight <= l
        }
    }

    /// By how many units the admissions broke the definition at worst (0 when conformant):
    /// rate, the deepest the exact bucket went below zero (= the most any interval's admissions
    /// exceeded burst + rate·T); quota, the most a window went over; concurrency, the most in
    /// flight beyond the limit.
    public var excess: Int64 {
        switch spec.kind {
        case .rate(_, let p, _):
            let period = Int128(p.nanoseconds)
            return Int64((worstDeficit + period - 1) / period)
        case .quota: return max(0, maxOver)
        case .concurrency(let l): return max(0, maxInFlight - l)
        }
    }

    /// max over windows of (admitted − allowed) / allowed, 0 when never over. For a rate
    /// budget: over sliding windows of 0.1 to 10 periods, allowed = burst + rate·T.
    public var overshoot: Double {
        switch spec.kind {
        case .rate(let l, _, let b):
            var worst = 0.0
            for (k, w) in windows.enumerated() {
                let allowed = Double(b) + Double(l) * Self.windowPeriods[k]
                worst = max(worst, (Double(w.maxSum) - allowed) / allowed)
            }
            return worst
        case .quota(let a, _):
            return max(0, Double(maxOver) / Double(a))
        case .concurrency(let l):
            return max(0, Double(maxInFlight - l) / Double(l))
        }
    }

    /// The definition alone: sliding windows of exactly one period.
    var overshootOnePeriod: Double {
        guard case .rate(let l, _, let b) = spec.kind else { return overshoot }
        let allowed = Double(b + l)
        return max(0, (Double(windows[2].maxSum) - allowed) / allowed)
    }

    /// Most admitted in any rolling period, relative to the per-period limit (rate only).
    var peakRollingRatio: Double {
        if case .rate(let l, _, _) = spec.kind { return Double(windows[2].maxSum) / Double(l) }
        return 0
    }
}


/// The largest sum of amounts in any window `(t - length, t]`, over time-ordered adds.
struct SlidingSum: Sendable {
    let length: Int64
    private var items: [(Int64, Int64)] = []
    private var head = 0
    private var sum: Int64 = 0
    private(set) var maxSum: Int64 = 0

    init(length: Int64) { self.length = max(1, length) }

    mutating func add(_ amount: Int64, at t: Int64) {
        while head < items.count && items[head].0 <= t - length {
            sum -= items[head].1
            head += 1
        }
        if head > 4096 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        items.append((t, amount))
        sum += amount
        maxSum = max(maxSum, sum)
    }
}
