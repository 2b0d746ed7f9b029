/// The coordinator's books for one budget: what is free, what is out on leases, what was
/// consumed, and every node's lease. All amounts are integers.
///
/// Two kinds of lease share these books:
/// - *slices* (quota, concurrency): units moved from the pool to a node, returned or
///   reported consumed, counted as spent when the lease expires unreturned;
/// - *rate leases* (rate): a refill rate and a bucket capacity the node enforces locally,
///   plus tokens moved from the pool into its bucket.
///
/// What differs by kind (refill, windows, how a lease is booked, what an ended lease leaves)
/// is the `book`'s; the account keeps what every kind shares.
///
/// Invariants (checked by `checkInvariants`, argued in docs/design.md):
/// - rate: `pool + Σ committed capacity ≤ burst` and `Σ committed rate ≤ rate`;
/// - quota: `pool + outstanding + consumed + expired ≤ allowance` within a window;
/// - concurrency: `pool + outstanding ≤ limit`.
struct BudgetAccount: Sendable {
    struct Lease: Sendable {
        var id: LeaseID
        var expiresAt: Instant
        /// Slices: cumulative units granted, and the node's cumulative reports.
        var granted: Int64 = 0
        var consumedSeen: Int64 = 0
        var releasedSeen: Int64 = 0
        /// Rate leases: the terms last sent, and the most the node may be enforcing now
        /// (a lowered term is only committed once the node's next request shows it applied it).
        var rate: Int64 = 0
        var capacity: Int64 = 0
        var committedRate: Int64 = 0
        var committedCapacity: Int64 = 0

        /// Slices: units on the node (spendable, reserved, or consumed but not yet reported).
        var unreturned: Int64 { granted - consumedSeen - releasedSeen }
    }

    struct NodeEntry: Sendable {
        var lastRequestID: UInt64 = 0
        var lastGrant: Grant?
        /// Slice (or bucket capacity) the node wants for one refresh interval.
        var want: Int64 = 0
        /// Demand in units per period (rate budgets), with headroom.
        var demandPerPeriod: Int64 = 0
        /// Demand as the node last reported it, units per second (any kind).
        var demandRate: Int64 = 0
        /// Spendable units the node reported with its last acquire.
        var available: Int64 = 0
        var lastSeen: Instant
        var lease: Lease?
        /// Sequence numbers of grants and pushes; terms sent but not yet known to be applied.
        var nextSequence: UInt64 = 1
        var unacknowledged: [(sequence: UInt64, rate: Int64, capacity: Int64)] = []
        /// When a push was last sent, to re-send an unacknowledged recall.
        var lastPushAt: Instant = .zero
        /// Concurrency: the node's permits were recalled for a node that had none
        /// (`recallPermits`); it gives each back as it comes free, until it is granted more.
        var drained = false
        /// A quota lease that ran out unreported (its units counted as spent), until the node
        /// settles it late (`settleLapsed`) or the window ends.
        var lapsed: Lapsed?
        /// A previous life of a restarted node (`retire`): no requests come for it any more;
        /// its lease runs out as it is, then the entry goes.
        var retired = false
    }

    /// What a quota lease held when it ran out: its unreported units were counted as spent.
    struct Lapsed: Sendable {
        var leaseID: LeaseID
        var unreturned: Int64
        var consumedSeen: Int64
    }

    /// Changed at run time by `respec` (a new configuration version).
    var spec: BudgetSpec
    /// What differs by kind: its own state and rules.
    var book: BudgetBook
    var epoch: UInt64 = 1
    /// Free units the coordinator can grant now.
    var pool: Int64
    /// Slices: Σ unreturned over leases. Rate: Σ committed capacity.
    var outstanding: Int64 = 0
    /// Units reported consumed (this window, for quotas).
    var consumed: Int64 = 0
    /// Slices: units on leases that ended unreturned (a quota's when they expire or close,
    /// permits' only when they close): counted as spent, never re-granted.
    var expiredSpent: Int64 = 0
    /// Learning mode: until then, grant nothing beyond what nodes report holding.
    var learningUntil: Instant?
    /// Learning a durable quota from its ledger row: what the row leaves free is granted
    /// while nodes' holdings are adopted (`startLearning`).
    var grantsWhileLearning = false
    var nodes: [NodeID: NodeEntry] = [:]
    var nextLeaseID: LeaseID = 1
    var grantsTotal: Int64 = 0
    /// Offers and recalls waiting to be sent.
    var pushes: [Push] = []
    /// Quota budgets with a durable ledger: counters not yet handed to it, by window start.
    var journaling = false
    var journalEntries: [Instant: LedgerCounters] = [:]
    /// After an ownership change: units the ledger says may still be on nodes. A node's
    /// reported holding is adopted out of this (moved from "consumed" back to "outstanding").
    var adoptable: Int64 = 0
    /// Hierarchy: set when this budget's units come from an upstream lease (a region's
    /// coordinator leasing a global budget from the global cluster). See `Upstream`.
    var upstream: Upstream?
    /// A lowered limit not yet in force: nodes may still enforce the old terms (committed until
    /// they acknowledge, or until their leases end). Meanwhile the pool stays empty and the old
    /// terms are what the books count; cleared once the totals fit the new limit.
    var draining = false
    /// While draining: the most the books may count, by every terms in force since it began
    /// (the ceiling; a rate budget's rate).
    var drainCeiling: Int64 = 0
    var drainRate: Int64 = 0

    init(spec: BudgetSpec, now: Instant) {
        self.spec = spec
        book = BudgetBook(spec.kind, now: now)
        pool = book.ceiling
    }

    var isLearning: Bool { learningUntil != nil }
    /// Rate leases rather than slices.
    var isRate: Bool { book.isRate }
    /// Rate: Σ committed rate.
    var committedRate: Int64 { book.rateBook?.committedRate ?? 0 }
    /// Current calendar window, for quotas.
    var windowStart: Instant { book.quotaBook?.windowStart ?? .zero }
    var windowEnd: Instant { book.quotaBook?.windowEnd ?? .distantFuture }

    /// When `advance` next has work: learning ends, a quota window ends, an upstream lease or
    /// a node's lease runs out.
    var nextDeadline: Instant {
        var t = learningUntil ?? .distantFuture
        if let d = book.deadline { t = min(t, d) }
        if let u = upstream, u.expiresAt != .zero { t = min(t, u.expiresAt) }
        for e in nodes.values { if let l = e.lease { t = min(t, l.expiresAt) } }
        return t
    }
    var holders: Int { nodes.values.reduce(0) { $0 + ($1.lease != nil ? 1 : 0) } }

    // MARK: time

    /// Brings the account up to `now`: ends learning, rolls a quota window, expires leases,
    /// refills the pool. Appends the leases that expired, for metrics.
    mutating func advance(to now: Instant, expired: inout [(NodeID, Int64)]) {
        if let until = learningUntil, now >= until {
            // Refill (none happens while learning) restarts from the end of learning.
            refill(to: until)
            endLearning(at: until)
        }
        if let oldStart = book.rollWindow(to: now) {
            // Every lease of the old window ended with it (grants never outlive the window).
            for (node, entry) in nodes where entry.lease != nil {
                expired.append((node, entry.lease!.unreturned))
                journal(oldStart) { $0.expired += entry.lease!.unreturned }
                nodes[node]!.lease = nil
            }
            for node in nodes.keys { nodes[node]!.lapsed = nil } // the old window is closed
            nodes = nodes.filter { !$0.value.retired }
            adoptable = 0
            outstanding = 0
            consumed = 0
            expiredSpent = 0
            pool = isLearning || upstream != nil ? 0 : book.ceiling
            if upstream != nil { upstream = Upstream() } // the upstream lease ended with the window
        }
        if var u = upstream, u.expiresAt != .zero, now >= u.expiresAt {
            // The upstream lease ran out unrenewed: what was not sub-leased is gone with it
            // (the upstream counts it as spent); sub-leases never outlive it, so they end too.
            u.lost += pool
            pool = 0
            u.expiresAt = .zero
            upstream = u
        }
        var ending: [(node: NodeID, lease: Lease)] = []
        for (node, entry) in nodes {
            if let lease = entry.lease, lease.expiresAt <= now { ending.append((node, lease)) }
        }
        ending.sort { $0.node < $1.node } // the same order in every process
        for (node, lease) in ending {
            expired.append((node, expire(node: node, lease: lease)))
        }
        refill(to: now)
        clampWhileDraining()
    }

    /// Ends a lease that ran out; returns what it held (for metrics).
    private mutating func expire(node: NodeID, lease: Lease) -> Int64 {
        defer { if nodes[node]?.retired == true { nodes[node] = nil } }
        nodes[node]?.lease = nil
        nodes[node]?.unacknowledged = []
        let held = book.end(lease)
        outstanding -= held
        switch book.leftover(closing: false) {
        case .dropped:
            break // whatever was in the node's bucket is counted as spent
        case .freed:
            if let u = upstream, u.expiresAt == .zero {
                upstream!.lost += held // the upstream lease they came from is over
            } else if !isLearning {
                pool += held
                clampWhileDraining()
            }
        case .spent:
            expiredSpent += held
            journal(windowStart) { $0.expired += held }
            if upstream == nil && held > 0 {
                nodes[node]?.lapsed = Lapsed(leaseID: lease.id, unreturned: held, consumedSeen: lease.consumedSeen)
            }
        }
        return held
    }

    /// A late, final report on a quota lease that ran out unreported (a region cut off from
    /// the global cluster reports once it is back: its sub-leases all ended with the lease, so
    /// its count is final). What it did not use is no longer counted as spent: it returns to
    /// the pool. Returns the units returned, or nil when `req` is not such a report. Only in
    /// the window the lease was granted in, only once, never while learning.
    mutating func settleLapsed(_ req: ReleaseRequest) -> Int64? {
        guard req.final, book.leftover(closing: false) == .spent, upstream == nil, !isLearning,
              let l = nodes[req.node]?.lapsed, l.leaseID == req.leaseID else { return nil }
        nodes[req.node]!.lapsed = nil
        let used = min(max(0, req.consumed - l.consumedSeen), l.unreturned)
        let back = l.unreturned - used
        expiredSpent -= l.unreturned
        consumed += used
        pool += back
        clampWhileDraining()
        journal(windowStart) { $0.expired -= l.unreturned; $0.consumed += used; $0.released += back }
        return back
    }

    /// Refills the pool of a rate budget up to `now` (`RateBook.refill`).
    mutating func refill(to now: Instant) {
        let learning = isLearning
        book.refill(to: now, pool: &pool, outstanding: outstanding, learning: learning)
    }

    // MARK: learning mode

    /// `fromLedger`: `committed` is a durable quota's ledger row. Then what the row leaves
    /// free is granted at once (every grant is written ahead under the ledger's cap, so
    /// nothing the old owner or a stale view granted can be granted twice); only what nodes
    /// may still hold is learned.
    mutating func startLearning(epoch: UInt64, now: Instant, until: Instant, committed: Int64, adoptable: Int64,
                                fromLedger: Bool = false) {
        self.epoch = epoch
        learningUntil = until
        pool = 0
        grantsWhileLearning = false
        book.restartRefill(at: now)
        if let q = book.quotaBook {
            consumed = q.consumed(committed: committed)
            self.adoptable = min(consumed, max(0, adoptable))
            if fromLedger, upstream == nil {
                pool = q.free(consumed: consumed, outstanding: outstanding, expiredSpent: expiredSpent)
                grantsWhileLearning = true
            }
        }
    }

    /// Resumes a quota window from the ledger without learning (no node can hold a lease
    /// the ledger does not know about): everything committed counts as consumed.
    mutating func resume(epoch: UInt64, committed: Int64) {
        self.epoch = epoch
        guard let q = book.quotaBook else { return }
        consumed = q.consumed(committed: committed)
        pool = q.free(consumed: consumed, outstanding: outstanding, expiredSpent: expiredSpent)
    }

    /// Learning mode again (or longer) without forgetting anything: leases held stay as they
    /// are, nothing new is granted until `until`.
    mutating func extendLearning(now: Instant, until: Instant) {
        refill(to: now)
        grantsWhileLearning = false // nothing new at all, as for every other budget
        learningUntil = max(learningUntil ?? until, until)
    }

    private mutating func endLearning(at until: Instant) {
        learningUntil = nil
        grantsWhileLearning = false
        book.restartRefill(at: until)
        if let p = book.poolAfterLearning(consumed: consumed, outstanding: outstanding, expiredSpent: expiredSpent,
                                          upstream: upstream != nil) {
            pool = p
        }
    }

    // MARK: reports

    /// Applies a node's cumulative counters under `lease`; returns units put back in the pool.
    /// `closing`: the node gives the lease up with this report (its capacity is freed first).
    @discardableResult
    mutating func apply(consumed c: Int64, released r: Int64, to lease: inout Lease, closing: Bool = false) -> Int64 {
        let learning = isLearning
        let (dc, dr, back) = book.apply(consumed: c, released: r, to: &lease, closing: closing, learning: learning,
                                        pool: &pool, outstanding: &outstanding, totalConsumed: &consumed)
        journal(windowStart) { $0.consumed += dc; $0.released += dr }
        clampWhileDraining()
        return back
    }

    /// `node` restarted (a new incarnation in its hello): its previous life's entry moves to
    /// `retiredName`, lease and all, and runs out there like the lease of any node that went
    /// silent (a quota's units out on it count as spent at expiry, a rate lease's committed
    /// rate stays committed until then: the old process may not be quite dead). The new life
    /// starts afresh: request ids from 1, no lease, nothing to dedupe against.
    mutating func retire(_ node: NodeID, as retiredName: NodeID) {
        guard var e = nodes.removeValue(forKey: node), e.lease != nil else { return }
        e.retired = true
        e.want = 0
        e.demandPerPeriod = 0
        e.demandRate = 0
        e.available = 0
        e.lastGrant = nil
        e.lapsed = nil
        nodes[retiredName] = e
    }

    /// Ends a lease the node gave up; what is still out on it is counted as spent.
    mutating func close(_ node: NodeID) {
        guard let lease = nodes[node]?.lease else { return }
        let held = book.end(lease)
        outstanding -= held
        if book.leftover(closing: true) == .spent {
            expiredSpent += held
            journal(windowStart) { $0.expired += held }
        }
        nodes[node]!.lease = nil
        nodes[node]!.unacknowledged = []
        nodes[node]!.want = 0
        nodes[node]!.demandPerPeriod = 0
    }
}
