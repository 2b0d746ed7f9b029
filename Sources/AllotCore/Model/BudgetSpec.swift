/// The shape of a budget's limit.
public enum BudgetKind: Hashable, Sendable, CustomStringConvertible {
    /// A token bucket: `limit` units per `period`, holding at most `burst` units.
    /// Fleet-wide admissions over any interval T never exceed `burst + limit·T/period`.
    case rate(limit: Int64, period: Duration, burst: Int64)
    /// A fixed allowance per calendar window; durable in later layers.
    case quota(allowance: Int64, window: CalendarWindow)
    /// At most `limit` requests in flight fleet-wide.
    case concurrency(limit: Int64)

    /// The largest amount one request can ever be charged on this budget.
    public var ceiling: Int64 {
        switch self {
        case .rate(_, _, let burst): burst
        case .quota(let allowance, _): allowance
        case .concurrency(let limit): limit
        }
    }

    public var name: String {
        switch self {
        case .rate: "rate"
        case .quota: "quota"
        case .concurrency: "concurrency"
        }
    }

    public var description: String {
        switch self {
        case .rate(let l, let p, let b): "rate(\(l)/\(p), burst \(b))"
        case .quota(let a, let w): "quota(\(a) per \(w))"
        case .concurrency(let l): "concurrency(\(l))"
        }
    }

    /// Checks limits, bursts and periods; the error names the field.
    public func validate(field: String = "budget") throws(AllotError) {
        let values: [(String, Int64)] = switch self {
        case .rate(let limit, _, let burst): [("rate limit", limit), ("burst", burst)]
        case .quota(let allowance, _): [("quota allowance", allowance)]
        case .concurrency(let limit): [("concurrency limit", limit)]
        }
        for (what, v) in values where v > Checked.maxUnits {
            throw AllotError(.invalidLimit, "\(field): \(what) must be at most 2^62 = \(Checked.maxUnits) (got \(v))")
        }
        switch self {
        case .rate(let limit, let period, let burst):
            guard limit > 0 else {
                throw AllotError(.invalidLimit, "\(field): rate limit must be at least 1 (got \(limit))")
            }
            guard period > .zero, period.nanoseconds > 0 else {
                throw AllotError(.invalidDuration, "\(field): rate period must be positive (got \(period))")
            }
            guard burst >= 1 else {
                throw AllotError(.invalidBurst, "\(field): burst must be at least 1 (got \(burst)); use the limit per period for a plain bucket")
            }
        case .quota(let allowance, _):
            guard allowance > 0 else {
                throw AllotError(.invalidLimit, "\(field): quota allowance must be at least 1 (got \(allowance))")
            }
        case .concurrency(let limit):
            guard limit > 0 else {
                throw AllotError(.invalidLimit, "\(field): concurrency limit must be at least 1 (got \(limit))")
            }
        }
    }
}

/// What a node does for a budget when it holds no valid lease (coordinator unreachable,
/// lease expired, not yet granted).
public enum FailMode: Hashable, Sendable, CustomStringConvertible {
    /// Deny. The default: the cap can never be exceeded.
    case closed
    /// Admit and record the amount as debt, reported to the coordinator once reachable.
    case open
    /// Admit up to a fixed safe allowance per lease TTL on this node (Doorman's
    /// `safe_capacity`); the operator sizes it so that N nodes × allowance is acceptable.
    case `static`(allowancePerTTL: Int64)

    public var description: String {
        switch self {
        case .closed: "closed"
        case .open: "open"
        case .static(let a): "static(\(a))"
        }
    }
}

/// Where a budget's limit holds (step 5, the hierarchy).
public enum Reach: String, Hashable, Sendable, CaseIterable {
    /// Within one region's coordinator cluster: never leaves the region.
    case regional
    /// Worldwide: a regional cluster with an upstream leases it from the global cluster and
    /// sub-leases what it was granted. On a cluster without an upstream (the global one, or
    /// a single region), the same as `regional`.
    case global
}

/// A budget: a limit on one unit for one key.
public struct BudgetSpec: Hashable, Sendable, CustomStringConvertible {
    public var id: BudgetID
    public var key: BudgetKey
    public var unit: Unit
    public var kind: BudgetKind
    public var failMode: FailMode
    public var reach: Reach

    public init(id: BudgetID, key: BudgetKey = BudgetKey(), unit: Unit, kind: BudgetKind,
                failMode: FailMode = .closed, reach: Reach = .regional) throws(AllotError) {
        self.id = id
        self.key = key
        self.unit = kind.isConcurrency ? .requests : unit
        self.kind = kind
        self.failMode = failMode
        self.reach = reach
        guard !id.rawValue.isEmpty, id.rawValue.utf8.count <= 512 else {
            throw AllotError(.invalidSettings, "budget id must be 1 to 512 bytes (got \(id.rawValue.utf8.count))")
        }
        try kind.validate(field: "budget \(id)")
        if reach == .global && kind.isRate {
            throw AllotError(.invalidSettings, "budget \(id): a rate budget cannot be global yet (regions sub-lease quotas and concurrency); make it regional, or a global quota per minute")
        }
        if case .static(let a) = failMode, a < 0 {
            throw AllotError(.invalidLimit, "budget \(id): static fail-mode allowance must be 0 or more (got \(a))")
        }
    }

    /// The amount this budget charges for `cost` (concurrency budgets charge one permit).
    @inlinable
    public func amount(for cost: Cost) -> Int64 {
        kind.isConcurrency ? 1 : cost[unit]
    }

    /// Rejects a cost that this budget could never admit, so the caller gets a clear
    /// error instead of a denial that would repeat forever.
    public func check(cost: Cost) throws(AllotError) {
        let amount = amount(for: cost)
        if amount > kind.ceiling {
            throw AllotError(.costExceedsLimit,
                             "a cost of \(amount) \(unit.rawValue) exceeds budget \(id)'s \(kind.name) ceiling of \(kind.ceiling); it could never be admitted")
        }
        if amount < 0 {
            throw AllotError(.invalidLimit, "a cost of \(amount) \(unit.rawValue) is negative")
        }
    }

    public var description: String { "\(id) [\(unit.rawValue)] \(kind)" }
}

extension BudgetKind {
    @inlinable
    public var isRate: Bool {
        if case .rate = self { return true }
        return false
    }

    public var isQuota: Bool {
        if case .quota = self { return true }
        return false
    }

    @inlinable
    public var isConcurrency: Bool {
        if case .concurrency = self { return true }
        return false
    }
}
