/// Identifies one lease of one node on one budget, assigned by the coordinator.
/// 0 means "no lease".
public typealias LeaseID = UInt64

/// A node's request for (more of) a budget. Also renews the node's lease and reports its
/// cumulative consumption and releases under that lease.
///
/// Counters are cumulative per lease, so duplicates and reordering are harmless: the
/// coordinator only ever applies the increase over what it has seen.
public struct AcquireRequest: Hashable, Sendable {
    /// Unique and increasing per node. A retry of a lost request MUST reuse its id.
    public var requestID: UInt64
    public var node: NodeID
    public var budget: BudgetID
    /// The slice the node wants to hold for the next refresh interval (its measured demand
    /// rate × the refresh interval, at least its largest pending cost).
    public var want: Int64
    /// Demand the node measured, in units per second (denied attempts included).
    public var demandRate: Int64
    /// The lease the node holds now (0 for none) and the owner epoch it came from.
    public var leaseID: LeaseID
    public var epoch: UInt64
    /// Cumulative amounts consumed and released under `leaseID`.
    public var consumed: Int64
    public var released: Int64
    /// What the node holds unspent right now (available plus reserved in flight). Only used
    /// by a new owner in learning mode, to adopt holdings it did not grant.
    public var holding: Int64
    /// What the node can still spend right now (its holding minus reservations in flight):
    /// the coordinator sizes the grant as the node's fair share minus this.
    public var available: Int64
    /// Rate budgets: the refill rate (units per period) and bucket capacity the node enforces
    /// from the moment it sent this request. Never above what it was granted; a node gives
    /// back rate or capacity by lowering these before it sends.
    public var rateInUse: Int64
    public var capacityInUse: Int64
    /// The highest `Grant.sequence` the node has applied for this budget: grants and pushes
    /// sent after it may still arrive, so their terms stay committed.
    public var appliedSequence: UInt64

    public init(requestID: UInt64, node: NodeID, budget: BudgetID, want: Int64, demandRate: Int64 = 0,
                leaseID: LeaseID = 0, epoch: UInt64 = 0, consumed: Int64 = 0, released: Int64 = 0,
                holding: Int64 = 0, available: Int64? = nil, rateInUse: Int64 = 0, capacityInUse: Int64 = 0, appliedSequence: UInt64 = 0) {
        self.requestID = requestID
        self.node = node
        self.budget = budget
        self.want = want
        self.demandRate = demandRate
        self.leaseID = leaseID
        self.epoch = epoch
        self.consumed = consumed
        self.released = released
        self.holding = holding
        self.available = available ?? holding
        self.rateInUse = rateInUse
        self.capacityInUse = capacityInUse
        self.appliedSequence = appliedSequence
    }
}

/// The coordinator's answer to an acquire: new amount added to the node's slice, and the
/// lease's remaining lifetime. With `requestID == 0` it is a *push*: sent unasked over the
/// node's connection to raise a rate lease (an offer) or lower it (a recall).
public struct Grant: Hashable, Sendable {
    public var requestID: UInt64
    /// Increases with every grant and push to this node for this budget; a node MUST ignore
    /// terms older than what it has applied (messages can overtake each other).
    public var sequence: UInt64
    public var budget: BudgetID
    public var leaseID: LeaseID
    /// The owner's epoch for this budget; a node MUST drop a grant from an older epoch.
    public var epoch: UInt64
    /// Units added to the slice by this grant (may be 0: a renewal only).
    public var amount: Int64
    /// The lease's lifetime, relative: the node MUST count it from when it *sent* the
    /// request, so its copy of the lease always ends before the coordinator's.
    public var ttl: Duration
    /// True when this grant starts a lease that adopts what the node reported holding
    /// under another owner's lease (learning mode): the node keeps those units.
    public var adopted: Bool
    /// When amount is short of the want: wait this long before asking again.
    public var retryAfter: Duration
    /// Rate budgets: the node refills its local bucket at `rate` units per period up to
    /// `capacity` units. The sum over nodes never exceeds the budget's rate and burst.
    public var rate: Int64
    public var capacity: Int64

    public init(requestID: UInt64, budget: BudgetID, leaseID: LeaseID, epoch: UInt64, amount: Int64,
                ttl: Duration, adopted: Bool = false, retryAfter: Duration = .zero, rate: Int64 = 0, capacity: Int64 = 0,
                sequence: UInt64 = 0) {
        self.requestID = requestID
        self.sequence = sequence
        self.budget = budget
        self.leaseID = leaseID
        self.epoch = epoch
        self.amount = amount
        self.ttl = ttl
        self.adopted = adopted
        self.retryAfter = retryAfter
        self.rate = rate
        self.capacity = capacity
    }
}

/// A node's report of cumulative consumption and releases under a lease; with `final` the
/// node gives up the lease (demand gone, or shutting down). No answer is needed.
extension AcquireRequest {
    /// Every count within 0...maxUnits (what the allocator works with, whatever arrived).
    public var clamped: AcquireRequest {
        var r = self
        r.want = Checked.units(want)
        r.demandRate = Checked.units(demandRate)
        r.consumed = Checked.units(consumed)
        r.released = Checked.units(released)
        r.holding = Checked.units(holding)
        r.available = Checked.units(available)
        r.rateInUse = Checked.units(rateInUse)
        r.capacityInUse = Checked.units(capacityInUse)
        return r
    }
}

public struct ReleaseRequest: Hashable, Sendable {
    public var node: NodeID
    public var budget: BudgetID
    public var leaseID: LeaseID
    public var consumed: Int64
    public var released: Int64
    public var final: Bool

    public init(node: NodeID, budget: BudgetID, leaseID: LeaseID, consumed: Int64, released: Int64, final: Bool) {
        self.node = node
        self.budget = budget
        self.leaseID = leaseID
        self.consumed = consumed
        self.released = released
        self.final = final
    }
}

/// A grant the coordinator sends without being asked (rate leases only): an offer raises a
/// node's rate when capacity freed up; a recall lowers it so another node can have its fair
/// share (the node MUST apply it at once and acknowledge with its next acquire).
public struct Push: Hashable, Sendable {
    public var node: NodeID
    public var grant: Grant
    public init(node: NodeID, grant: Grant) {
        self.node = node
        self.grant = grant
    }
}

extension ReleaseRequest {
    /// Both counts within 0...maxUnits.
    public var clamped: ReleaseRequest {
        var r = self
        r.consumed = Checked.units(consumed)
        r.released = Checked.units(released)
        return r
    }
}
