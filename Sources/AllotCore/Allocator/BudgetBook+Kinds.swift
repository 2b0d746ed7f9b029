/// A rate budget's own books: its terms, the rate nodes may be enforcing, and the refill of
/// the pool (a token bucket of `burst` units refilled at the rate no node holds).
struct RateBook: Sendable {
    typealias Lease = BudgetAccount.Lease
    typealias NodeEntry = BudgetAccount.NodeEntry

    let limit: Int64
    let period: Duration
    let burst: Int64
    /// Σ committed rate over leases.
    var committedRate: Int64 = 0
    /// Token-bucket refill of the pool: fractional tokens × period-in-ns, and when.
    var refillRemainder: Int64 = 0
    var lastRefill: Instant

    /// Refills the pool at the rate no node holds, up to the burst minus the capacity nodes
    /// hold (`outstanding`). Exact integer arithmetic; fractions carry over. None while learning.
    mutating func refill(to now: Instant, pool: inout Int64, outstanding: Int64, learning: Bool) {
        defer { lastRefill = max(lastRefill, now) }
        guard !learning, now > lastRefill else { return }
        let p = period.nanoseconds
        let space = burst - pool - outstanding
        let freeRate = limit - committedRate
        let dt = (now - lastRefill).nanoseconds
        guard space > 0, freeRate > 0 else {
            refillRemainder = 0
            return
        }
        // Full whatever the remainder (avoids overflow below). The threshold itself may not
        // fit (a huge burst refilled at a rate of a few units per long period): then not full.
        let (full, over) = (burst / freeRate + 2).multipliedReportingOverflow(by: p)
        if !over && dt >= full {
            pool += space
            refillRemainder = 0
            return
        }
        // dt·freeRate (+ the carried fraction) over the period, in unsigned 128-bit arithmetic:
        // a quotient past 64 bits (dt·freeRate ≥ p·2^64) is past any space.
        let product = dt.multipliedFullWidth(by: freeRate)
        let (low, carry) = product.low.addingReportingOverflow(UInt64(refillRemainder))
        let high = UInt64(product.high) + (carry ? 1 : 0)
        guard high < UInt64(p) else {
            pool += space
            refillRemainder = 0
            return
        }
        let (q, r) = UInt64(p).dividingFullWidth((high: high, low: low))
        if q >= UInt64(space) {
            pool += space
            refillRemainder = 0
        } else {
            pool += Int64(q)
            refillRemainder = Int64(r)
        }
    }

    /// A node's demand in units per period, from units per second, with a little headroom so
    /// a node whose demand equals its rate is not starved by noise.
    func demandPerPeriod(_ demandRate: Int64) -> Int64 {
        let perPeriod = Allocator.scale(max(0, demandRate), period.nanoseconds, 1_000_000_000)
        return perPeriod > 0 ? perPeriod + perPeriod / 16 + 1 : 0
    }

    /// Sets what `lease`'s node may be enforcing, keeping the totals in step (`outstanding`
    /// is Σ committed capacity).
    mutating func commit(_ lease: inout Lease, rate: Int64, capacity: Int64, outstanding: inout Int64) {
        // What the lease held comes off first: adding first overflowed near 2^62 (a sum that
        // saturates stops there, and the totals no longer matched the leases).
        committedRate = Checked.sum(committedRate, -lease.committedRate, rate)
        outstanding = Checked.sum(outstanding, -lease.committedCapacity, capacity)
        lease.committedRate = rate
        lease.committedCapacity = capacity
    }

    /// Learning mode: takes over the terms a node reports enforcing, never more than the
    /// budget itself allows (a node cannot claim the whole pool).
    mutating func adopt(_ req: AcquireRequest, into lease: inout Lease, outstanding: inout Int64) {
        lease.rate = min(max(0, req.rateInUse), limit)
        lease.capacity = min(max(0, req.capacityInUse), burst)
        commit(&lease, rate: lease.rate, capacity: lease.capacity, outstanding: &outstanding)
    }

    /// From now on the node enforces at most what it reports; terms we sent after the last one
    /// it applied may still arrive and stay committed.
    mutating func acknowledge(_ req: AcquireRequest, entry: inout NodeEntry, lease: inout Lease, outstanding: inout Int64) {
        entry.unacknowledged.removeAll { $0.sequence <= req.appliedSequence }
        let inFlightRate = entry.unacknowledged.map(\.rate).max() ?? 0
        let inFlightCap = entry.unacknowledged.map(\.capacity).max() ?? 0
        commit(&lease, rate: min(lease.committedRate, max(0, req.rateInUse, inFlightRate)),
               capacity: min(lease.committedCapacity, max(0, req.capacityInUse, inFlightCap)), outstanding: &outstanding)
        lease.rate = min(lease.rate, lease.committedRate)
        lease.capacity = min(lease.capacity, lease.committedCapacity)
    }

    /// New terms sent on `lease` (a grant or a push) with `sequence`: a raise is committed at
    /// once; a lowered term stays committed at the old value until the node shows it applied it.
    mutating func offer(rate: Int64, capacity: Int64, sequence: UInt64, on lease: inout Lease,
                        entry: inout NodeEntry, outstanding: inout Int64) {
        commit(&lease, rate: max(lease.committedRate, rate), capacity: max(lease.committedCapacity, capacity),
               outstanding: &outstanding)
        lease.rate = rate
        lease.capacity = capacity
        entry.unacknowledged.append((sequence, rate, capacity))
    }

    /// Applies a node's cumulative counters: consumption is for statistics; released tokens
    /// return to the pool, within what the burst allows (none while learning). `closing`: the
    /// lease's capacity is freed first.
    func apply(consumed c: Int64, released r: Int64, to lease: inout Lease, closing: Bool, learning: Bool,
               pool: inout Int64, outstanding: Int64, totalConsumed: inout Int64)
        -> (consumed: Int64, released: Int64, returned: Int64) {
        let dc = max(0, c - lease.consumedSeen)
        let dr = max(0, r - lease.releasedSeen)
        lease.consumedSeen += dc
        lease.releasedSeen += dr
        totalConsumed = Checked.sum(totalConsumed, dc)
        guard !learning else { return (dc, dr, 0) }
        let own = closing ? lease.committedCapacity : 0
        let back = max(0, min(dr, burst - pool - outstanding + own))
        pool += back
        return (dc, dr, back)
    }
}

/// A quota's own books: its allowance per calendar window, and the window now current.
struct QuotaBook: Sendable {
    /// Changed at run time by `BudgetAccount.respec`.
    var allowance: Int64
    let window: CalendarWindow
    var windowStart: Instant
    var windowEnd: Instant

    init(allowance: Int64, window: CalendarWindow, now: Instant) {
        self.allowance = allowance
        self.window = window
        (windowStart, windowEnd) = window.window(containing: now)
    }

    /// What a ledger counts against the allowance (`committed`), taken as consumed.
    func consumed(committed: Int64) -> Int64 { min(allowance, max(0, committed)) }

    /// What the allowance leaves free after consumption, leases and expiries.
    func free(consumed: Int64, outstanding: Int64, expiredSpent: Int64) -> Int64 {
        max(0, allowance - consumed - outstanding - expiredSpent)
    }
}

/// A concurrency budget's own book: how many requests may be in flight fleet-wide.
struct PermitBook: Sendable {
    let limit: Int64
}
