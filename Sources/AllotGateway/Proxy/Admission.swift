import AllotCore
import Synchronization

/// What a gateway decided, as it happens: for the demo's live table and for tests that
/// check caps from the gateways' own timestamps.
public struct GatewayEvent: Sendable {
    public typealias Observer = @Sendable (GatewayEvent) -> Void
    public enum Kind: Sendable { case admit, settle, deny, reject }
    public var kind: Kind
    /// Pairs an `admit` with its `settle` (per node).
    public var id: UInt64
    public var node: String
    public var consumer: String
    public var tier: String
    public var time: Instant
    /// Reserved (admit) or charged (settle).
    public var cost: Cost?
    /// What denied or rejected (an admission: the shadow budget that would have denied it).
    public var budget: String?
}

/// An admitted request: its reservation must be settled exactly once. If it is dropped
/// unsettled (a response body that was never written), it settles at the full bound.
public final class Admission: Sendable {
    let core: GatewayCore
    public let id: UInt64
    public let entry: ConsumerDirectory.Entry
    public let plan: RequestPlan
    /// Under the enforced budgets (nil when every budget is in shadow mode), and under the
    /// shadow ones (nil when there are none, or they would have denied).
    let reservations: (enforced: Reservation?, shadow: Reservation?)
    /// The budgets' standing right after the reservation (for the response headers).
    public let standings: [BudgetStanding]
    public let runaway: Bool
    /// Shadow mode: the budget that would have denied this request (`x-allot-would-deny`).
    public let wouldDeny: String?
    let started: Instant
    private let done = Mutex(false)

    init(core: GatewayCore, id: UInt64, entry: ConsumerDirectory.Entry, plan: RequestPlan,
         reservations: (enforced: Reservation?, shadow: Reservation?),
         standings: [BudgetStanding], runaway: Bool, started: Instant, wouldDeny: String?) {
        self.core = core
        self.id = id
        self.entry = entry
        self.plan = plan
        self.reservations = reservations
        self.standings = standings
        self.runaway = runaway
        self.started = started
        self.wouldDeny = wouldDeny
    }

    /// In the route's dialect: `anthropic-ratelimit-*` on Messages, `x-ratelimit-*` elsewhere.
    public var headers: [(String, String)] {
        RateLimitHeaders.make(standings, now: core.now(), anthropic: plan.route.isAnthropic) + (wouldDeny.map { [("x-allot-would-deny", $0)] } ?? [])
    }

    /// Settles (only the first call counts).
    public func settle(_ outcome: GatewayCore.Outcome) {
        guard done.withLock({ d in defer { d = true }; return !d }) else { return }
        core.settle(self, outcome: outcome)
    }

    public var isSettled: Bool { done.withLock { $0 } }

    deinit {
        if !done.withLock({ $0 }) { core.settle(self, outcome: .incomplete(status: nil)) }
    }
}
