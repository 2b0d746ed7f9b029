/// Rate leases: sizing a grant by fair share, and rebalancing by push. Nodes only ask when
/// they need to, so when demand moves the coordinator offers freed rate to nodes that are
/// short of their fair share, and recalls rate or capacity from nodes holding more than theirs.
extension BudgetAccount {
    /// Rate leases: a max-min fair share of the rate and of the burst, limited by what other
    /// nodes may still be enforcing; the bucket topped up from the pool.
    mutating func sizeRateLease(for node: NodeID, now: Instant, settings: AllocatorSettings)
        -> (amount: Int64, rate: Int64, capacity: Int64, retry: Duration) {
        guard let rates = book.rateBook else { preconditionFailure("not a rate budget") }
        let limit = rates.limit, burst = rates.burst
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

    /// Offers free rate to short nodes; recalls surplus when someone is still short.
    mutating func rebalance(now: Instant, settings: AllocatorSettings) {
        guard !isLearning, let rates = book.rateBook else { return resendRecalls(now: now) }
        let limit = rates.limit, burst = rates.burst
        var ids: [NodeID] = []
        var demands: [Int64] = []
        var wants: [Int64] = []
        // Nodes with a lease, and nodes that asked lately and got none (they are short too).
        for id in nodes.keys.sorted() {
            let e = nodes[id]!
            guard e.lease != nil || now - e.lastSeen < settings.demandMemory else { continue }
            ids.append(id)
            demands.append(e.demandPerPeriod)
            wants.append(e.want)
        }
        guard !ids.isEmpty else { return }
        let order = ids.indices.sorted { ids[$0] < ids[$1] } // deterministic
        let shares = WaterFill.shares(capacity: limit, wants: demands)
        let capShares = WaterFill.shares(capacity: burst, wants: wants)
        // Full shares include an even part of what nobody needs (as grants hand out).
        let n = Int64(ids.count)
        let rateSlack = (limit - shares.reduce(0, +)) / n
        let capSlack = (burst - capShares.reduce(0, +)) / n
        var free = limit - committedRate
        var rateShort = false
        var capShort = false
        for k in order {
            guard let lease = nodes[ids[k]]!.lease else {
                // No lease to push to: it is short, and asks again shortly.
                if shares[k] > 0 { rateShort = true }
                if min(capShares[k], wants[k]) > 0 { capShort = true }
                continue
            }
            let deficit = min(shares[k], demands[k]) - lease.rate
            // A deficit within the demand's noise is not worth a message.
            if deficit > min(shares[k], demands[k]) / 16 {
                let raise = min(deficit, free)
                if raise > 0 {
                    push(to: ids[k], rate: lease.rate + raise, capacity: lease.capacity, now: now)
                    free -= raise
                }
                if deficit - raise > demands[k] / 8 + 1 { rateShort = true }
            }
            let want = min(capShares[k], wants[k])
            if want - lease.capacity > want / 8 + 1 { capShort = true }
        }
        for k in order {
            let e = nodes[ids[k]]!
            guard let lease = e.lease else { continue }
            var rate = lease.rate
            var capacity = lease.capacity
            // Recalls: lower nodes well above their share when someone else is short.
            let fullRate = shares[k] + rateSlack, fullCap = capShares[k] + capSlack
            if rateShort && rate > fullRate + fullRate / 4 + 1 { rate = fullRate }
            if capShort && capacity > fullCap + fullCap / 4 + 1 { capacity = fullCap }
            if rate != lease.rate || capacity != lease.capacity {
                push(to: ids[k], rate: rate, capacity: capacity, now: now)
            } else if (lease.committedRate > lease.rate || lease.committedCapacity > lease.capacity),
                      now - e.lastPushAt >= .milliseconds(250) {
                // A recall not yet acknowledged (lost, or the node is slow): send it again.
                push(to: ids[k], rate: rate, capacity: capacity, now: now)
            }
        }
    }

    /// Sends `node` new terms unasked. A raise is committed at once; a lowered term stays
    /// committed at the old value until the node acknowledges.
    mutating func push(to node: NodeID, rate: Int64, capacity: Int64, now: Instant) {
        guard var entry = nodes[node], var lease = entry.lease else { return }
        let seq = entry.nextSequence
        entry.nextSequence += 1
        book.offer(rate: rate, capacity: capacity, sequence: seq, on: &lease, entry: &entry, outstanding: &outstanding)
        entry.lease = lease
        entry.lastPushAt = now
        nodes[node] = entry
        let g = Grant(requestID: 0, budget: spec.id, leaseID: lease.id, epoch: epoch, amount: 0,
                      ttl: lease.expiresAt - now, rate: rate, capacity: capacity, sequence: seq)
        pushes.append(Push(node: node, grant: g))
    }
}
