/// A budget's limit changed at run time (a new configuration version): the books take the new
/// terms without forgetting what is out or consumed.
///
/// - Raised: the pool grows by the difference at once (a rate budget's burst, a quota's
///   allowance, a concurrency limit); a rate budget's free rate is offered by `rebalance`.
/// - Lowered: the pool shrinks by the difference (never below 0). A rate lease's terms are
///   lowered in proportion and pushed; its old terms stay committed until its node
///   acknowledges the new ones or the lease ends (`draining` until then). So at every instant
///   the books bound the fleet by the old limit or, once every node applied it, by the new
///   one; never by both added up. A quota keeps what its window consumed. Quota and permit
///   slices above what the new limit leaves are recalled in proportion (`recallSlices`): the
///   units a node had spent before the recall reached it count under the old limit; after
///   that, nothing past the new one is spent.
extension BudgetAccount {
    /// A lowered quota or concurrency limit leaves `room` for what is out on nodes: when they
    /// hold more, each is told to keep at most its share of it, in proportion (a push with
    /// `capacity` = the units to keep); a node gives the rest back with its next message, and
    /// the books count them as out until it does.
    mutating func recallSlices(room: Int64, now: Instant) {
        guard outstanding > room else { return }
        for id in nodes.keys.sorted() {
            guard var entry = nodes[id], let lease = entry.lease, lease.unreturned > 0 else { continue }
            let keep = Allocator.scale(lease.unreturned, room, outstanding)
            entry.unacknowledged = [(entry.nextSequence, 0, keep)]
            entry.drained = false // this cap replaces a permits recall's
            nodes[id] = entry
            pushRecall(to: id, now: now)
        }
    }

    /// Sends `node` its slice recall (again: with a new sequence number) while unacknowledged.
    mutating func pushRecall(to node: NodeID, now: Instant) {
        guard var entry = nodes[node], let lease = entry.lease, let keep = entry.unacknowledged.last?.capacity else { return }
        let seq = entry.nextSequence
        entry.nextSequence += 1
        entry.unacknowledged = [(seq, 0, keep)]
        entry.lastPushAt = now
        nodes[node] = entry
        pushes.append(Push(node: node, grant: Grant(requestID: 0, budget: spec.id, leaseID: lease.id, epoch: epoch, amount: 0,
                                                  ttl: lease.expiresAt - now, capacity: keep, sequence: seq)))
    }

    /// Slice recalls not yet acknowledged (lost, or the node is slow): sent again after 250 ms.
    /// A lowered limit's, while it drains; free permits recalled for a short node, always.
    mutating func resendRecalls(now: Instant) {
        guard draining && !book.isRate || book.isPermits else { return }
        for id in nodes.keys.sorted() where !(nodes[id]!.unacknowledged.isEmpty) && nodes[id]!.lease != nil
            && now - nodes[id]!.lastPushAt >= .milliseconds(250) {
            pushRecall(to: id, now: now)
        }
    }

    /// Whether `new` can replace this budget's terms in place: same kind, unit, period or
    /// calendar window, and reach. Anything else is a new budget (`Allocator.respec` says so).
    func canRespec(to new: BudgetSpec) -> Bool {
        guard new.id == spec.id, new.unit == spec.unit, new.reach == spec.reach, upstream == nil else { return false }
        switch (spec.kind, new.kind) {
        case (.rate(_, let p, _), .rate(_, let q, _)): return p == q
        case (.quota(_, let w), .quota(_, let v)): return w == v
        case (.concurrency, .concurrency): return true
        default: return false
        }
    }

    /// What the terms count against the ceiling besides the pool: what is out (a rate budget's
    /// committed capacity), and a quota's consumed and expired units.
    var used: Int64 {
        switch book {
        case .quota: Checked.sum(outstanding, consumed, expiredSpent)
        case .rate, .permits: outstanding
        }
    }

    /// Whether the books hold more than the terms allow (a lowered limit not yet in force).
    var overTerms: Bool {
        if case .rate(let r) = book, r.committedRate > r.limit { return true }
        return used > book.ceiling
    }

    /// While a lowered limit drains: units coming back (returned, freed, settled late) go to
    /// the pool only within the new terms; once the books fit them, draining ends.
    mutating func clampWhileDraining() {
        guard draining, upstream == nil else { return }
        if overTerms {
            pool = 0
        } else {
            pool = min(pool, max(0, book.ceiling - used))
            draining = false
        }
    }

    /// Takes `new`'s terms (`canRespec` must hold), as of `now`.
    mutating func respec(to new: BudgetSpec, now: Instant, settings: AllocatorSettings) {
        var expired: [(NodeID, Int64)] = []
        advance(to: now, expired: &expired)
        let oldCeiling = book.ceiling, oldRate = book.rateBook?.limit ?? 0
        let (bound, boundRate) = draining ? (drainCeiling, drainRate) : (oldCeiling, oldRate)
        spec = new
        switch (book, new.kind) {
        case (.rate(var r), .rate(let limit, _, let burst)):
            let (oldLimit, oldBurst) = (r.limit, r.burst)
            r = RateBook(limit: limit, period: r.period, burst: burst, committedRate: r.committedRate,
                         refillRemainder: 0, lastRefill: now)
            book = .rate(r)
            if limit < oldLimit || burst < oldBurst {
                // Every lease's terms in proportion: Σ new terms ≤ the new limit and burst.
                for id in nodes.keys.sorted() {
                    guard let lease = nodes[id]!.lease else { continue }
                    let rate = limit < oldLimit ? Allocator.scale(lease.rate, limit, oldLimit) : lease.rate
                    let capacity = burst < oldBurst ? Allocator.scale(lease.capacity, burst, oldBurst) : lease.capacity
                    if rate != lease.rate || capacity != lease.capacity { push(to: id, rate: rate, capacity: capacity, now: now) }
                }
            }
        case (.quota(var q), .quota(let allowance, _)):
            q.allowance = allowance
            book = .quota(q)
            recallSlices(room: max(0, allowance - Checked.sum(consumed, expiredSpent)), now: now)
        case (.permits, .concurrency(let limit)):
            book = .permits(PermitBook(limit: limit))
            recallSlices(room: limit, now: now)
        default:
            preconditionFailure("respec across kinds")
        }
        // Learning and upstream-backed pools are set by what they learn or receive (a quota
        // learned from its ledger row grants from its pool meanwhile). Raised: the difference
        // is free at once; lowered: less is, never more than the terms leave.
        if (!isLearning || grantsWhileLearning) && upstream == nil {
            pool = max(0, min(Checked.sum(pool, book.ceiling, -oldCeiling), book.ceiling - used))
        }
        draining = overTerms
        (drainCeiling, drainRate) = (max(bound, book.ceiling), max(boundRate, book.rateBook?.limit ?? 0))
        clampWhileDraining()
        rebalance(now: now, settings: settings)
    }
}
