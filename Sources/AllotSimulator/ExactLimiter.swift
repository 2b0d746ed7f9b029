import AllotCore

/// An exact, single-place limiter for one budget: what a central counter does, what each
/// node does in `static-split`, and the reference that utilization is measured against.
struct ExactLimiter {
    let kind: BudgetKind
    let epoch: Instant
    private var level: Int128 = 0 // rate: tokens × period ns
    private var last: Int64 = 0
    private var winEnd: Int64 = .min
    private var winStart: Int64 = .min
    private var used: Int64 = 0   // quota: this window; concurrency: in flight

    init(kind: BudgetKind, epoch: Instant) {
        self.kind = kind
        self.epoch = epoch
        if case .rate(_, let p, let b) = kind { level = Int128(b) * Int128(p.nanoseconds) }
    }

    private mutating func advance(_ t: Int64) {
        switch kind {
        case .rate(let l, let p, let b):
            if t > last {
                level = min(Int128(b) * Int128(p.nanoseconds), level + Int128(t - last) * Int128(l))
                last = t
            }
        case .quota(_, let w):
            if t >= winEnd {
                let (s, e) = w.window(containing: epoch + .nanoseconds(t))
                winStart = s.nanoseconds - epoch.nanoseconds
                winEnd = e.nanoseconds - epoch.nanoseconds
                used = 0
            }
        case .concurrency: break
        }
    }

    func fits(_ amount: Int64, at t: Int64) -> Bool {
        var copy = self
        copy.advance(t)
        switch kind {
        case .rate(_, let p, _): return copy.level >= Int128(amount) * Int128(p.nanoseconds)
        case .quota(let a, _): return copy.used + amount <= a
        case .concurrency(let l): return copy.used + 1 <= l
        }
    }

    mutating func take(_ amount: Int64, at t: Int64) {
        advance(t)
        switch kind {
        case .rate(_, let p, _): level -= Int128(amount) * Int128(p.nanoseconds)
        case .quota: used += amount
        case .concurrency: used += 1
        }
    }

    /// Gives back part of a reservation taken at `takenAt` (quota: only within its window).
    mutating func refund(_ amount: Int64, takenAt: Int64, at t: Int64) {
        advance(t)
        switch kind {
        case .rate(_, let p, let b):
            level = min(Int128(b) * Int128(p.nanoseconds), level + Int128(amount) * Int128(p.nanoseconds))
        case .quota:
            if takenAt >= winStart { used = max(0, used - amount) }
        case .concurrency:
            used = max(0, used - 1)
        }
    }

    /// Scaled down to a 1/n share, for static-split.
    static func split(_ kind: BudgetKind, _ n: Int) -> BudgetKind {
        let n = Int64(n)
        switch kind {
        case .rate(let l, let p, let b): return .rate(limit: max(1, l / n), period: p, burst: max(1, b / n))
        case .quota(let a, let w): return .quota(allowance: max(1, a / n), window: w)
        case .concurrency(let l): return .concurrency(limit: max(1, l / n))
        }
    }
}

/// All-or-nothing over several exact limiters.
struct ExactLimiterSet {
    var limiters: [ExactLimiter]
    let specs: [BudgetSpec]

    init(specs: [BudgetSpec], kinds: [BudgetKind]? = nil, epoch: Instant) {
        self.specs = specs
        limiters = zip(specs, kinds ?? specs.map(\.kind)).map { ExactLimiter(kind: $0.1, epoch: epoch) }
    }

    mutating func tryTake(_ cost: Cost, at t: Int64) -> Bool {
        for (i, s) in specs.enumerated() where !limiters[i].fits(s.amount(for: cost), at: t) { return false }
        for (i, s) in specs.enumerated() { limiters[i].take(s.amount(for: cost), at: t) }
        return true
    }

    /// Settles a reservation of `bound` to `actual`; returns concurrency permits.
    mutating func settle(bound: Cost, actual: Cost, takenAt: Int64, at t: Int64) {
        for (i, s) in specs.enumerated() {
            let diff = s.kind.isConcurrency ? 1 : s.amount(for: bound) - s.amount(for: actual)
            if diff > 0 { limiters[i].refund(diff, takenAt: takenAt, at: t) }
        }
    }
}

extension ExactLimiter {
    /// A counter that went below zero (hits applied after the fact) is held at zero, as
    /// gubernator does.
    mutating func clampAtZero() {
        if level < 0 { level = 0 }
    }
}
