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
    /// Spendable now. Rate leases: the bucket with reservations inside it (a refund returns,
    /// refill stops while reservations fill it); may go below 0 when `noRefundLevel` admitted.
    @usableFromInline var available: Int64 = 0
    /// Rate leases: the same bucket if every reservation were taken out of it and never
    /// refunded (it keeps refilling up to the capacity while they are in flight). Both are
    /// lower bounds of what the bucket may still admit exactly, charged alike, so a request
    /// that fits either may go (`spendable`): docs/design.md, "Reservations held in flight".
    @usableFromInline var noRefundLevel: Int64 = 0
    /// Admit by the better of the two books, not by `available` alone: set by `poll` while
    /// reservations hold the bucket longer than it takes to refill (capacity < rate × mean
    /// hold, by Little's law reserved ÷ admitted rate; nothing admitted lately while units are
    /// reserved counts as a long hold). Deciding by both books always would be safe too, but
    /// it pushes `reserved` above the capacity, where refunds to `available` are cut.
    @usableFromInline var preferNoRefund = false
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
    /// Last refused request this budget could have covered, refused while waiting for another
    /// budget of its set: what it holds is given back while nothing else asks for it.
    /// Admitted, or waited for itself, since: cleared.
    @usableFromInline var heldBackAt = LocalSlice.notHeldBack
    @usableFromInline static let notHeldBack = Instant(nanoseconds: .min / 2)
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
    var holding: Int64 { max(0, available) + reserved }

    /// What a request may take now: the better of the two books of a rate lease.
    @inlinable var spendable: Int64 { preferNoRefund ? max(available, noRefundLevel) : available }

    /// Takes `amount` from the spendable units (both books of a rate lease).
    @inlinable mutating func charge(_ amount: Int64) {
        available -= amount
        if isRate { noRefundLevel -= amount }
    }

    /// Tokens arriving (a grant moving tokens from the pool): into both books, within the
    /// capacity (`available` never above capacity − reserved, nor lifted above what it had
    /// when that is already negative: tokens only ever fill, never erase a charge).
    mutating func deposit(_ amount: Int64) {
        available = max(min(available, 0), min(Checked.add(available, amount), capacity - reserved))
        if isRate { noRefundLevel = max(min(noRefundLevel, 0), min(Checked.add(noRefundLevel, amount), capacity)) }
    }

    /// Units leaving the node (given back to the pool, or repaying debt): out of both books.
    mutating func withdraw(_ amount: Int64) {
        available -= amount
        if isRate { noRefundLevel = min(noRefundLevel - amount, capacity) }
    }

    /// Both books emptied (a lease ended or was replaced).
    mutating func empty() {
        available = 0
        noRefundLevel = 0
        preferNoRefund = false
    }

    /// Nothing held, reserved or reported under a lease any more (a new lease starts from here).
    mutating func clearBooks() {
        empty()
        reserved = 0
        consumed = 0
        released = 0
    }

    /// Rate leases, off the hot path: which book decides (`preferNoRefund`), from what is
    /// reserved now and the rate units are admitted at.
    mutating func chooseBook(admittedPerSecond: Int64) {
        guard isRate, reserved > 0, rate > 0 else {
            preferNoRefund = false
            return
        }
        // capacity < rate × reserved ÷ admitted, without dividing by an admitted rate of 0.
        let refillPerSecond = Double(rate) * 1e9 / Double(periodNs)
        preferNoRefund = Double(capacity) * Double(max(0, admittedPerSecond)) < refillPerSecond * Double(reserved)
    }

    /// Rate leases: refill the local bucket at the enforced rate, both books: `available` up
    /// to the capacity minus what is reserved (so a later refund can never lift it above the
    /// capacity), `noRefundLevel` up to the capacity (it never gets refunds).
    @inlinable
    mutating func refill(now: Instant) {
        let dt = now.nanoseconds &- lastRefill.nanoseconds
        guard dt > 0 else { return }
        lastRefill = now
        let inside = capacity - reserved - available
        let outside = capacity - noRefundLevel
        let room = max(inside, outside)
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
        if add >= room { refillRemainder = 0 }
        available += min(add, max(0, inside))
        noRefundLevel += min(add, max(0, outside))
    }
}
