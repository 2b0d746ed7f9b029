extension Allocator {
    /// What `respec` did with a budget's new definition.
    public enum RespecOutcome: Hashable, Sendable {
        /// The same terms: nothing changed.
        case unchanged
        /// New terms in place (`BudgetAccount.respec`): a raise at once, a lowering once every
        /// node applied it or its lease ended.
        case applied
        /// Another kind, unit, period, window or reach (or an upstream-backed budget): not a
        /// change of terms but another budget. The caller removes this one and adds the new.
        case replaced
        case unknownBudget
    }

    /// Gives `budget` the terms of `spec` (its id), as of `now`. Pushes lowered terms to the
    /// nodes holding leases (take them with `takePushes`).
    public mutating func respec(_ spec: BudgetSpec, now: Instant) -> RespecOutcome {
        guard let acct = account(spec.id) else { return .unknownBudget }
        if acct.spec == spec { return .unchanged }
        guard acct.canRespec(to: spec) else { return .replaced }
        let settings = settings
        mutate(spec.id) { $0.respec(to: spec, now: now, settings: settings) }
        return .applied
    }

    /// Whether `budget`'s books still count a lowered limit's old terms (see `respec`).
    public func isDraining(_ budget: BudgetID) -> Bool { account(budget)?.draining ?? false }
}

extension Allocator {
    /// `budget` leaves the configuration: every node holding a live lease on it is told to stop
    /// using it at once — a rate lease's terms lowered to nothing, a quota or permit slice
    /// recalled to 0 — instead of spending its slice until the lease ends. Returns the pushes;
    /// the caller then removes the books (`remove`), so what the nodes give back or acknowledge
    /// is answered "unknown budget".
    public mutating func withdraw(_ budget: BudgetID, now: Instant) -> [Push] {
        var out: [Push] = []
        mutate(budget) { a in
            for id in a.nodes.keys.sorted() {
                guard let lease = a.nodes[id]!.lease, now < lease.expiresAt else { continue }
                if a.book.isRate {
                    a.push(to: id, rate: 0, capacity: 0, now: now)
                } else {
                    a.nodes[id]!.unacknowledged = [(a.nodes[id]!.nextSequence, 0, 0)]
                    a.pushRecall(to: id, now: now)
                }
            }
            out = a.pushes
            a.pushes = []
        }
        return out
    }
}
