/// One budget's slice on a node: what the node may spend, under which lease, until when.
/// Plain values only, so the hot path touches no reference counts.
@usableFromInline
struct LocalSlice: Sendable {
    @usableFromInline enum Mode: UInt8, Sendable { case closed, open, staticAllowance }

    struct Pending: Sendable {
        var requestID: UInt64
        /// When the first attempt was sent: the lease's TTL counts from here.
        var firstSentAt: Instant
        var lastSentAt: Instant
        var request: AcquireRequest
    }

    @usableFromInline let unit: Unit
    @usableFromInline let isConcurrency: Bool
    @usableFromInline let isRate: Bool
    @usableFromInline let periodNs: Int64
    @usableFromInline let mode: Mode
    @usableFromInline let staticAllowance: Int64

    @usableFromInline var leaseID: LeaseID = 0
    var epoch: UInt64 = 0
    /// Spendable now.
    @usableFromInline var available: Int64 = 0
    /// Reserved by requests in flight under the current lease (permits in use, for concurrency).
    @usableFromInline var reserved: Int64 = 0
    /// The node's copy of the lease ends here: always before the coordinator's.
    @usableFromInline var expiresAt: Instant = .zero
    /// Cumulative under the current lease, reported with every acquire and release.
    @usableFromInline var consumed: Int64 = 0
    var released: Int64 = 0
    /// Admitted without a lease in `open` mode; repaid from the next grants.
    @usableFromInline var debt: Int64 = 0
    @usableFromInline var staticUsed: Int64 = 0
    @usableFromInline var staticPeriod: Int64 = -1

    /// Rate leases: the terms enforced now (never above the granted ones).
    @usableFromInline var rate: Int64 = 0
    @usableFromInline var capacity: Int64 = 0
    @usableFromInline var refillRemainder: Int64 = 0
    @usableFromInline var lastRefill: Instant = .zero

    @usableFromInline var demand = DemandMeter()
    @usableFromInline var admitted = DemandMeter()
    @usableFromInline var lastCost: Int64 = 0
    /// Ask for more when `available` falls to this (set by `poll`).
    @usableFromInline var watermark: Int64 = 0
    @usableFromInline var needsRefill = false
    var pending: Pending?
    /// Highest grant sequence applied; older terms are ignored.
    var lastSequence: UInt64 = 0
    /// A recall lowered our rate: acknowledge with an acquire at once.
    var needsAck = false
    /// The budget's owner changed (a coordinator joined, left or failed): report the lease
    /// held to the new owner at the next poll, so it is adopted while the owner is learning.
    var reportOwner = false
    var retryNotBefore: Instant = .zero
    var lastSentAt: Instant = Instant(nanoseconds: .min / 2)
    var lastDemandAt: Instant = .zero
    /// Demand (units per second) sent with the last acquire.
    var reportedDemand: Int64 = 0

    init(spec: BudgetSpec) {
        unit = spec.unit
        isConcurrency = spec.kind.isConcurrency
        if case .rate(_, let p, _) = spec.kind {
            isRate = true
            periodNs = p.nanoseconds
        } else {
            isRate = false
            periodNs = 1
        }
        switch spec.failMode {
        case .closed: mode = .closed; staticAllowance = 0
        case .open: mode = .open; staticAllowance = 0
        case .static(let a): mode = .staticAllowance; staticAllowance = a
        }
    }

    @inlinable
    func amount(for cost: Cost) -> Int64 { isConcurrency ? 1 : cost[unit] }

    /// Units the node holds under its lease (spendable plus reserved in flight).
    var holding: Int64 { available + reserved }

    /// Rate leases: refill the local bucket at the enforced rate. Reserved units count as
    /// part of the bucket, so a later refund can never lift it above its capacity.
    @inlinable
    mutating func refill(now: Instant) {
        let dt = now.nanoseconds &- lastRefill.nanoseconds
        guard dt > 0 else { return }
        lastRefill = now
        let room = capacity - reserved - available
        guard room > 0, rate > 0 else {
            refillRemainder = 0
            return
        }
        let add: Int64
        if dt < 1 << 31 && rate < 1 << 31 {
            let x = dt &* rate &+ refillRemainder
            add = x / periodNs
            refillRemainder = x - add &* periodNs
        } else {
            let p = dt.multipliedFullWidth(by: rate)
            let (low, carry) = p.low.addingReportingOverflow(UInt64(refillRemainder))
            let high = p.high &+ (carry ? 1 : 0)
            if high >= periodNs / 2 { // more than any room: full
                add = room
                refillRemainder = 0
            } else {
                let (q, r) = periodNs.dividingFullWidth((high: high, low: low))
                add = q
                refillRemainder = r
            }
        }
        if add >= room {
            available += room
            refillRemainder = 0
        } else {
            available += add
        }
    }
}
