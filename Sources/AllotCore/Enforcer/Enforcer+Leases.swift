/// The enforcer's side of the lease protocol: what to send, and what to do with answers.
extension Enforcer {
    /// A message from the node to the coordinator.
    public enum Outgoing: Hashable, Sendable {
        case acquire(AcquireRequest)
        case release(ReleaseRequest)
    }

    public enum GrantOutcome: Hashable, Sendable {
        case applied
        /// From an owner epoch older than one already seen for this budget.
        case ignoredStaleEpoch
        /// Not an answer to the acquire in flight (a late duplicate, or already answered).
        case ignoredUnknownRequest
        case unknownBudget
    }

    /// Something the shell must act on.
    public enum Event: Hashable, Sendable {
        /// The lease ended before it was renewed. For a concurrency budget with permits in
        /// use, the shell MUST abort those requests: the coordinator will reuse the permits.
        case leaseExpired(BudgetHandle, permitsInUse: Int64)
    }

    /// The messages the node should send now: refills at the low watermark, renewals, retries
    /// of unanswered acquires (same request id), releases when demand dropped.
    public mutating func poll(now: Instant) -> [Outgoing] {
        _wantsPoll = false
        var out: [Outgoing] = []
        for i in slices.indices {
            if let m = pollSlice(i, now: now) { out.append(m) }
        }
        return out
    }

    private mutating func pollSlice(_ i: Int, now: Instant) -> Outgoing? {
        var s = slices[i]
        defer { slices[i] = s }
        if var p = s.pending {
            guard now - p.lastSentAt >= settings.retryTimeout else { return nil }
            p.lastSentAt = now
            s.pending = p
            return .acquire(p.request)
        }
        let rate = s.demand.rate(now: now)
        if rate > 0 { s.lastDemandAt = now }
        let hasLease = s.leaseID != 0 && now < s.expiresAt
        if s.leaseID != 0 && !hasLease { expireSlice(&s) }
        if s.isRate && hasLease { s.refill(now: now) }

        // Demand gone: give everything back.
        if hasLease && rate == 0 && now - s.lastDemandAt >= settings.idleRelease && s.reserved == 0 {
            return releaseAll(&s, spec: specs[i], final: true)
        }
        let intervalNs = settings.refreshInterval.nanoseconds
        // Enough for one interval at the measured demand, on top of what is reserved in flight
        // (a local bucket asks for two intervals: it must absorb demand's noise on its own).
        let perInterval = rate * intervalNs / 1_000_000_000
        let target = max(s.isRate ? 2 * perInterval : perInterval, s.lastCost, 1) + s.reserved
        s.target = target
        let lead = s.admitted.rate(now: now) * settings.prefetchLead.nanoseconds / 1_000_000_000
        let low = s.available <= lead + s.lastCost
        let renew = hasLease && s.expiresAt - now <= settings.renewMargin && rate > 0
        var need = (s.needsRefill || low) && rate > 0 && now >= s.retryNotBefore
        var desiredRate: Int64 = 0
        if s.isRate {
            // A rate lease refills itself: ask again only at a fair pace, or to give back
            // rate the node no longer needs.
            let gap = now - s.lastSentAt >= .nanoseconds(intervalNs / 10)
            // Give back promptly when demand dropped (seen over the last 300 ms).
            let recent = s.demand.recentRate(now: now) * s.periodNs / 1_000_000_000
            desiredRate = recent + recent / 8 + 1
            let surplus = hasLease && s.rate > desiredRate + desiredRate / 2 + 1
                && now - s.lastSentAt >= .nanoseconds(intervalNs / 10)
            // Refresh every interval while there is demand, so the coordinator can rebalance
            // rate held by this node towards others (it cannot call us).
            let refresh = hasLease && rate > 0 && now - s.lastSentAt >= settings.refreshInterval
            need = (need && gap) || surplus || refresh
        }
        if need || renew {
            s.needsRefill = false
            if s.isRate && hasLease && s.rate > desiredRate + desiredRate / 2 + 1 {
                // Give back before asking: from now on enforce no more than the demand needs.
                s.rate = min(s.rate, desiredRate)
                let cap = min(s.capacity, max(2 * target, 2 * s.lastCost, s.reserved))
                _ = cap
                if cap < s.capacity {
                    let excess = max(0, s.available + s.reserved - cap)
                    let back = min(excess, s.available)
                    s.available -= back
                    s.released += back
                    s.capacity = cap
                }
            }
            let req = AcquireRequest(
                requestID: nextRequestID, node: settings.node, budget: specs[i].id, want: target,
                demandRate: rate, leaseID: s.leaseID, epoch: s.epoch, consumed: s.consumed,
                released: s.released, holding: s.holding, available: s.available,
                rateInUse: s.rate, capacityInUse: s.capacity)
            nextRequestID += 1
            s.pending = LocalSlice.Pending(requestID: req.requestID, firstSentAt: now, lastSentAt: now, request: req)
            s.lastSentAt = now
            return .acquire(req)
        }
        // Slices: holding far more than demand needs: return the excess.
        if !s.isRate && hasLease && s.available > 2 * target + lead && s.available > 0 {
            let excess = s.available - target
            s.available -= excess
            s.released += excess
            return .release(ReleaseRequest(node: settings.node, budget: specs[i].id, leaseID: s.leaseID,
                                           consumed: s.consumed, released: s.released, final: false))
        }
        return nil
    }

    private func releaseAll(_ s: inout LocalSlice, spec: BudgetSpec, final: Bool) -> Outgoing {
        s.released += s.available
        s.available = 0
        let msg = ReleaseRequest(node: settings.node, budget: spec.id, leaseID: s.leaseID,
                                 consumed: s.consumed, released: s.released, final: final)
        if final {
            s.rate = 0
            s.capacity = 0
            s.leaseID = 0
            s.expiresAt = .zero
            s.consumed = 0
            s.released = 0
            s.reserved = 0
        }
        return .release(msg)
    }

    private func expireSlice(_ s: inout LocalSlice) {
        s.rate = 0
        s.capacity = 0
        s.leaseID = 0
        s.available = 0
        s.reserved = 0
        s.consumed = 0
        s.released = 0
        s.expiresAt = .zero
    }

    /// Applies the coordinator's answer to an acquire.
    public mutating func receive(_ g: Grant, now: Instant) -> GrantOutcome {
        guard let h = handles[g.budget] else { return .unknownBudget }
        let i = Int(h.index)
        var s = slices[i]
        defer { slices[i] = s }
        guard let p = s.pending, p.requestID == g.requestID else { return .ignoredUnknownRequest }
        guard g.epoch >= s.epoch else { return .ignoredStaleEpoch }
        s.pending = nil
        s.epoch = g.epoch
        s.retryNotBefore = now + g.retryAfter
        guard g.leaseID != 0 else { return .applied }
        if s.isRate && s.leaseID != 0 && now < s.expiresAt { s.refill(now: now) }
        if g.leaseID != s.leaseID {
            if g.adopted {
                // The new owner took over our holding as of the request: count from there.
                s.consumed -= p.request.consumed
                s.released -= p.request.released
            } else {
                s.available = 0
                s.reserved = 0
                s.consumed = 0
                s.released = 0
            }
            s.leaseID = g.leaseID
        }
        s.available += g.amount
        if s.isRate {
            s.rate = g.rate
            s.capacity = g.capacity
            s.lastRefill = now
            // Tokens beyond the new capacity are gone (the coordinator counted them spent).
            s.available = max(0, min(s.available, g.capacity - s.reserved))
        }
        s.expiresAt = p.firstSentAt + g.ttl
        if s.debt > 0 {
            // Repay what `open` mode admitted without a lease.
            let paid = min(s.debt, s.available)
            s.available -= paid
            s.consumed += paid
            s.debt -= paid
        }
        return .applied
    }

    /// Ends leases whose time is up. Call at `nextDeadline`.
    public mutating func tick(now: Instant) -> [Event] {
        var events: [Event] = []
        for i in slices.indices where slices[i].leaseID != 0 && now >= slices[i].expiresAt {
            let inUse = slices[i].isConcurrency ? slices[i].reserved : 0
            expireSlice(&slices[i])
            events.append(.leaseExpired(BudgetHandle(index: Int32(i)), permitsInUse: inUse))
        }
        return events
    }

    /// Gives every lease back, for a clean shutdown.
    public mutating func shutdown(now: Instant) -> [Outgoing] {
        var out: [Outgoing] = []
        for i in slices.indices where slices[i].leaseID != 0 && now < slices[i].expiresAt {
            out.append(releaseAll(&slices[i], spec: specs[i], final: true))
        }
        return out
    }

    /// The next instant at which `tick` or `poll` has work.
    public var nextDeadline: Instant {
        var t = Instant.distantFuture
        for s in slices {
            if s.leaseID != 0 { t = min(t, s.expiresAt, s.expiresAt - settings.renewMargin) }
            if let p = s.pending { t = min(t, p.lastSentAt + settings.retryTimeout) }
        }
        return t
    }

    // MARK: inspection

    /// A slice as seen by tests and status pages.
    public struct SliceStatus: Hashable, Sendable {
        public var leaseID: LeaseID
        public var available: Int64
        public var reserved: Int64
        public var consumed: Int64
        public var released: Int64
        public var debt: Int64
        public var expiresAt: Instant
        public var awaitingGrant: Bool
        public var rate: Int64
        public var capacity: Int64
    }

    public func status(_ h: BudgetHandle) -> SliceStatus {
        let s = slices[Int(h.index)]
        return SliceStatus(leaseID: s.leaseID, available: s.available, reserved: s.reserved,
                           consumed: s.consumed, released: s.released, debt: s.debt,
                           expiresAt: s.expiresAt, awaitingGrant: s.pending != nil, rate: s.rate, capacity: s.capacity)
    }
}

extension Enforcer {
    /// Nil when every slice's books balance (nothing negative, nothing spent beyond grants).
    public func checkInvariants() -> String? {
        for (i, s) in slices.enumerated() {
            if s.available < 0 { return "\(settings.node) \(specs[i].id): available \(s.available) < 0" }
            if s.reserved < 0 { return "\(settings.node) \(specs[i].id): reserved \(s.reserved) < 0" }
            if s.leaseID == 0 && (s.available != 0 || s.reserved != 0) {
                return "\(settings.node) \(specs[i].id): holds \(s.available)+\(s.reserved) without a lease"
            }
        }
        return nil
    }
}
