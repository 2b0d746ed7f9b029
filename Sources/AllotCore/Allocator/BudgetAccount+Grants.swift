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
        if let perPeriod = book.demandPerPeriod(req.demandRate) { entry.demandPerPeriod = perPeriod }

        var adopted = false
        if var lease = entry.lease, lease.id == req.leaseID {
            // A rate lease's terms drop to what the node shows it enforces; then tokens it gave
            // back (above a lowered capacity) return to the pool, now that the capacity they
            // sat in is released.
            book.acknowledge(req, entry: &entry, lease: &lease, outstanding: &outstanding)
            apply(consumed: req.consumed, released: req.released, to: &lease)
            entry.lease = lease
        } else if isLearning, entry.lease == nil, req.leaseID != 0, req.holding > 0 || req.rateInUse > 0 {
            // Learning mode: take over what another owner granted, add nothing.
            var lease = Lease(id: nextLeaseID, expiresAt: now)
            nextLeaseID += 1
            book.adopt(req, into: &lease, outstanding: &outstanding, consumed: &consumed, adoptable: &adoptable)
            entry.lease = lease
            adopted = true
        }
        nodes[req.node] = entry

        var amount: Int64 = 0
        var rate = entry.lease?.rate ?? 0
        var capacity = entry.lease?.capacity ?? 0
        var retryAfter: Duration = .zero
        if isLearning && (!grantsWhileLearning || adopted) {
            // An answer that adopts a lease carries nothing new: a durable grant could be
            // refused by the ledger, and the node would then never hear of the adoption. It
            // asks again under the new lease (at once while learning from the ledger).
            retryAfter = grantsWhileLearning ? .zero : min(settings.refreshInterval, learningUntil! - now)
        } else if book.isRate {
            (amount, rate, capacity, retryAfter) = sizeRateLease(for: req.node, now: now, settings: settings)
        } else {
            (amount, retryAfter) = sizeSlice(for: req.node, now: now, settings: settings)
        }

        var ttl = book.leaseTTL(settings.leaseTTL, now: now)
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
            book.grant(amount: amount, rate: rate, capacity: capacity, sequence: grant.sequence, on: &lease,
                       entry: &entry, pool: &pool, outstanding: &outstanding)
            journal(windowStart) { $0.granted += amount }
            entry.lease = lease
            grant.leaseID = lease.id
        }
        if amount > 0 { grantsTotal += 1 }
        entry.lastGrant = grant
        nodes[req.node] = entry
        return .granted(grant)
    }

    /// Active nodes' wants, for fair shares: index of `node` in the result.
    func activeWants(_ node: NodeID, now: Instant, settings: AllocatorSettings,
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
        return (amount, book.retryWhenShort(settings.refreshInterval, now: now))
    }
}
