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
    /// What differs by budget kind lives in `LocalSlice+Kinds.swift`, and only there.
    @usableFromInline let kind: Kind
    /// Buckets: the period their rate is per (1 otherwise).
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
    /// A request was refused waiting for this budget since the last ask (`needsRefill` is
    /// also set by a low watermark, to prefetch).
    @usableFromInline var refused = false
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
    /// A slice's units were recalled (a lowered quota or concurrency limit, or permits for
    /// another node): acknowledge at once, with an acquire.
    var recalled = false
    /// Units came back above the recall's cap after it was acknowledged (a permit whose request
    /// ended): given back at once, with a release (nothing is asked for).
    var givesBack = false
    /// After a recall: the most the slice may hold (spendable and reserved) plus what it
    /// consumed since (`consumedAtRecall`); permits and refunds coming back above it go back
    /// to the coordinator. Lifted by a grant of more units, or a new lease.
    @usableFromInline var holdCap: Int64?
    var consumedAtRecall: Int64 = 0
    /// Consumption as last sent to the coordinator (what a recall's share already counted).
    var reportedConsumed: Int64 = 0
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
        (kind, periodNs) = Kind.of(spec.kind)
        switch spec.failMode {
        case .closed: mode = .closed; staticAllowance = 0
        case .open: mode = .open; staticAllowance = 0
        case .static(let a): mode = .staticAllowance; staticAllowance = a
        }
    }

    /// Units the node holds under its lease (spendable plus reserved in flight).
    var holding: Int64 { max(0, available) + reserved }

    /// What a request may take now: the better of the two books of a bucket.
    @inlinable var spendable: Int64 { preferNoRefund ? max(available, noRefundLevel) : available }

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
        holdCap = nil
        givesBack = false
        reportedConsumed = 0
    }

    /// A recall (`Enforcer.receivePush`): hold at most `keep` units the coordinator counts as
    /// out on this lease, less what was consumed and not yet reported (the share counted it).
    mutating func recall(keep: Int64) {
        holdCap = max(0, Checked.sum(keep, -max(0, Checked.sum(consumed, -reportedConsumed))))
        consumedAtRecall = consumed
        recalled = true
        applyHoldCap()
    }

    /// Gives back what a recalled slice holds above its cap (with the next message).
    @usableFromInline mutating func applyHoldCap() {
        guard let cap = holdCap else { return }
        let over = Checked.sum(available, reserved, Checked.sum(consumed, -consumedAtRecall), -cap)
        let back = max(0, min(available, over))
        guard back > 0 else { return }
        withdraw(back)
        released = Checked.add(released, back)
        givesBack = true
    }
}
