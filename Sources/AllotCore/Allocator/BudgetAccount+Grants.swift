/// How a budget answers an acquire: dedupe, apply the node's reports, size the grant.
extension BudgetAccount {
    mutating func acquire(_ req: AcquireRequest, now: Instant, settings: AllocatorSettings) -> Allocator.AcquireOutcome {
        var entry = nodes[req.node] ?? NodeEntry(lastSeen: now)
        if req.requestID == entry.lastRequestID, let g = entry.lastGrant { return .resent(g) }
        if req.requestID <= entry.lastRequestID { return .ignoredStale }
        entry.lastRequestID = req.requestID
        entry.lastSeen = now
        entry.want = min(max(req.want, 0), settings.maxSlice)
        entry.available = max(0, req.available)
        entry.demandRate = max(0, req.demandRate)
        if case .rate(_, let period, _) = spec.kind {
            let perPeriod = Allocator.scale(max(0, req.demandRate), period.nanoseconds, 1_000_000_000)
            // A little headroom, so a node whose demand equals its rate is not starved by noise.
            entry.demandPerPeriod = perPeriod > 0 ? perPeriod + perPeriod / 16 + 1 : 0
        }

        var adopted = false
        if var lease = entry.lease, lease.id == req.leaseID {
            if !isRate { apply(consumed: req.consumed, released: req.released, to: &lease) }
            if isRate {
                // From now on the node enforces at most what it reports; terms we sent after
                // the last one it applied may still arrive and stay committed.
                entry.unacknowledged.removeAll { $0.sequence <= req.appliedSequence }
                let inFlightRate = entry.unacknowledged.map(\.rate).max() ?? 0
                let inFlightCap = entry.unacknowledged.map(\.capacity).max() ?? 0
                commit(&lease, rate: min(lease.committedRate, max(0, req.rateInUse, inFlightRate)),
                       capacity: min(lease.committedCapacity, max(0, req.capacityInUse, inFlightCap)))
                lease.rate = min(lease.rate, lease.committedRate)
                lease.capacity = min(lease.capacity, lease.committedCapacity)
                // Tokens the node gave back (above a lowered capacity) return to the pool,
                // now that the capacity they sat in is released.
                apply(consumed: req.consumed, released: req.released, to: &lease)
            }
            entry.lease = lease
        } else if isLearning, entry.lease == nil, req.leaseID != 0, req.holding > 0 || req.rateInUse > 0 {
            // Learning mode: take over what another owner granted, add nothing.
            var lease = Lease(id: nextLeaseID, expiresAt: now)
            nextLeaseID += 1
            if isRate {
                // Never more than the budget itself allows (a node cannot claim the whole pool).
                if case .rate(let limit, _, let burst) = spec.kind {
                    lease.rate = min(max(0, req.rateInUse), limit)
                    lease.capacity = min(max(0, req.capacityInUse), burst)
                }
                commit(&lease, rate: lease.rate, capacity: lease.capacity)
            } else {
                // A quota's holding is taken out of what the ledger says may still be on
                // nodes (counted as consumed until then); without a ledger that is everything.
                let take = spec.kind.isQuota ? min(max(0, req.holding), adoptable)
                                             : min(max(0, req.holding), max(0, spec.kind.ceiling - outstanding))
                if spec.kind.isQuota {
                    adoptable -= take
                    consumed -= take
                }
                lease.granted = take
                outstanding += take
            }
            entry.lease = lease
            adopted = true
        }
        nodes[req.node] = entry

        var amount: Int64 = 0
        var rate = entry.lease?.rate ?? 0
        var capacity = entry.lease?.capacity ?? 0
        var retryAfter: Duration = .zero
        if isLearning {
            retryAfter = min(settings.refreshInterval, learningUntil! - now)
        } else if isRate {
            (amount, rate, capacity, retryAfter) = sizeRateLease(for: req.node, now: now, settings: settings)
        } else {
            (amount, retryAfter) = sizeSlice(for: req.node, now: now, settings: settings)
        }

        var ttl = settings.leaseTTL
        if case .quota = spec.kind { ttl = min(ttl, windowEnd - now) }
        // Sub-leases never outlive the upstream lease they come from.
        if let u = upstream { ttl = max(.zero, min(ttl, u.expiresAt - now)) }
        var grant = Grant(requestID: req.requestID, budget: spec.id, leaseID: 0, epoch: epoch, amount: amount,
                          ttl: ttl, adopted: adopted, retryAfter: retryAfter, rate: rate, capacity: capacity)
        entry = nodes[req.node]!
        if entry.lease == nil && (amount > 0 || rate > 0 || capacity > 0) {
            entry.lease = Lease(id: nextLeaseID, expiresAt: now)
            nextLeaseID += 1
        }
        grant.sequence = entry.nextSequence
        entry.nextSequence += 1
        if var lease = entry.lease {
            lease.expiresAt = now + ttl
            if isRate {
                // Raising takes effect at once; lowering only once the node shows it applied it.
                commit(&lease, rate: max(lease.committedRate, rate), capacity: max(lease.committedCapacity, capacity))
                lease.rate = rate
                lease.capacity = capacity
                entry.unacknowledged.append((grant.sequence, rate, capacity))
            } else {
                lease.granted += amount
                outstanding += amount
                pool -= amount
                journal(windowStart) { $0.granted += amount }
            }
            entry.lease = lease
            grant.leaseID = lease.id
        }
        if amount > 0 { grantsTotal += 1 }
        entry.lastGrant = grant
        nodes[req.node] = entry
        return .granted(grant)
    }

    /// Active nodes' wants, for fair shares: index of `node` in the result.
    private func activeWants(_ node: NodeID, now: Instant, settings: AllocatorSettings,
                             _ value: (NodeEntry) -> Int64) -> (wants: [Int64], mine: Int) {
        var wants: [Int64] = []
        var mine = 0
        // In node order, so ties in the water-fill fall the same way in every process.
        for id in nodes.keys.sorted() {
            let e = nodes[id]!
            guard e.lease != nil || now - e.lastSeen < settings.demandMemory || id == node else { continue }
            if id == node { mine = wants.count }
            wants.append(value(e))
        }
        return (wants, mine)
    }

    /// Slices (quota, concurrency): the node's max-min fair share of what is left minus what
    /// it can still spend, never more than the pool.
    private mutating func sizeSlice(for node: NodeID, now: Instant, settings: AllocatorSettings) -> (Int64, Duration) {
        let me = nodes[node]!
        // What the node can still spend; reservations in flight are committed and do not
        // count against its share of what comes next.
        let held = me.lease.map { min(me.available, $0.unreturned) } ?? 0
        var spendable: Int64 = 0
        for (id, e) in nodes where id != node { if let l = e.lease { spendable = Checked.sum(spendable, min(e.available, l.unreturned)) } }
        let (wants, mine) = activeWants(node, now: now, settings: settings) { $0.want }
        let share = WaterFill.shares(capacity: Checked.sum(pool, spendable, held), wants: wants)[mine]
        let target = min(share - held, settings.maxSlice)
        // The node already holds its fair share: nothing now. No back-off: a node whose
        // demand grows must be able to ask again at once (a back-off here caused false denials
        // under a ramp); the node's own want keeps it from asking while it holds enough.
        guard target > 0 else { return (0, .zero) }
        let amount = max(0, min(max(target, settings.minSlice), pool))
        guard amount < target else { return (amount, .zero) }
        // A region's global budget is short only until its upstream grant arrives (a round
        // trip to the global cluster): ask again soon, not a whole refresh interval later.
        if upstream != nil { return (amount, .nanoseconds(settings.refreshInterval.nanoseconds / 10)) }
        switch spec.kind {
        case .quota: return (amount, min(settings.refreshInterval, windowEnd - now))
        default: return (amount, .nanoseconds(settings.refreshInterval.nanoseconds / 4))
        }
    }

    /// Rate leases: a max-min fair share of the rate and of the burst, limited by what other
    /// nodes may still be enforcing; the bucket topped up from the pool.
    private mutating func sizeRateLease(for node: NodeID, now: Instant, settings: AllocatorSettings)
        -> (amount: Int64, rate: Int64, capacity: Int64, retry: Duration) {
        guard case .rate(let limit, _, let burst) = spec.kind else { preconditionFailure("not a rate budget") }
        let me = nodes[node]!
        let (demands, mine) = activeWants(node, now: now, settings: settings) { $0.demandPerPeriod }
        let (wants, _) = activeWants(node, now: now, settings: settings) { $0.want }
        // Max-min fair shares of what nodes need; what nobody needs is spread evenly as slack
        // (recalled as soon as someone is short), so idle rate and burst sit ready on nodes.
        let rateShares = WaterFill.shares(capacity: limit, wants: demands)
        let capShares = WaterFill.shares(capacity: burst, wants: wants)
        let n = Int64(demands.count)
        let rateShare = rateShares[mine] + (limit - rateShares.reduce(0, +)) / n
        let capShare = min(capShares[mine] + (burst - capShares.reduce(0, +)) / n, settings.maxSlice)
        let baseRateShare = rateShares[mine]
        let myRate = me.lease?.committedRate ?? 0
        let myCap = me.lease?.committedCapacity ?? 0
        let othersRate = committedRate - myRate
        let othersCap = outstanding - myCap
        let rate = max(0, min(rateShare, limit - othersRate))
        var capacity = max(0, min(capShare, burst - othersCap))
        let level = min(me.available, myCap)
        var topUp = min(max(0, capacity - level), pool)
        pool -= topUp
        capacity = max(0, min(capacity, burst - othersCap - pool))
        if topUp > capacity {
            pool += topUp - capacity
            topUp = capacity
        }
        // Short of its fair share because others still hold it: come back soon, they are
        // giving it back. Short of its demand at its fair share: no need to ask again until
        // demand changes; meanwhile it runs on its own refill.
        // (Offers are pushed when rate frees up, so a node at its fair share need not poll.)
        let interval = settings.refreshInterval.nanoseconds
        if baseRateShare - rate > baseRateShare / 16 || capShares[mine] - capacity > capShares[mine] / 16 {
            return (topUp, rate, capacity, .nanoseconds(interval / 10))
        }
        if rate < me.demandPerPeriod { return (topUp, rate, capacity, settings.leaseTTL / 2) }
        return (topUp, rate, capacity, .zero)
    }
}
