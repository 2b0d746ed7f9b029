/// The coordinator's books for one budget: what is free, what is out on leases, what was
/// consumed, and every node's lease. All amounts are integers.
///
/// Invariants (checked by `checkInvariants`, proven in docs/design.md):
/// - rate: `pool + outstanding <= burst` whenever the refill ran (adoption may exceed it,
///   and then nothing refills until it is back under);
/// - quota: `pool + outstanding + consumed + expired <= allowance` within a window;
/// - concurrency: `pool + outstanding == limit` (or less during learning).
struct BudgetAccount: Sendable {
    struct Lease: Sendable {
        var id: LeaseID
        var granted: Int64
        var consumedSeen: Int64 = 0
        var releasedSeen: Int64 = 0
        var expiresAt: Instant
        var outstanding: Int64 { granted - consumedSeen - releasedSeen }
    }

    struct NodeEntry: Sendable {
        var lastRequestID: UInt64 = 0
        var lastGrant: Grant?
        var want: Int64 = 0
        var lastSeen: Instant
        var lease: Lease?
    }

    let spec: BudgetSpec
    var epoch: UInt64 = 1
    /// Free units the coordinator can grant now.
    var pool: Int64
    /// Sum of the outstanding amounts of all leases.
    var outstanding: Int64 = 0
    /// Units reported consumed (this window, for quotas).
    var consumed: Int64 = 0
    /// Units on leases that expired unreturned: counted as spent, never re-granted.
    var expiredSpent: Int64 = 0
    /// Token-bucket refill bookkeeping: fractional tokens ×period-in-ns, and the last refill.
    var refillRemainder: Int64 = 0
    var lastRefill: Instant
    /// Current calendar window, for quotas.
    var windowStart: Instant = .zero
    var windowEnd: Instant = .distantFuture
    /// Learning mode: until then, grant nothing beyond what nodes report holding.
    var learningUntil: Instant?
    var nodes: [NodeID: NodeEntry] = [:]
    var nextLeaseID: LeaseID = 1
    var grantsTotal: Int64 = 0

    init(spec: BudgetSpec, now: Instant) {
        self.spec = spec
        self.lastRefill = now
        switch spec.kind {
        case .rate(_, _, let burst): pool = burst
        case .quota(let allowance, let window):
            pool = allowance
            (windowStart, windowEnd) = window.window(containing: now)
        case .concurrency(let limit): pool = limit
        }
    }

    var isLearning: Bool { learningUntil != nil }
    var holders: Int { nodes.values.reduce(0) { $0 + ($1.lease != nil ? 1 : 0) } }

    // MARK: time

    /// Brings the account up to `now`: ends learning, rolls a quota window, expires leases,
    /// refills a token bucket. Returns the leases that expired, for metrics.
    mutating func advance(to now: Instant, expired: inout [(NodeID, Int64)]) {
        if let until = learningUntil, now >= until {
            endLearning(at: until)
        }
        if case .quota(let allowance, let window) = spec.kind, now >= windowEnd {
            // Every lease of the old window ended with it (grants never outlive the window).
            for (node, var entry) in nodes where entry.lease != nil {
                expired.append((node, entry.lease!.outstanding))
                entry.lease = nil
                nodes[node] = entry
            }
            (windowStart, windowEnd) = window.window(containing: now)
            outstanding = 0
            consumed = 0
            expiredSpent = 0
            pool = isLearning ? 0 : allowance
        }
        for (node, entry) in nodes {
            guard let lease = entry.lease, lease.expiresAt <= now else { continue }
            expire(node: node, lease: lease)
            expired.append((node, lease.outstanding))
        }
        refill(to: now)
    }

    private mutating func expire(node: NodeID, lease: Lease) {
        nodes[node]?.lease = nil
        outstanding -= lease.outstanding
        if spec.kind.isConcurrency {
            // The node aborted its in-flight requests when its copy of the lease ended
            // (earlier than ours), so the permits are free again.
            if !isLearning { pool += lease.outstanding }
        } else {
            expiredSpent += lease.outstanding
        }
    }

    mutating func refill(to now: Instant) {
        guard case .rate(let limit, let period, let burst) = spec.kind else { return }
        defer { lastRefill = max(lastRefill, now) }
        guard !isLearning, now > lastRefill else { return }
        let p = period.nanoseconds
        let space = burst - pool - outstanding
        let dt = (now - lastRefill).nanoseconds
        // Beyond this the bucket is full whatever the remainder: avoids overflow.
        let fullAfter = (burst / limit + 2) * p
        if space <= 0 || dt >= fullAfter || dt < 0 {
            if space > 0 { pool += space }
            refillRemainder = 0
            return
        }
        let product = dt.multipliedFullWidth(by: limit)
        let (low, carry) = product.low.addingReportingOverflow(UInt64(refillRemainder))
        let (q, r) = p.dividingFullWidth((high: product.high + (carry ? 1 : 0), low: low))
        if q >= space {
            pool += space
            refillRemainder = 0
        } else {
            pool += q
            refillRemainder = r
        }
    }

    // MARK: learning mode

    mutating func startLearning(epoch: UInt64, now: Instant, until: Instant, committed: Int64) {
        self.epoch = epoch
        learningUntil = until
        pool = 0
        refillRemainder = 0
        lastRefill = now
        if case .quota(let allowance, _) = spec.kind {
            consumed = min(allowance, max(0, committed))
        }
    }

    private mutating func endLearning(at until: Instant) {
        learningUntil = nil
        lastRefill = until
        refillRemainder = 0
        switch spec.kind {
        case .rate:
            pool = 0 // refills from here on, from `until`
        case .quota(let allowance, _):
            pool = max(0, allowance - consumed - outstanding - expiredSpent)
        case .concurrency(let limit):
            pool = max(0, limit - outstanding)
        }
    }

    // MARK: invariants

    /// Nil when the books balance; otherwise what is wrong. Used by tests at every step.
    func checkInvariants() -> String? {
        if pool < 0 { return "\(spec.id): pool \(pool) < 0" }
        let leased = nodes.values.reduce(Int64(0)) { $0 + ($1.lease?.outstanding ?? 0) }
        if leased != outstanding { return "\(spec.id): outstanding \(outstanding) != Σ leases \(leased)" }
        for (n, e) in nodes {
            if let l = e.lease, l.outstanding < 0 { return "\(spec.id): lease of \(n) outstanding \(l.outstanding) < 0" }
        }
        switch spec.kind {
        case .rate(_, _, let burst):
            if !isLearning && pool > 0 && pool + outstanding > burst {
                return "\(spec.id): pool \(pool) + outstanding \(outstanding) > burst \(burst)"
            }
        case .quota(let allowance, _):
            if pool + outstanding + consumed + expiredSpent > allowance && pool > 0 {
                return "\(spec.id): pool+outstanding+consumed+expired = \(pool + outstanding + consumed + expiredSpent) > allowance \(allowance)"
            }
        case .concurrency(let limit):
            if pool + outstanding > limit {
                return "\(spec.id): pool \(pool) + outstanding \(outstanding) > limit \(limit)"
            }
        }
        return nil
    }
}
