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
            guard let m = pollSlice(i, now: now) else { continue }
            switch m { // what a recall's share already counts
            case .acquire(let r): slices[i].reportedConsumed = r.consumed
            case .release(let r): slices[i].reportedConsumed = r.consumed
            }
            out.append(m)
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
            if hasLease && (s.awaitsAck || s.givesBack || s.reportOwner || now - s.heldBackAt < settings.refreshInterval) { return now }
            if hasLease && s.hasDropToReport { return now }
            if hasLease { t = min(t, s.expiresAt) }
            if let p = s.pending {
                t = min(t, p.lastSentAt + settings.retryTimeout)
                continue
            }
            guard hasLease else { continue }
            if s.reserved == 0 { t = min(t, max(now, s.lastDemandAt + settings.idleRelease)) }
            if s.asksForDebt { t = min(t, max(s.retryNotBefore, s.lastSentAt + settings.retryTimeout)) }
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
        if hasLease { s.refillBucket(now: now) }

        // Demand gone: give everything back.
        if hasLease && rate == 0 && now - s.lastDemandAt >= settings.idleRelease && s.reserved == 0 {
            return releaseAll(&s, spec: specs[i], final: true)
        }
        // Held back (requests wait for another budget of their set) and nothing admitted
        // lately: what the slice holds is of no use here and may be what the nodes holding
        // that other budget wait for. Give it all back and ask for nothing more; the lease
        // stays, and is still renewed and reported if the budget's owner changes.
        let heldBack = s.canBeHeldBack && hasLease && now - s.heldBackAt < settings.refreshInterval
            && s.admitted.recentRate(now: now) == 0
        if heldBack && s.available > 0 && !s.reportOwner && !s.recalled {
            s.released += s.available
            s.available = 0
            s.givesBack = false
            return .release(ReleaseRequest(node: settings.node, budget: specs[i].id, leaseID: s.leaseID,
                                           consumed: s.consumed, released: s.released, final: false))
        }
        let intervalNs = settings.refreshInterval.nanoseconds
        var target = s.target(perInterval: Checked.product(rate, intervalNs) / 1_000_000_000)
        let lead = Checked.product(admittedRate, settings.prefetchLead.nanoseconds) / 1_000_000_000
        s.watermark = lead
        let low = s.isLow(lead: lead)
        // Renew before the lease ends; at most every third of the margin, because a quota
        // lease cannot outlive its window and renewing it near the window's end changes nothing.
        let renew = hasLease && s.expiresAt - now <= settings.renewMargin && rate > 0
            && now - s.lastSentAt >= settings.renewMargin / 3
            || hasLease && s.reportOwner
        s.reportOwner = false
        var need = (s.needsRefill || (low && s.wantsMore(than: target))) && rate > 0 && now >= s.retryNotBefore
        if s.asksForDebt && hasLease && now >= s.retryNotBefore && now - s.lastSentAt >= settings.retryTimeout {
            // A request the upstream charged above its bound left a debt: ask for it now, so
            // the grant repays it and the ledger counts it (docs/gateway.md, "Settle").
            target = Checked.sum(target, s.debt)
            need = true
        }
        let reported: Int64
        (need, reported) = s.decideAsk(need: need, rate: rate, low: low, hasLease: hasLease, intervalNs: intervalNs, now: now)
        if heldBack && !s.recalled { need = false } // a recall is acknowledged even so
        if need || renew {
            s.needsRefill = false
            s.refused = false
            s.needsAck = false
            s.recalled = false
            s.givesBack = false
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
        // Holding far more than demand needs: return the excess. Above a recall's cap: what
        // was set aside for the coordinator (`givesBack`).
        if hasLease, let excess = s.excess(target: target, lead: lead) {
            s.available -= excess
            s.released += excess
            s.givesBack = true
        }
        guard hasLease && s.givesBack else { return nil }
        s.givesBack = false
        return .release(ReleaseRequest(node: settings.node, budget: specs[i].id, leaseID: s.leaseID,
                                       consumed: s.consumed, released: s.released, final: false))
    }
}
