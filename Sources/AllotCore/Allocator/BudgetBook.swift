/// What differs between the kinds of budget. `BudgetAccount` keeps what every kind shares
/// (the pool, holders, learning, journal, upstream, pushes) and asks its book the rest: the
/// pool of a fresh budget, how time moves it (a rate pool refills, a quota window rolls), how
/// a lease's grant and reports are booked, and what becomes of a lease's units when it ends.
///
/// - `rate` (`RateBook`): a lease is a refill rate and a bucket capacity the node enforces,
///   plus tokens moved from the pool into its bucket;
/// - `quota` (`QuotaBook`): a lease is a slice of a calendar window's allowance; what a lease
///   still holds when it ends counts as spent;
/// - `permits` (`PermitBook`, concurrency): a lease is a slice of a limit; permits still out
///   when a lease runs out are free again.
///
/// Every rule that depends on the kind switches here, over these three cases.
enum BudgetBook: Sendable {
    typealias Lease = BudgetAccount.Lease
    typealias NodeEntry = BudgetAccount.NodeEntry

    case rate(RateBook)
    case quota(QuotaBook)
    case permits(PermitBook)

    /// What becomes of the units still out on a lease that ends unreturned.
    enum Leftover: Sendable {
        /// Nothing to count: a rate lease's bucket held tokens, not units of these books.
        case dropped
        /// Counted as spent, never granted again.
        case spent
        /// Free again: the node aborted its in-flight requests when its copy of the lease
        /// ended (earlier than ours).
        case freed
    }

    init(_ kind: BudgetKind, now: Instant) {
        switch kind {
        case .rate(let limit, let period, let burst):
            self = .rate(RateBook(limit: limit, period: period, burst: burst, lastRefill: now))
        case .quota(let allowance, let window):
            self = .quota(QuotaBook(allowance: allowance, window: window, now: now))
        case .concurrency(let limit):
            self = .permits(PermitBook(limit: limit))
        }
    }

    /// The pool of a fresh budget (and of a new quota window): the burst, the allowance, the limit.
    var ceiling: Int64 {
        switch self {
        case .rate(let r): r.burst
        case .quota(let q): q.allowance
        case .permits(let p): p.limit
        }
    }

    /// Rate leases (terms and a bucket) rather than slices.
    var isRate: Bool {
        if case .rate = self { true } else { false }
    }

    var isPermits: Bool {
        if case .permits = self { true } else { false }
    }

    var rateBook: RateBook? {
        if case .rate(let r) = self { r } else { nil }
    }

    var quotaBook: QuotaBook? {
        if case .quota(let q) = self { q } else { nil }
    }

    // MARK: time

    /// When time alone next changes the book: a quota's window ends (nil: never).
    var deadline: Instant? { quotaBook?.windowEnd }

    /// A quota whose window has ended by `now` moves to the window containing `now`; returns
    /// the start of the window that ended (nil: none ended).
    mutating func rollWindow(to now: Instant) -> Instant? {
        guard case .quota(var q) = self, now >= q.windowEnd else { return nil }
        let oldStart = q.windowStart
        (q.windowStart, q.windowEnd) = q.window.window(containing: now)
        self = .quota(q)
        return oldStart
    }

    /// Refills a rate budget's pool up to `now` (`RateBook.refill`); other kinds do not refill.
    mutating func refill(to now: Instant, pool: inout Int64, outstanding: Int64, learning: Bool) {
        guard case .rate(var r) = self else { return }
        r.refill(to: now, pool: &pool, outstanding: outstanding, learning: learning)
        self = .rate(r)
    }

    /// A rate budget's refill starts again from `t`, with no fraction carried.
    mutating func restartRefill(at t: Instant) {
        guard case .rate(var r) = self else { return }
        r.lastRefill = t
        r.refillRemainder = 0
        self = .rate(r)
    }

    /// The pool when learning ends, from what the books learned; nil: as it is (an
    /// upstream-backed budget's pool is what its upstream deposited).
    func poolAfterLearning(consumed: Int64, outstanding: Int64, expiredSpent: Int64, upstream: Bool) -> Int64? {
        switch self {
        case .rate: 0 // refills from here on
        case .quota(let q): upstream ? nil : q.free(consumed: consumed, outstanding: outstanding, expiredSpent: expiredSpent)
        case .permits(let p): upstream ? nil : max(0, p.limit - outstanding)
        }
    }

    /// A lease's TTL: a quota's leases never outlive its window.
    func leaseTTL(_ ttl: Duration, now: Instant) -> Duration {
        guard case .quota(let q) = self else { return ttl }
        return min(ttl, q.windowEnd - now)
    }

    /// When a node short of its share of slices asks again: a quota's by its window's end at
    /// the latest, other kinds' in a quarter of the refresh interval.
    func retryWhenShort(_ refreshInterval: Duration, now: Instant) -> Duration {
        switch self {
        case .quota(let q): min(refreshInterval, q.windowEnd - now)
        default: .nanoseconds(refreshInterval.nanoseconds / 4)
        }
    }

    // MARK: leases

    /// Rate budgets: a node's demand (units per second) as units per period, with headroom.
    /// Nil for slices, which are sized by what nodes want.
    func demandPerPeriod(_ demandRate: Int64) -> Int64? {
        rateBook?.demandPerPeriod(demandRate)
    }

    /// Learning mode: takes over what a node reports holding under another owner's lease,
    /// adding nothing. A quota's holding is taken out of what the ledger says may still be on
    /// nodes (counted as consumed until then; without a ledger that is everything); permits
    /// only while some are not out.
    mutating func adopt(_ req: AcquireRequest, into lease: inout Lease, outstanding: inout Int64,
                        consumed: inout Int64, adoptable: inout Int64) {
        switch self {
        case .rate(var r):
            r.adopt(req, into: &lease, outstanding: &outstanding)
            self = .rate(r)
        case .quota:
            let take = min(max(0, req.holding), adoptable)
            adoptable -= take
            consumed -= take
            lease.granted = take
            outstanding += take
        case .permits(let p):
            let take = min(max(0, req.holding), max(0, p.limit - outstanding))
            lease.granted = take
            outstanding += take
        }
    }

    /// A node asks again under `lease`: a rate lease's terms are lowered to what the node shows
    /// it enforces (`RateBook.acknowledge`); a slice's recall it applied is done.
    mutating func acknowledge(_ req: AcquireRequest, entry: inout NodeEntry, lease: inout Lease, outstanding: inout Int64) {
        guard case .rate(var r) = self else {
            // A slice's recall is done once the node shows it applied it.
            entry.unacknowledged.removeAll { $0.sequence <= req.appliedSequence }
            return
        }
        r.acknowledge(req, entry: &entry, lease: &lease, outstanding: &outstanding)
        self = .rate(r)
    }

    /// Applies a node's cumulative counters under `lease`. Returns the consumption and release
    /// newly reported (for the journal) and the units put back in the pool. `closing`: a rate
    /// lease's node gives it up with this report (its capacity is freed first).
    func apply(consumed c: Int64, released r: Int64, to lease: inout Lease, closing: Bool, learning: Bool,
               pool: inout Int64, outstanding: inout Int64, totalConsumed: inout Int64)
        -> (consumed: Int64, released: Int64, returned: Int64) {
        if case .rate(let rates) = self {
            return rates.apply(consumed: c, released: r, to: &lease, closing: closing, learning: learning,
                               pool: &pool, outstanding: outstanding, totalConsumed: &totalConsumed)
        }
        // Slices: never more than is out on the slice.
        let ov = lease.unreturned
        let dc = min(max(0, c - lease.consumedSeen), ov)
        let dr = min(max(0, r - lease.releasedSeen), ov - dc)
        lease.consumedSeen += dc
        lease.releasedSeen += dr
        outstanding -= dc + dr
        totalConsumed += dc
        pool += dr
        return (dc, dr, dr)
    }

    /// Books a grant on `lease`, sent with `sequence`: rate terms (`RateBook.offer`; the
    /// tokens topped up were taken from the pool when sized), or `amount` units moved from
    /// the pool to the slice.
    mutating func grant(amount: Int64, rate: Int64, capacity: Int64, sequence: UInt64, on lease: inout Lease,
                        entry: inout NodeEntry, pool: inout Int64, outstanding: inout Int64) {
        switch self {
        case .rate(var r):
            r.offer(rate: rate, capacity: capacity, sequence: sequence, on: &lease, entry: &entry, outstanding: &outstanding)
            self = .rate(r)
        case .quota, .permits:
            lease.granted += amount
            outstanding += amount
            pool -= amount
        }
    }

    /// Rate budgets: new terms pushed on `lease` unasked (`RateBook.offer`).
    mutating func offer(rate: Int64, capacity: Int64, sequence: UInt64, on lease: inout Lease,
                        entry: inout NodeEntry, outstanding: inout Int64) {
        guard case .rate(var r) = self else { preconditionFailure("not a rate budget") }
        r.offer(rate: rate, capacity: capacity, sequence: sequence, on: &lease, entry: &entry, outstanding: &outstanding)
        self = .rate(r)
    }

    /// Takes `lease` off the book as it ends (a rate lease's committed rate is freed); returns
    /// what it held, its part of `outstanding`: a rate lease's committed capacity, a slice's
    /// unreturned units.
    mutating func end(_ lease: Lease) -> Int64 {
        switch self {
        case .rate(var r):
            r.committedRate -= lease.committedRate
            self = .rate(r)
            return lease.committedCapacity
        case .quota, .permits:
            return lease.unreturned
        }
    }

    /// What becomes of the units still out on a lease that runs out (`closing` false) or that
    /// its node gives up (true): a slice given up counts them as spent, whatever its kind.
    func leftover(closing: Bool) -> Leftover {
        switch self {
        case .rate: .dropped
        case .quota: .spent
        case .permits: closing ? .spent : .freed
        }
    }

    /// A final release closes a rate lease at once (its rate goes back to the pool); a
    /// slice's, once `closesAfterFinal`.
    var closesOnFinalRelease: Bool { isRate }

    /// After a final release of a slice: whether its lease closes now. Units still out were
    /// reserved in flight and will never be reported (counted as spent, `leftover`); permits
    /// still out stay leased until the lease ends.
    func closesAfterFinal(unreturned: Int64) -> Bool {
        if case .permits = self { unreturned == 0 } else { true }
    }

    /// What a release claims beyond what its node could hold: a bucket never gives back more
    /// than its committed capacity, a slice never more than it has out.
    func overClaim(released: Int64, claimed: Int64, on lease: Lease) -> Int64 {
        switch self {
        case .rate: max(0, released - lease.releasedSeen - lease.committedCapacity)
        case .quota, .permits: max(0, claimed - lease.unreturned)
        }
    }
}

extension BudgetBook {
    /// `BudgetAccount.checkInvariants` past the pool's sign, in this order: the leases add up
    /// to the totals, every unit from an upstream is accounted for, the kind's limits hold.
    func violation(in a: BudgetAccount) -> String? {
        let id = a.spec.id, pool = a.pool, outstanding = a.outstanding
        let consumed = a.consumed, expiredSpent = a.expiredSpent
        if case .rate(let r) = self {
            let caps = a.nodes.values.reduce(Int64(0)) { $0 + ($1.lease?.committedCapacity ?? 0) }
            let rates = a.nodes.values.reduce(Int64(0)) { $0 + ($1.lease?.committedRate ?? 0) }
            if caps != outstanding { return "\(id): outstanding \(outstanding) != Σ capacities \(caps)" }
            if rates != r.committedRate { return "\(id): committed rate \(r.committedRate) != Σ rates \(rates)" }
            for e in a.nodes.values {
                if let l = e.lease, l.committedRate < l.rate || l.committedCapacity < l.capacity {
                    return "\(id): a lease's committed terms are below its granted terms"
                }
            }
        } else {
            let leased = a.nodes.values.reduce(Int64(0)) { $0 + ($1.lease?.unreturned ?? 0) }
            if leased != outstanding { return "\(id): outstanding \(outstanding) != Σ leases \(leased)" }
            for (n, e) in a.nodes {
                if let l = e.lease, l.unreturned < 0 { return "\(id): lease of \(n) unreturned \(l.unreturned) < 0" }
            }
        }
        let permits = if case .permits = self { true } else { false }
        if let u = a.upstream {
            // Every unit that came from upstream is free, out, consumed, expired, sent back or lost.
            let held = u.deposited - u.withdrawn - u.lost
            if pool + outstanding + consumed + expiredSpent != held && !permits {
                return "\(id): pool+outstanding+consumed+expired = \(pool + outstanding + consumed + expiredSpent) != upstream units held \(held)"
            }
            if permits && pool + outstanding > held {
                return "\(id): permits \(pool + outstanding) > upstream permits held \(held)"
            }
        }
        switch self {
        case .rate(let r):
            if a.isLearning { return nil } // adopted terms may exceed the budget until they expire
            // A lowered limit not yet in force: nothing is free, and the books stay within the
            // terms in force since the lowering (never their sum).
            if a.draining {
                if pool > 0 { return "\(id): pool \(pool) > 0 while a lowered limit drains" }
                if outstanding > a.drainCeiling || r.committedRate > a.drainRate {
                    return "\(id): capacity \(outstanding) / rate \(r.committedRate) above every limit in force while draining (\(a.drainCeiling) / \(a.drainRate))"
                }
                return nil
            }
            if pool + outstanding > r.burst {
                return "\(id): pool \(pool) + capacity on nodes \(outstanding) > burst \(r.burst)"
            }
            if r.committedRate > r.limit { return "\(id): committed rate \(r.committedRate) > limit \(r.limit)" }
        case .quota(let q):
            if a.draining && (pool > 0 || a.used > a.drainCeiling) {
                return "\(id): pool \(pool), used \(a.used) while a lowered allowance drains (at most 0, \(a.drainCeiling))"
            }
            if pool > 0 && pool + outstanding + consumed + expiredSpent > q.allowance {
                return "\(id): pool+outstanding+consumed+expired = \(pool + outstanding + consumed + expiredSpent) > allowance \(q.allowance)"
            }
        case .permits(let p):
            if a.draining && (pool > 0 || outstanding > a.drainCeiling) {
                return "\(id): pool \(pool) + outstanding \(outstanding) while a lowered limit drains (at most 0 + \(a.drainCeiling))"
            }
            if pool + outstanding > p.limit && !a.isLearning && !a.draining {
                return "\(id): pool \(pool) + outstanding \(outstanding) > limit \(p.limit)"
            }
        }
        return nil
    }
}
