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
