/// What a `LeaseClient` keeps fed: something that speaks the node's side of the lease
/// protocol. A gateway's `SharedEnforcer` is one; a region's coordinator, leasing global
/// budgets from the global cluster on behalf of its whole region, is another.
public protocol LeaseEndpoint: Sendable {
    /// The name in the hello (the certificate's name).
    var nodeName: String { get }
    var budgetIDs: [BudgetID] { get }
    /// Expires what ended and says what to send now. `expiredInUse`: budgets whose
    /// concurrency lease ended with requests still holding permits (to log).
    func step(now: Instant) -> (outgoing: [Enforcer.Outgoing], expiredInUse: [String])
    /// When `step` next has work (the client steps no more often than its poll interval).
    func nextWake(now: Instant) -> Instant
    /// Answers and pushes from a coordinator (outcome `granted` only).
    func receive(_ grants: [Grant], now: Instant)
    /// A request was redirected or answered "unavailable": ask again after `after`.
    func retrySoon(_ budget: BudgetID, after: Duration, now: Instant)
    /// The coordinator answered "unknown budget" (`Enforcer.unknownBudget`).
    func unknownBudget(_ budget: BudgetID, requestID: UInt64, now: Instant)
    /// The owners of `moved` changed: report their leases to the new owners.
    func ownersChanged(_ moved: Set<BudgetID>, now: Instant)
    /// A coordinator went away: re-send every unanswered request.
    func retryAllPending(now: Instant)
    /// Gives everything back (repeated while `waiting` says answers are still due).
    func shutdown(now: Instant) -> (outgoing: [Enforcer.Outgoing], waiting: Bool)
}

extension SharedEnforcer: LeaseEndpoint {
    public var nodeName: String { withEnforcer { "\($0.settings.node)" } }
    public var budgetIDs: [BudgetID] { withEnforcer { $0.budgetIDs } }

    public func step(now: Instant) -> (outgoing: [Enforcer.Outgoing], expiredInUse: [String]) {
        withEnforcer { e in
            let events = e.tick(now: now)
            var inUse: [String] = []
            for case .leaseExpired(let h, let permits) in events where permits > 0 { inUse.append("\(h)") }
            return (e.poll(now: now), inUse)
        }
    }

    public func nextWake(now: Instant) -> Instant {
        withEnforcer { $0.nextWake(now: now) }
    }

    public func receive(_ grants: [Grant], now: Instant) {
        withEnforcer { e in for g in grants { _ = e.receive(g, now: now) } }
    }

    public func retrySoon(_ budget: BudgetID, after: Duration, now: Instant) {
        withEnforcer { $0.retrySoon(budget, after: after, now: now) }
    }

    public func unknownBudget(_ budget: BudgetID, requestID: UInt64, now: Instant) {
        withEnforcer { $0.unknownBudget(budget, requestID: requestID, now: now) }
    }

    public func ownersChanged(_ moved: Set<BudgetID>, now: Instant) {
        withEnforcer { $0.ownersChanged(moved, now: now) }
    }

    public func retryAllPending(now: Instant) {
        withEnforcer { $0.retryAllPending(now: now) }
    }

    public func shutdown(now: Instant) -> (outgoing: [Enforcer.Outgoing], waiting: Bool) {
        withEnforcer { e in (e.shutdown(now: now), e.awaitingGrants) }
    }
}

extension LeaseEndpoint {
    /// By default nothing changes: the request is sent again at its retry timeout (a region's
    /// uplink asks the global cluster again until it knows the budget).
    public func unknownBudget(_ budget: BudgetID, requestID: UInt64, now: Instant) {}
}
