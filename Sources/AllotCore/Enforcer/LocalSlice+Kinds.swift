/// Everything the node does differently by budget kind, in one place: the enforcer's other
/// files ask these questions and never branch on the kind themselves (docs/design.md, "The
/// enforcer"). A new kind answers them here.
///
/// Two lease shapes: a **slice** of units moved from the pool (quotas; permits, which count
/// requests in flight), and a **bucket** that refills itself at the leased rate under terms
/// the coordinator may push (rate budgets).
extension LocalSlice {
    @usableFromInline enum Kind: UInt8, Sendable {
        /// A quota's slice: units granted once, spent or given back.
        case slice
        /// A rate lease: a local token bucket refilled at the leased rate, two books.
        case bucket
        /// Concurrency permits: a slice of requests in flight, each back at its settle.
        case permits

        /// The kind of a budget, and the period its rate is per (1 when it has none).
        static func of(_ kind: BudgetKind) -> (Kind, periodNs: Int64) {
            switch kind {
            case .rate(_, let period, _): (.bucket, period.nanoseconds)
            case .quota: (.slice, 1)
            case .concurrency: (.permits, 1)
            }
        }
    }

    // MARK: hot path

    /// A bucket refills up to now; other kinds hold what they were granted.
    @inlinable
    mutating func refillBucket(now: Instant) {
        if kind == .bucket { refill(now: now) }
    }

    /// Takes `amount` from the spendable units (both books of a bucket).
    @inlinable
    mutating func charge(_ amount: Int64) {
        available -= amount
        if kind == .bucket { noRefundLevel -= amount }
    }

    /// A request admitted under the lease: its units held until settle (`hold`), or spent.
    @inlinable
    mutating func take(_ amount: Int64, hold: Bool) {
        charge(amount)
        if hold {
            reserved += amount
        } else {
            consumed += amount
            fitToCapacity() // as settle would
        }
    }

    /// A bucket's `available` never rises above its capacity less what is reserved (a refund
    /// never lifts a local bucket above its capacity).
    @inlinable
    mutating func fitToCapacity() {
        if kind == .bucket { available = min(available, max(0, capacity - reserved)) }
    }

    // MARK: grants

    /// Tokens arriving (a grant moving tokens from the pool): into both books, within the
    /// capacity (`available` never above capacity − reserved, nor lifted above what it had
    /// when that is already negative: tokens only ever fill, never erase a charge).
    mutating func deposit(_ amount: Int64) {
        available = max(min(available, 0), min(Checked.add(available, amount), capacity - reserved))
        if kind == .bucket { noRefundLevel = max(min(noRefundLevel, 0), min(Checked.add(noRefundLevel, amount), capacity)) }
    }

    /// Units leaving the node (given back to the pool, or repaying debt): out of both books.
    mutating func withdraw(_ amount: Int64) {
        available -= amount
        if kind == .bucket { noRefundLevel = min(noRefundLevel - amount, capacity) }
    }

    /// Whether a grant can carry terms a push already superseded (only buckets have terms).
    func hasNewerTerms(than g: Grant) -> Bool {
        kind == .bucket && g.leaseID == leaseID && g.sequence <= lastSequence
    }

    /// Only a bucket's terms are pushed unasked (an offer raises them, a recall lowers them).
    var takesPushes: Bool { kind == .bucket }

    /// A grant's units, and a bucket's terms (none after a stale adoption). True when the
    /// terms were lowered on the same lease: the coordinator keeps the old ones committed
    /// until the node acknowledges.
    mutating func apply(_ g: Grant, staleAdoption: Bool, now: Instant) -> Bool {
        available = Checked.add(available, g.amount)
        // The coordinator has room again; not a grant sent before a recall that overtook it
        // (its units then go back at once, as the recall says).
        if g.amount > 0 && g.sequence >= lastSequence { holdCap = nil } else { applyHoldCap() }
        guard kind == .bucket else { return false }
        noRefundLevel = Checked.add(noRefundLevel, g.amount)
        let lowered = g.leaseID == leaseID && (g.rate < rate || g.capacity < capacity)
        rate = staleAdoption ? 0 : g.rate
        capacity = staleAdoption ? 0 : g.capacity
        lastRefill = now
        giveBackAboveCapacity()
        return lowered
    }

    /// Permits still held by requests in flight when the lease ends (the shell aborts them).
    var permitsInUse: Int64 { kind == .permits ? reserved : 0 }

    // MARK: poll

    /// A bucket refills by itself and is never held back for another budget of a set; a
    /// slice gives back what it holds while its requests wait for another budget.
    var canBeHeldBack: Bool { kind != .bucket }

    /// A recall lowered a bucket's terms, or took back a slice's units: acknowledged at once.
    var awaitsAck: Bool { (kind == .bucket && needsAck) || recalled }

    /// A bucket whose demand stopped still has to report the drop (it cannot fill at rate 0;
    /// the lease's end comes then).
    var hasDropToReport: Bool { kind == .bucket && reportedDemand > 1 && rate > 0 }

    /// A slice the upstream charged above its bound owes: it asks for the debt (a bucket
    /// repays its debt from its next grant or refund, without an ask of its own).
    var asksForDebt: Bool { kind != .bucket && debt > 0 }

    /// What to ask for, for `perInterval` units of demand per refresh interval: one interval's
    /// worth on top of what is reserved (a bucket two: it must absorb demand's noise on its
    /// own); permits, what is in flight plus room for its noise (Little's law is already in
    /// the in-flight count; denied attempts raise it through `needsRefill`).
    func target(perInterval: Int64) -> Int64 {
        switch kind {
        case .slice: Checked.add(max(perInterval, lastCost, 1), reserved)
        case .bucket: Checked.add(max(2 * perInterval, lastCost, 1), reserved)
        case .permits: reserved + reserved / 4 + 1 + (needsRefill ? max(1, reserved / 4) : 0)
        }
    }

    /// Running low: no permit free, or units for less than `lead` plus one request.
    func isLow(lead: Int64) -> Bool {
        kind == .permits ? available == 0 : spendable <= lead + lastCost
    }

    /// A low slice asks only if it wants more than it holds: the coordinator sizes slices by
    /// the want, so a node holding its want would be told "you hold your share" on every
    /// poll (the demo's top talker, 1,480 empty answers in 8 s for one quota). A bucket asks.
    /// Permits recalled for another node (`holdCap` set) ask only for a refused request, never
    /// for headroom: the recall would bounce back and forth.
    func wantsMore(than target: Int64) -> Bool {
        kind == .bucket || holding < target && !(kind == .permits && holdCap != nil)
    }

    /// Holding far more than demand needs: what a slice returns (a bucket's rate is
    /// rebalanced by the coordinator instead).
    func excess(target: Int64, lead: Int64) -> Int64? {
        guard kind != .bucket, available > Checked.sum(target, target, lead), available > 0 else { return nil }
        return available - target
    }

    /// Whether to ask now, and the demand (units per second) to report, from the common
    /// answer `need` and the demand `rate` measured.
    /// - permits: at most ten asks per refresh interval;
    /// - a bucket refills itself and the coordinator rebalances it by push, so it speaks only
    ///   when it runs dry, when its demand moved far from what it last reported (judged on
    ///   the one-second average, steady enough at a few requests per second), or to
    ///   acknowledge a recall.
    mutating func decideAsk(need: Bool, rate: Int64, low: Bool, hasLease: Bool,
                            intervalNs: Int64, now: Instant) -> (need: Bool, reported: Int64) {
        switch kind {
        case .slice:
            return (need || (recalled && hasLease), rate) // a recall is acknowledged at once
        case .permits:
            // A refused request asks at once (not before a retry the coordinator named); asks
            // for headroom, at most every tenth of the refresh interval.
            let paced = refused || now - lastSentAt >= .nanoseconds(intervalNs / 10)
            return ((need && paced) || (recalled && hasLease), rate)
        case .bucket:
            let gap = now - lastSentAt >= .nanoseconds(intervalNs / 10)
            let average = demand.average(now: now)
            let recent = demand.recentRate(now: now)
            let grew = hasLease && average > reportedDemand + reportedDemand / 2 + 1 && (needsRefill || low)
            // Demand collapsed (seen over the last 300 ms) and the bucket sits full, so the
            // rate is going to waste: report at once, and give the rate back before asking.
            let full = Checked.product(10, Checked.add(available, reserved)) >= Checked.product(9, capacity)
            let dropped = hasLease && reportedDemand > Checked.product(3, recent) + 1 && full
            let ask = ((need || grew || dropped) && gap) || (needsAck && hasLease)
            // What we report: while the bucket sits full the node is not using its rate, so
            // its recent demand; otherwise the steadier average once the lease runs smoothly,
            // or the fast estimate when starting, running dry or after a drop.
            var reported = rate
            if hasLease && full { reported = recent } else if hasLease && !needsRefill && !low { reported = average }
            if dropped && ask {
                // Committed at once by the coordinator (the node enforces it from now on), so
                // the rate can be offered to others in the same step.
                self.rate = min(self.rate, 2 * (Checked.product(recent, periodNs) / 1_000_000_000) + 1)
            }
            return (ask, reported)
        }
    }

    // MARK: checks

    /// Nil when the books balance; otherwise what is wrong.
    func bookViolation() -> String? {
        // A bucket's two books may each go below 0 (the other admitted), never both.
        let best = kind == .bucket ? max(available, noRefundLevel) : available
        if best < 0 { return "available \(available) and \(noRefundLevel) both < 0" }
        if kind == .bucket && leaseID != 0 && noRefundLevel > max(0, capacity) {
            return "\(noRefundLevel) above the capacity \(capacity)"
        }
        return nil
    }
}

/// The hot path's kind-dependent answers, on the kind rather than the slice: called on a slice
/// in place (`slices[i].kind.amount(...)`), a method of the slice itself had the optimizer copy
/// the whole slice (624 bytes, with its references retained and released) for each call.
extension LocalSlice.Kind {
    /// What a request takes from a budget in `unit`.
    @inlinable
    func amount(for cost: Cost, unit: Unit) -> Int64 { self == .permits ? 1 : cost[unit] }

    /// What a settled request cost a budget in `unit` (a permit is given back, never spent).
    @inlinable
    func spent(_ actual: Cost, unit: Unit) -> Int64 { self == .permits ? 0 : actual[unit] }

    /// The order in which a request waits for the budgets of its set: buckets first (they
    /// refill by themselves), then the set's order (the same on every node).
    @inlinable
    func waitRank(_ i: Int) -> Int { (self == .bucket ? 0 : BudgetSet.capacity) + i }

    /// Spent at once (`admit`), a permit is back at once: only a held request keeps it.
    @inlinable
    func keeps(hold: Bool) -> Bool { hold || self != .permits }
}
