/// When a node talks to its coordinator: everything here runs off the hot path, from
/// `poll(now:)`, which the shell calls on a timer and whenever `wantsPoll` is set.
extension Enforcer {
    /// The messages the node should send now: refills at the low watermark, renewals, retries
    /// of unanswered acquires (same request id), demand reports, acknowledgements of recalls,
    /// releases when demand dropped.
    public mutating func poll(now: Instant) -> [Outgoing] {
        _wantsPoll = false
        var out: [Outgoing] = []
        for i in slices.indices {
            if let m = pollSlice(i, now: now) { out.append(m) }
        }
        return out
    }

    /// When the shell should next run `tick` and `poll` (it polls no more often than its
    /// poll interval). `now` while a poll has something to watch: a poll was asked for
    /// (`wantsPoll`), demand was seen in the last second (the refill, renewal and demand
    /// reports follow it), a recall waits to be acknowledged, a moved
    /// budget's lease waits to be reported, a slice is held back, or a rate lease has yet to
    /// report that its demand stopped. Otherwise the next
    /// deadline: an unanswered acquire's retry, a debt's ask, the idle release, a lease's end
    /// (renewal needs demand). A request that needs a poll sets `wantsPoll` (the gateway
    /// then wakes its lease client), so an idle node does not poll every interval.
    public mutating func nextWake(now: Instant) -> Instant {
        _asleep = false
        if _wantsPoll { return now }
        var t = Instant.distantFuture
        for s in slices {
            if !s.demand.isQuiet(now: now) || !s.admitted.isQuiet(now: now) { return now }
            let hasLease = s.leaseID != 0
            if hasLease && (s.isRate && s.needsAck || s.reportOwner || now - s.heldBackAt < settings.refreshInterval) { return now }
            // A rate lease whose demand stopped reports the drop once its bucket sits full
            // (it cannot fill at rate 0; the lease's end comes then).
            if hasLease && s.isRate && s.reportedDemand > 1 && s.rate > 0 { return now }
            if hasLease { t = min(t, s.expiresAt) }
            if let p = s.pending {
                t = min(t, p.lastSentAt + settings.retryTimeout)
                continue
            }
            guard hasLease else { continue }
            if s.reserved == 0 { t = min(t, max(now, s.lastDemandAt + settings.idleRelease)) }
            if !s.isRate && s.debt > 0 { t = min(t, max(s.retryNotBefore, s.lastSentAt + settings.retryTimeout)) }
        }
        // Nothing to watch: the next request or settlement wakes the shell (`wantsPoll`).
        _asleep = true
        return t
    }

    private mutating func pollSlice(_ i: Int, now: Instant) -> Outgoing? {
        var s = slices[i]
        defer { slices[i] = s }
        if s.leaseID != 0 && now >= s.expiresAt { expireSlice(&s) }
        let admittedRate = s.admitted.rate(now: now)
        s.chooseBook(admittedPerSecond: admittedRate)
        if var p = s.pending {
            if p.request.leaseID == s.leaseID {
                guard now - p.lastSentAt >= settings.retryTimeout else { return nil }
                p.lastSentAt = now
                s.pending = p
                return .acquire(p.request)
            }
            // The lease that request reported on ended while it went unanswered (a coordinator
            // out of reach): re-sent, its stale holding would be adopted by a new owner as if
            // this node still held it. Ask afresh instead.
            s.pending = nil
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
        // Held back (requests wait for another budget of their set) and nothing admitted
        // lately: what the slice holds is of no use here and may be what the nodes holding
        // that other budget wait for. Give it all back and ask for nothing more; the lease
        // stays, and is still renewed and reported if the budget's owner changes.
        let heldBack = !s.isRate && hasLease && now - s.heldBackAt < settings.refreshInterval
            && s.admitted.recentRate(now: now) == 0
        if heldBack && s.available > 0 && !s.reportOwner {
            s.released += s.available
            s.available = 0
            return .release(ReleaseRequest(node: settings.node, budget: specs[i].id, leaseID: s.leaseID,
                                           consumed: s.consumed, released: s.released, final: false))
        }
        let intervalNs = settings.refreshInterval.nanoseconds
        // Enough for one interval at the measured demand, on top of what is reserved in flight
        // (a local bucket asks for two intervals: it must absorb demand's noise on its own).
        let perInterval = Checked.product(rate, intervalNs) / 1_000_000_000
        var target = Checked.add(max(s.isRate ? 2 * perInterval : perInterval, s.lastCost, 1), s.reserved)
        if s.isConcurrency {
            // Permits: what is in flight now, plus room for its noise (Little's law is already
            // in the in-flight count); denied attempts raise it through `needsRefill` below.
            target = s.reserved + s.reserved / 4 + 1 + (s.needsRefill ? max(1, s.reserved / 4) : 0)
        }
        let lead = Checked.product(admittedRate, settings.prefetchLead.nanoseconds) / 1_000_000_000
        s.watermark = lead
        let low = s.isConcurrency ? s.available == 0 : s.spendable <= lead + s.lastCost
        // Renew before the lease ends; at most every third of the margin, because a quota
        // lease cannot outlive its window and renewing it near the window's end changes nothing.
        let renew = hasLease && s.expiresAt - now <= settings.renewMargin && rate > 0
            && now - s.lastSentAt >= settings.renewMargin / 3
            || hasLease && s.reportOwner
        s.reportOwner = false
        // A low slice asks only if it wants more than it holds: the coordinator sizes slices by
        // the want, so a node holding its want would be told "you hold your share" on every
        // poll (the demo's top talker, 1,480 empty answers in 8 s for one quota).
        var need = (s.needsRefill || (low && (s.isRate || s.holding < target))) && rate > 0 && now >= s.retryNotBefore
        if !s.isRate && s.debt > 0 && hasLease && now >= s.retryNotBefore && now - s.lastSentAt >= settings.retryTimeout {
            // A request the upstream charged above its bound left a debt: ask for it now, so
            // the grant repays it and the ledger counts it (docs/gateway.md, "Settle").
            target = Checked.sum(target, s.debt)
            need = true
        }
        if s.isConcurrency {
            // At most ten asks per refresh interval for permits.
            need = need && now - s.lastSentAt >= .nanoseconds(intervalNs / 10)
        }
        var reported = rate
        if s.isRate {
            // A rate lease refills itself and the coordinator rebalances it by push, so the
            // node only speaks when it runs dry, or when its demand moved far from what it
            // last reported (judged on the one-second average, steady enough at a few
            // requests per second), or to acknowledge a recall.
            let gap = now - s.lastSentAt >= .nanoseconds(intervalNs / 10)
            let average = s.demand.average(now: now)
            let recent = s.demand.recentRate(now: now)
            let grew = hasLease && average > s.reportedDemand + s.reportedDemand / 2 + 1 && (s.needsRefill || low)
            // Demand collapsed (seen over the last 300 ms) and the bucket sits full, so the
            // rate is going to waste: report at once, and give the rate back before asking.
            let full = Checked.product(10, Checked.add(s.available, s.reserved)) >= Checked.product(9, s.capacity)
            let dropped = hasLease && s.reportedDemand > Checked.product(3, recent) + 1 && full
            need = ((need || grew || dropped) && gap) || (s.needsAck && hasLease)
            // The steadier average once the lease runs smoothly; the faster estimate when
            // starting, running dry or after a drop.
            // What we report: while the bucket sits full the node is not using its rate, so
            // its recent demand; otherwise the steadier average, or the fast estimate when
            // starting or running dry.
            if hasLease && full { reported = recent } else if hasLease && !s.needsRefill && !low { reported = average }
            if dropped && need {
                // Committed at once by the coordinator (the node enforces it from now on), so
                // the rate can be offered to others in the same step.
                s.rate = min(s.rate, 2 * (Checked.product(recent, s.periodNs) / 1_000_000_000) + 1)
            }
        }
        if heldBack { need = false }
        if need || renew {
            s.needsRefill = false
            s.needsAck = false
            let req = AcquireRequest(
                requestID: nextRequestID, node: settings.node, budget: specs[i].id, want: target,
                demandRate: reported, leaseID: s.leaseID, epoch: s.epoch, consumed: s.consumed,
                released: s.released, holding: s.holding, available: max(0, s.available),
                rateInUse: s.rate, capacityInUse: s.capacity, appliedSequence: s.lastSequence)
            nextRequestID += 1
            s.pending = LocalSlice.Pending(requestID: req.requestID, firstSentAt: now, lastSentAt: now, request: req)
            s.lastSentAt = now
            s.reportedDemand = reported
            return .acquire(req)
        }
        // Slices: holding far more than demand needs: return the excess.
        if !s.isRate && hasLease && s.available > Checked.sum(target, target, lead) && s.available > 0 {
            let excess = s.available - target
            s.available -= excess
            s.released += excess
            return .release(ReleaseRequest(node: settings.node, budget: specs[i].id, leaseID: s.leaseID,
                                           consumed: s.consumed, released: s.released, final: false))
        }
        return nil
    }
}
