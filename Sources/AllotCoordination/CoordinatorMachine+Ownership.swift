import AllotCluster
import AllotCore

/// Ownership in a cluster: which budgets this member serves, how it takes one over (a new
/// epoch; learning for one lease TTL, or resumed from its ledger row), and the durable
/// budgets' ledger rows.
extension CoordinatorMachine {
    /// The live members changed (cluster mode): drop the budgets now owned by others, take over
    /// the configured ones now owned here, and tell every connected node. `healthy`: how many
    /// of them are not suspected (default: all); the quorum counts those, so the minority side
    /// of a partition stops granting about one suspicion timeout before the majority declares
    /// it dead and takes its budgets over.
    public mutating func viewChanged(_ live: [MemberID], healthy: Int? = nil, now: Instant) -> [Action] {
        guard let me = settings.member, view != nil else { return [] }
        guard let change = view!.viewChanged(live, healthy: healthy, now: now) else {
            // Only the suspicion count moved, not the quorum: nothing to do.
            return []
        }
        let (appeared, wasFormed, regained, quorate) = (change.appeared, change.wasFormed, change.regained, change.quorate)
        var journal: [LedgerChange] = []
        var loads: [Action] = []
        let view = view!
        for b in allocator.budgetIDs where !quorate || view.owner(of: b) != me {
            journal += drop(b)
            loading.remove(b)
            counters.ownershipLost += 1
            if configured[b] == nil { tierBudgets.removed(b) }
        }
        if quorate && !regained && !appeared.isEmpty {
            for b in allocator.budgetIDs where view.owner(of: b) == me {
                if let alt = view.alternate(of: b), appeared.contains(alt) {
                    allocator.extendLearning(b, now: now)
                }
            }
        }
        // Budgets gained: rate and concurrency budgets are learned for one lease TTL (at
        // formation too: a member that restarts into a running cluster cannot know what
        // others granted meanwhile); durable quotas as their ledger row says (the database's
        // conditional update covers a previous owner still granting).
        for (id, spec) in configured where quorate && view.owner(of: id) == me {
            if wasFormed && !regained && allocator.contains(id) { continue }
            if !allocator.contains(id) { try? add(spec, epoch: nil, now: now) }
            if settings.durable && spec.kind.isQuota && !allocator.isUpstreamBacked(id) {
                loading.insert(id)
                loads.append(.loadLedger(id))
            } else {
                gain(id, ledger: nil, learning: true, now: now)
            }
        }
        return loads + write(journal, held: []) + [.members(view.members, version: view.version)]
    }

    /// `member` probed this coordinator, so its view has this one in it: if it (re)appeared
    /// lately, it granted this coordinator's budgets at most until now. Those budgets stay in
    /// learning mode for one lease TTL from here, so its last leases are reported or expire
    /// before anything new is granted.
    public mutating func peerSeesMe(_ member: MemberID, now: Instant) {
        guard view?.seesMe(member) == true else { return }
        for b in allocator.budgetIDs where view!.alternate(of: b)?.name == member.name {
            allocator.extendLearning(b, now: now)
        }
    }

    /// The window whose ledger row `budget` waits for: the one containing `now` (the
    /// allocator's books roll over at the next tick); nil once it no longer waits (the row
    /// arrived, or the budget is no longer owned here).
    public func loadWindow(_ budget: BudgetID, now: Instant) -> Instant? {
        guard loading.contains(budget), allocator.contains(budget),
              case .quota(_, let window)? = allocator.spec(budget)?.kind else { return nil }
        return window.window(containing: now).start
    }

    /// `budget`'s ledger row for the window starting at `windowStart` arrived: take it over as
    /// the row says. False when the row is no longer wanted as read: the budget's window rolled
    /// over while it was read (a row of the old window would starve the new one), so the shell
    /// reads `loadWindow` again; or the budget no longer waits for a row.
    @discardableResult
    public mutating func loaded(_ budget: BudgetID, row: LedgerCounters, windowStart: Instant, now: Instant) -> Bool {
        // The window containing now, not the allocator's: it rolls over only at the next tick,
        // which may come after a row read just before the boundary arrives.
        guard let current = loadWindow(budget, now: now) else {
            loading.remove(budget)
            return true
        }
        guard current == windowStart else { return false }
        loading.remove(budget)
        gain(budget, ledger: row, learning: false, now: now)
        return true
    }

    /// Adds `spec` to the allocator: upstream-backed when this coordinator is a region and the
    /// budget is global (its units then come only from the global cluster's grants).
    mutating func add(_ spec: BudgetSpec, epoch: UInt64?, now: Instant) throws(AllotError) {
        guard upstream != nil, spec.reach == .global else { return try allocator.add(spec, now: now) }
        try allocator.addUpstreamBacked(spec, epoch: epoch, now: now)
        upstream!.register(spec.id)
    }

    /// A fresh owner epoch, above every one this coordinator used.
    mutating func nextEpoch(now: Instant) -> UInt64 {
        let epoch = max(lastEpoch + 1, UInt64(max(1, now.nanoseconds / 1_000)))
        lastEpoch = epoch
        return epoch
    }

    /// Forgets `budget`; a global one gives its free units back upstream.
    mutating func drop(_ budget: BudgetID) -> [LedgerChange] {
        if upstream?.contains(budget) == true { _ = releaseUpstream(budget) }
        softLimits.forget(budget)
        return allocator.remove(budget)
    }

    /// Takes over `budget` (already in the allocator) with a new epoch: in learning mode, or
    /// straight from its ledger row when no node can hold a lease the ledger does not know.
    /// A region's global budget starts empty instead: its units come from a new upstream lease
    /// (nodes holding the previous owner's sub-leases get a new lease and drop the old one).
    mutating func gain(_ budget: BudgetID, ledger: LedgerCounters?, learning: Bool, now: Instant) {
        let epoch = nextEpoch(now: now)
        counters.ownershipGained += 1
        guard let spec = allocator.spec(budget) else { return }
        if allocator.isUpstreamBacked(budget) {
            _ = drop(budget)
            try? add(spec, epoch: epoch, now: now)
            return
        }
        if learning || (ledger?.unreported ?? 0) > 0 {
            var committed: Int64 = 0
            if case .quota(let allowance, _) = spec.kind { committed = ledger?.committed ?? allowance }
            _ = allocator.ownershipGained(budget, epoch: epoch, committed: committed, adoptable: ledger?.unreported,
                                          fromLedger: ledger != nil, now: now)
        } else {
            allocator.resume(budget, epoch: epoch, ledger: ledger ?? LedgerCounters(), now: now)
        }
    }

    /// The ledger answered a write: held grants go out once recorded; a grant whose record was
    /// refused (the cap was reached by another coordinator) or whose write failed is taken
    /// back, the node gets "nothing" or "ask again later" instead; a failed write's releases
    /// and reports are written again.
    public mutating func recorded(_ journal: [LedgerChange], held: [DurableGrants.Held], accepted: [Bool]?) -> [Action] {
        var lives: [NodeID: UInt64] = [:]
        for h in held where lives[h.node] == nil { lives[h.node] = allocator.incarnation(of: h.node) }
        let outcome = durableGrants.recorded(journal, held: held, accepted: accepted) { lives[$0] ?? 0 }
        for (h, exhausted) in outcome.revoke {
            allocator.revoke(h.grant, node: h.node, exhausted: exhausted)
            counters.ledgerRevoked += 1
            if exhausted { counters.ledgerRefusals += 1 }
        }
        var byNode: [NodeID: [Answer]] = [:]
        var order: [NodeID] = []
        for (node, answer) in outcome.answers {
            if byNode[node] == nil { order.append(node) }
            switch answer {
            case .grant(let g), .nothing(let g): byNode[node, default: []].append(.grant(g))
            case .retryLater(let g, let after): byNode[node, default: []].append(.retryLater(g, after: after))
            }
        }
        return order.map { .send($0, byNode[$0]!) } + write(outcome.retry, held: [])
    }
}
