import AllotCore

/// A new configuration version at run time (`allot config apply`): budgets, tiers and soft
/// limits change without a restart and without losing what is out or consumed.
extension CoordinatorMachine {
    /// What a new configuration did to the budgets held here.
    public struct Reconfigured: Sendable, Hashable {
        /// New terms in place (`Allocator.respec`: raised at once, lowered once nodes apply them).
        public var changed: [BudgetID] = []
        /// Budgets new to this coordinator (explicit budgets it owns).
        public var added: [BudgetID] = []
        /// Budgets the configuration no longer has: every node holding a lease is told to stop
        /// using it (`Allocator.withdraw`), then the books are dropped; nodes asking get
        /// "unknown budget" and follow their fail mode (gateways: `deletions`). Made again
        /// within a lease TTL (a tier template restored), such a budget learns first.
        public var removed: [BudgetID] = []
        /// Another kind, unit, period, window or reach under the same id: a new budget, which
        /// learns for one lease TTL (nodes may still hold the old one's leases).
        public var replaced: [BudgetID] = []
        public init() {}
    }

    /// Takes a new configuration: `budgets` (explicit), `tiers` (templates for budgets made on
    /// first use) and soft limits. Budgets held here get the new terms in place where they can;
    /// the actions push lowered terms, load durable quotas' rows and write the ledger.
    /// Validation is the caller's (`DeploymentConfig`); only duplicate ids are refused here, and
    /// then nothing changes.
    public mutating func reconfigure(budgets: [BudgetSpec], tiers: [Tier], softLimits table: SoftLimitTable,
                                     now: Instant) throws(AllotError) -> (Reconfigured, [Action]) {
        let newCatalog = try TierCatalog(tiers)
        var newConfigured: [BudgetID: BudgetSpec] = [:]
        for b in budgets {
            guard newConfigured[b.id] == nil else { throw AllotError(.duplicateBudget, "budget \(b.id) is configured twice") }
            newConfigured[b.id] = b
        }
        (catalog, configured, settings.tiers, settings.softLimits) = (newCatalog, newConfigured, tiers, table)
        softLimits.replace(table)
        var report = Reconfigured()
        var journal: [LedgerChange] = []
        var loads: [Action] = []
        var withdrawn: [Push] = []
        for id in allocator.budgetIDs {
            guard let spec = newConfigured[id] ?? newCatalog.instantiate(id) ?? settings.descriptors.instantiate(id) else {
                withdrawn += allocator.withdraw(id, now: now)
                journal += drop(id)
                removed[id] = now + settings.allocator.leaseTTL
                loading.remove(id)
                tierBudgets.removed(id)
                report.removed.append(id)
                continue
            }
            switch allocator.respec(spec, now: now) {
            case .unchanged, .unknownBudget: continue
            case .applied: report.changed.append(id)
            case .replaced:
                journal += drop(id)
                loading.remove(id)
                guard (try? add(spec, epoch: nil, now: now)) != nil else { continue }
                loads += takeOver(spec, now: now)
                report.replaced.append(id)
            }
        }
        for (id, spec) in newConfigured.sorted(by: { $0.key < $1.key }) where !allocator.contains(id) {
            if let view, !view.serving || view.owner(of: id) != settings.member { continue }
            guard (try? add(spec, epoch: nil, now: now)) != nil else { continue }
            loads += takeOver(spec, now: now)
            report.added.append(id)
        }
        let recalls: [Action] = withdrawn.isEmpty ? [] : [.push(withdrawn)]
        return (report, loads + recalls + takePushes() + write(journal + allocator.takeJournal(), held: []))
    }

    /// A budget added at run time: a durable quota as its ledger row says; any other learns for
    /// one lease TTL, since nodes may hold leases of a budget of that id from before.
    private mutating func takeOver(_ spec: BudgetSpec, now: Instant) -> [Action] {
        if settings.durable && spec.kind.isQuota && !allocator.isUpstreamBacked(spec.id) {
            loading.insert(spec.id)
            return [.loadLedger(spec.id)]
        }
        gain(spec.id, ledger: nil, learning: true, now: now)
        return []
    }
}
