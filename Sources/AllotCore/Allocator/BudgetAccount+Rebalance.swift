/// Rebalancing rate leases by push: nodes only ask when they need to, so when demand moves
/// the coordinator offers freed rate to nodes that are short of their fair share, and
/// recalls rate or capacity from nodes holding more than theirs.
extension BudgetAccount {
    /// Offers free rate to short nodes; recalls surplus when someone is still short.
    mutating func rebalance(now: Instant, settings: AllocatorSettings) {
        guard isRate, !isLearning, case .rate(let limit, _, let burst) = spec.kind else { return }
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
    private mutating func push(to node: NodeID, rate: Int64, capacity: Int64, now: Instant) {
        guard var entry = nodes[node], var lease = entry.lease else { return }
        let seq = entry.nextSequence
        entry.nextSequence += 1
        commit(&lease, rate: max(lease.committedRate, rate), capacity: max(lease.committedCapacity, capacity))
        lease.rate = rate
        lease.capacity = capacity
        entry.unacknowledged.append((seq, rate, capacity))
        entry.lease = lease
        entry.lastPushAt = now
        nodes[node] = entry
        let g = Grant(requestID: 0, budget: spec.id, leaseID: lease.id, epoch: epoch, amount: 0,
                      ttl: lease.expiresAt - now, rate: rate, capacity: capacity, sequence: seq)
        pushes.append(Push(node: node, grant: g))
    }
}
