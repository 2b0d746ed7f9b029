import AllotCoordination
import AllotCore

/// A region's coordinator towards the global cluster (step 5): one node of it, speaking the
/// ordinary lease protocol for the global budgets this coordinator owns in its region. A
/// `LeaseClient` over this endpoint (made by whoever runs the coordinator: `allot coordinator`
/// puts it in the same `ServiceGroup`; this module does not link the node's shell) does the
/// connecting, routing to the global owners,
/// redirects and reconnects; the `CoordinatorMachine` (under the core's one lock) holds the
/// books: the `UpstreamClient` state machine and the upstream-backed allocator accounts.
///
/// Nothing on a regional node's request path waits for it: regional nodes are granted
/// from what the region already holds, and this refills it in the background.
public struct RegionUplink: LeaseEndpoint {
    public let core: CoordinatorCore
    public let nodeName: String

    public init(core: CoordinatorCore) {
        self.core = core
        nodeName = core.settings.upstream.map { "\($0.node)" } ?? core.settings.name
    }

    public var budgetIDs: [BudgetID] { core.machine { $0.upstream { $0.budgets } } ?? [] }

    public func step(now: Instant) -> (outgoing: [Enforcer.Outgoing], expiredInUse: [String]) {
        (core.machine { $0.upstreamStep(now: now) }, [])
    }

    /// Every poll interval: the upstream client decides at each step what to renew.
    public func nextWake(now: Instant) -> Instant { now }

    public func receive(_ grants: [Grant], now: Instant) { core.machine { $0.upstreamReceive(grants, now: now) } }

    public func retrySoon(_ budget: BudgetID, after: Duration, now: Instant) {
        core.machine { _ = $0.upstream { $0.retrySoon(budget, after: after, now: now) } }
    }

    public func ownersChanged(_ moved: Set<BudgetID>, now: Instant) {
        core.machine { _ = $0.upstream { $0.ownersChanged(moved, now: now) } }
    }

    public func retryAllPending(now: Instant) { core.machine { _ = $0.upstream { $0.retryAllPending(now: now) } } }

    public func shutdown(now: Instant) -> (outgoing: [Enforcer.Outgoing], waiting: Bool) { core.machine { $0.upstreamShutdown(now: now) } }
}
