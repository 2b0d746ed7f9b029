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
        // A node whose permits were recalled for another node gets none back in an answer to a
        // message that acknowledges the recall or gives permits back (it would take back what
        // was recalled for the other node); it asks again when a request of its own needs one.
        let givesPermitsBack = book.isPermits && entry.lease?.id == req.leaseID
            && (entry.unacknowledged.contains { $0.sequence <= req.appliedSequence }
                || entry.drained && req.released > entry.lease!.releasedSeen)
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
        } else if !givesPermitsBack {
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
        if amount > 0 {
            grantsTotal += 1
            // The node's cap is lifted by a grant of more units, newer than any recall: a
            // recall still unacknowledged is not sent again (the node would apply it after).
            entry.drained = false
            if book.isPermits { entry.unacknowledged.removeAll() }
        }
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
        var target = min(share - held, settings.maxSlice)
        // Permits: a node with none free gets one while one is free anywhere in the fleet (from
        // the pool, or recalled), whatever the shares say: a request waiting there outranks
        // another node's headroom, as it would at one central counter.
        if book.isPermits && held == 0 { target = max(target, 1) }
        // The node already holds its fair share: nothing now. No back-off: a node whose
        // demand grows must be able to ask again at once (a back-off here caused false denials
        // under a ramp); the node's own want keeps it from asking while it holds enough.
        guard target > 0 else { return (0, .zero) }
        let amount = max(0, min(max(target, settings.minSlice), pool))
        guard amount < target else { return (amount, .zero) }
        // A region's global budget is short only until its upstream grant arrives (a round
        // trip to the global cluster): ask again soon, not a whole refresh interval later.
        if upstream != nil { return (amount, .nanoseconds(settings.refreshInterval.nanoseconds / 10)) }
        // Permits: no back-off either. A node asks only for a refused request (or paced, for
        // headroom), as a gateway would ask a central counter; with nothing to grant, the
        // permits other nodes hold are recalled for it (`recallPermits`). A node holding no
        // lease is told to ask again in 50 ms: its gateway waits for a lease while it has
        // none, and would ask every millisecond (50 ms: a few asks within an admission wait).
        if book.isPermits {
            if amount == 0 && held == 0 && recallPermits(for: node, now: now) { return (0, settings.recallRetry) }
            return (amount, amount == 0 && me.lease == nil ? settings.recallRetry * 5 : .zero)
        }
        return (amount, book.retryWhenShort(settings.refreshInterval, now: now))
    }

    /// Concurrency: `node` holds no free permit, and none is in the pool. Every other node
    /// holding permits is told to keep none (the slice recall push, `capacity` 0): it gives
    /// back its free permits at once and each permit in use as its request ends, never one a
    /// request holds, until it is granted more (`drained`). While the pool is empty the
    /// coordinator then counts permits as one central counter would, and a request waiting
    /// on a node with none is served by the first permit to come free anywhere. A node
    /// drained already is told again after 250 ms (its cap may have been replaced by a
    /// lowered limit's recall, or lifted by a grant that overtook the push). True when a
    /// recall went out now: `node` asks again after `recallRetry`; false when every node
    /// holding permits was drained lately (they are in use: refused, as at a central counter).
    private mutating func recallPermits(for node: NodeID, now: Instant) -> Bool {
        var sent = false
        for id in nodes.keys.sorted() where id != node {
            guard var e = nodes[id], !e.retired, let lease = e.lease, now < lease.expiresAt, lease.unreturned > 0,
                  e.unacknowledged.isEmpty, !e.drained || now - e.lastPushAt >= .milliseconds(250) else { continue }
            e.drained = true
            e.available = 0
            e.unacknowledged = [(e.nextSequence, 0, 0)]
            nodes[id] = e
            pushRecall(to: id, now: now)
            sent = true
        }
        return sent
    }
}
