extension BudgetAccount {
    /// Nil when the books balance; otherwise what is wrong. Used by tests at every step.
    func checkInvariants() -> String? {
        if pool < 0 { return "\(spec.id): pool \(pool) < 0" }
        if isRate {
            let caps = nodes.values.reduce(Int64(0)) { $0 + ($1.lease?.committedCapacity ?? 0) }
            let rates = nodes.values.reduce(Int64(0)) { $0 + ($1.lease?.committedRate ?? 0) }
            if caps != outstanding { return "\(spec.id): outstanding \(outstanding) != Σ capacities \(caps)" }
            if rates != committedRate { return "\(spec.id): committed rate \(committedRate) != Σ rates \(rates)" }
            for e in nodes.values {
                if let l = e.lease, l.committedRate < l.rate || l.committedCapacity < l.capacity {
                    return "\(spec.id): a lease's committed terms are below its granted terms"
                }
            }
        } else {
            let leased = nodes.values.reduce(Int64(0)) { $0 + ($1.lease?.unreturned ?? 0) }
            if leased != outstanding { return "\(spec.id): outstanding \(outstanding) != Σ leases \(leased)" }
            for (n, e) in nodes {
                if let l = e.lease, l.unreturned < 0 { return "\(spec.id): lease of \(n) unreturned \(l.unreturned) < 0" }
            }
        }
        if let u = upstream {
            // Every unit that came from upstream is free, out, consumed, expired, sent back or lost.
            let held = u.deposited - u.withdrawn - u.lost
            if pool + outstanding + consumed + expiredSpent != held && !spec.kind.isConcurrency {
                return "\(spec.id): pool+outstanding+consumed+expired = \(pool + outstanding + consumed + expiredSpent) != upstream units held \(held)"
            }
            if spec.kind.isConcurrency && pool + outstanding > held {
                return "\(spec.id): permits \(pool + outstanding) > upstream permits held \(held)"
            }
        }
        switch spec.kind {
        case .rate(let limit, _, let burst):
            if isLearning { return nil } // adopted terms may exceed the budget until they expire
            if pool + outstanding > burst {
                return "\(spec.id): pool \(pool) + capacity on nodes \(outstanding) > burst \(burst)"
            }
            if committedRate > limit { return "\(spec.id): committed rate \(committedRate) > limit \(limit)" }
        case .quota(let allowance, _):
            if pool > 0 && pool + outstanding + consumed + expiredSpent > allowance {
                return "\(spec.id): pool+outstanding+consumed+expired = \(pool + outstanding + consumed + expiredSpent) > allowance \(allowance)"
            }
        case .concurrency(let limit):
            if pool + outstanding > limit && !isLearning {
                return "\(spec.id): pool \(pool) + outstanding \(outstanding) > limit \(limit)"
            }
        }
        return nil
    }
}
