import AllotCore

extension CoordinatorMachine {
    /// The budget a node may have made on first use: a tier template's, or an Envoy rule's.
    func instantiate(_ id: BudgetID) -> BudgetSpec? {
        catalog.instantiate(id) ?? settings.descriptors.instantiate(id)
    }

    /// Tier budgets nobody holds and nobody used for long enough that making them again later
    /// changes nothing a node could see (at most 1,000 per call). Their ledger rows stay.
    mutating func retireIdleTierBudgets(now: Instant) -> [LedgerChange] {
        let ttl = settings.allocator.leaseTTL, durable = settings.durable
        // Read in place (a copy of the allocator here would be copied again by the drops below).
        let idle = tierBudgets.idle(limit: 1_000) { id -> Instant? in
            guard !self.loading.contains(id), let st = self.allocator.status(id), st.holders == 0, st.outstanding == 0 else { return nil }
            switch st.kind {
            case .rate(let limit, let period, let burst):
                // Until its bucket would be full again (made anew, it starts full).
                return now - ttl - period * Int(max(1, min(1_000, (burst + limit - 1) / limit)))
            case .quota:
                // Without a ledger the window's count lives only here: keep it until it is 0.
                return durable || (st.consumed == 0 && st.expiredSpent == 0) ? now - ttl : nil
            case .concurrency:
                return now - ttl
            }
        }
        var journal: [LedgerChange] = []
        for id in idle {
            journal += drop(id)
            tierBudgets.removed(id)
            counters.tierBudgetsRetired += 1
        }
        return journal
    }
}
