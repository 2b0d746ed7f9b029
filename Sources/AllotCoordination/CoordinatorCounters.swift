import AllotCore

/// The coordinator's counters, by name and label; rendered as Prometheus text by the admin
/// endpoint. The machine counts its decisions; the shell counts frames and connections.
public struct CoordinatorCounters: Sendable {
    public var grants: Int64 = 0
    public var grantedUnits: Int64 = 0
    public var releases: Int64 = 0
    public var pushes: Int64 = 0
    public var framesIn: [String: Int64] = [:]
    public var rejected: [String: Int64] = [:]
    public var handshakeFailures: [String: Int64] = [:]
    public var frameErrors: [String: Int64] = [:]
    /// Connections closed by a limit (handshake/hello/idle timeout, caps, refusals, a
    /// frame this side could not send), by reason; and reading paused for backpressure.
    public var closedByLimit: [String: Int64] = [:]
    public var backpressurePauses: Int64 = 0
    public var overclaims: Int64 = 0
    public var redirects: Int64 = 0
    public var ownershipGained: Int64 = 0
    public var ownershipLost: Int64 = 0
    public var ledgerRefusals: Int64 = 0
    public var ledgerRevoked: Int64 = 0
    /// A region: units deposited by the global cluster's grants.
    public var upstreamUnits: Int64 = 0
    /// Late settlements of lapsed quota leases (a region back after a cut), and the
    /// units they returned to the pool.
    public var lateSettlements: Int64 = 0
    public var lateSettledUnits: Int64 = 0
    /// Hellos from a new life of a node already known (its previous life retired).
    public var nodeRestarts: Int64 = 0
    /// Tier budgets made on first use, and retired when idle.
    public var tierBudgetsMade: Int64 = 0
    public var tierBudgetsRetired: Int64 = 0
    /// Audit heads received from nodes.
    public var auditHeads: Int64 = 0
    public init() {}
}
