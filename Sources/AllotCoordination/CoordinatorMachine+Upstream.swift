import AllotCore

/// A region's side towards the global cluster (step 5): its `reach: global` budgets are fed
/// by grants of the global cluster, leased as one node of it.
extension CoordinatorMachine {
    /// Keeps the global budgets this coordinator owns fed from the global cluster: what to
    /// send there now (acquires with the region's demand and reports, releases of surplus).
    public mutating func upstreamStep(now: Instant) -> [Enforcer.Outgoing] {
        guard upstream != nil else { return [] }
        var out = upstreamOutbox
        upstreamOutbox = []
        var views: [BudgetID: UpstreamClient.RegionView] = [:]
        for b in upstream!.budgets {
            allocator.advance(b, now: now)
            views[b] = allocator.regionView(b, now: now)
        }
        for action in upstream!.poll(now: now, views: views) {
            switch action {
            case .withdraw(let b, let n): _ = allocator.withdraw(b, max: n, now: now)
            case .send(let m): out.append(m)
            }
        }
        return out
    }

    /// Grants from the global cluster: their units go into the regional pool, usable (and
    /// sub-leased) until the upstream lease ends.
    public mutating func upstreamReceive(_ grants: [Grant], now: Instant) {
        guard upstream != nil else { return }
        for g in grants {
            allocator.advance(g.budget, now: now)
            guard let view = allocator.regionView(g.budget, now: now),
                  let d = upstream!.receive(g, now: now, view: view) else { continue }
            allocator.deposit(g.budget, amount: d.amount, expiresAt: d.expiresAt, now: now)
            counters.upstreamUnits += d.amount
        }
    }

    /// The rest of the node's side of the protocol on the global budgets (retries, owners).
    public mutating func upstream<T>(_ body: (inout UpstreamClient) -> T) -> T? {
        guard upstream != nil else { return nil }
        return body(&upstream!)
    }

    /// Gives every global budget's free units back upstream (shutdown): what to send, and
    /// whether acquires are still waiting for grants.
    public mutating func upstreamShutdown(now: Instant) -> (outgoing: [Enforcer.Outgoing], waiting: Bool) {
        guard upstream != nil else { return ([], false) }
        let waiting = upstream!.awaitingGrants
        for b in upstream!.budgets {
            // Shutting down: what was given back can no longer be granted here.
            if let v = releaseUpstream(b) { _ = allocator.withdraw(b, max: v.free, now: now) }
        }
        defer { upstreamOutbox = [] }
        return (upstreamOutbox, waiting)
    }

    /// A region lets go of a global budget's upstream lease: its free units go back to the
    /// global cluster (queued in the outbox). Returns the region's view of it as it was.
    mutating func releaseUpstream(_ budget: BudgetID) -> UpstreamClient.RegionView? {
        let view = allocator.regionView(budget, now: .zero, demand: 0)
        guard let release = upstream!.forget(budget, view: view) else { return nil }
        upstreamOutbox.append(release)
        return view
    }
}
