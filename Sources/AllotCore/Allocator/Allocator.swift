/// The coordinator-side lease engine for the budgets one coordinator owns.
///
/// A pure state machine: events in (`acquire`, `release`, `tick`, `ownershipGained`), answers
/// out. It reads no clock (every event carries `now`), owns no task or socket, and never
/// throws on a protocol event: "not applied" outcomes are enum cases.
///
/// Contract (MUST hold after every event; `checkInvariants` verifies it):
/// - never over the cap: a budget's granted-and-not-returned units plus its consumed units
///   never exceed what its kind allows (see `BudgetAccount`);
/// - idempotent grants: a re-sent acquire (same request id) gets the same grant again;
/// - expired, unreturned units count as spent and are never granted twice.
public struct Allocator: Sendable {
    public enum AcquireOutcome: Hashable, Sendable {
        /// A new grant (possibly of 0 units: a renewal, or nothing free).
        case granted(Grant)
        /// The request id was already answered: the same grant again, nothing changed.
        case resent(Grant)
        /// The request id is older than one already answered for this node: dropped.
        case ignoredStale
        case unknownBudget
    }

    public enum ReleaseOutcome: Hashable, Sendable {
        /// Counters applied; `returned` units went back to the pool.
        case applied(returned: Int64)
        /// The node reported more consumed and released than it was ever granted: only what
        /// was outstanding was applied (nothing is granted for the excess).
        case clamped(returned: Int64, excess: Int64)
        /// A late, final report on a quota lease that ran out: its unused units came back.
        case settledLate(returned: Int64)
        /// The lease is not (or no longer) held: expired leases were counted as spent.
        case ignoredUnknownLease
        case unknownBudget
    }

    /// A lease that ended unreturned during `tick`.
    public struct Expiry: Hashable, Sendable {
        public var budget: BudgetID
        public var node: NodeID
        public var amount: Int64
    }

    public let settings: AllocatorSettings
    private var accounts: [BudgetID: BudgetAccount] = [:]
    /// The budgets' ids in order, kept as budgets come and go, so a page of the status
    /// is a binary search, not a sort of every id under the coordinator's lock.
    private var ordered: [BudgetID] = []
    /// Budgets whose account may hold pushes or journal entries not yet taken: taking them
    /// looks at these only, not at every budget (a coordinator may hold millions).
    private var dirty: Set<BudgetID> = []
    /// Budgets by their next deadline (a lease expiry, a window's end, learning's end, an
    /// upstream lease's end), so `tick` visits only those due. Entries go stale when a
    /// deadline moves (`scheduled` says which is current); a stale entry costs one visit.
    private var deadlines = MinHeap<Instant, BudgetID>()
    private var scheduled: [BudgetID: Instant] = [:]
    private var lastTick: Instant = .zero
    /// Each node's current life (the incarnation in its hello), and how many lives were retired.
    private var lives: [NodeID: UInt64] = [:]
    private var retiredLives: UInt64 = 0
    /// Quota budgets keep a journal of ledger changes (`takeJournal`); set when a durable
    /// ledger is configured, before budgets are added.
    public var journaling = false
    /// The owner epoch of budgets added from now on. A coordinator sets it from the wall
    /// clock at start, so a restarted coordinator's grants fence off its previous life's.
    public var epoch: UInt64 = 1

    public init(settings: AllocatorSettings = AllocatorSettings(), budgets: [BudgetSpec], now: Instant) throws(AllotError) {
        try settings.validate()
        self.settings = settings
        for b in budgets { try add(b, now: now) }
    }

    public mutating func add(_ spec: BudgetSpec, now: Instant) throws(AllotError) {
        guard accounts[spec.id] == nil else {
            throw AllotError(.duplicateBudget, "budget \(spec.id) is already configured")
        }
        var acct = BudgetAccount(spec: spec, now: now)
        acct.journaling = journaling
        acct.epoch = epoch
        ordered.insert(spec.id, at: Self.index(after: spec.id.rawValue, in: ordered))
        put(acct, spec.id)
    }

    /// Where the ids sorting after `raw` start in `ids` (sorted).
    private static func index(after raw: String, in ids: [BudgetID]) -> Int {
        var lo = 0, hi = ids.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ids[mid].rawValue <= raw { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// This coordinator no longer owns `budget`: forget its books (the new owner learns
    /// what nodes hold). Returns the ledger changes not yet taken, to write before forgetting.
    public mutating func remove(_ budget: BudgetID) -> [LedgerChange] {
        guard var acct = accounts.removeValue(forKey: budget) else { return [] }
        let at = Self.index(after: budget.rawValue, in: ordered) - 1
        if at >= 0, ordered[at] == budget { ordered.remove(at: at) }
        return acct.takeJournal()
    }

    public func contains(_ budget: BudgetID) -> Bool { accounts[budget] != nil }

    /// Stores an account back, noting it when it has something to take.
    private mutating func put(_ acct: BudgetAccount, _ id: BudgetID) {
        var acct = acct
        acct.clampWhileDraining() // a lowered limit's old terms acknowledged during the event
        accounts[id] = acct
        if !acct.pushes.isEmpty || !acct.journalEntries.isEmpty { dirty.insert(id) }
        let d = acct.nextDeadline
        if d < (scheduled[id] ?? .distantFuture) {
            scheduled[id] = d
            deadlines.push(d, id)
        }
    }

    func account(_ budget: BudgetID) -> BudgetAccount? { accounts[budget] }

    mutating func mutate(_ budget: BudgetID, _ f: (inout BudgetAccount) -> Void) {
        guard var a = accounts[budget] else { return }
        f(&a)
        put(a, budget)
    }

    public func spec(_ budget: BudgetID) -> BudgetSpec? { accounts[budget]?.spec }

    /// Quota budgets: the current window of `budget`.
    public func window(_ budget: BudgetID) -> (start: Instant, end: Instant)? {
        guard let a = accounts[budget], a.spec.kind.isQuota else { return nil }
        return (a.windowStart, a.windowEnd)
    }

    /// Resumes a quota budget's window from its ledger row with no learning: everything
    /// the ledger counts against the allowance (granted − released) is taken as consumed.
    public mutating func resume(_ budget: BudgetID, epoch: UInt64, ledger: LedgerCounters, now: Instant) {
        guard var acct = accounts[budget] else { return }
        var expired: [(NodeID, Int64)] = []
        acct.advance(to: now, expired: &expired)
        acct.resume(epoch: epoch, committed: ledger.committed)
        put(acct, budget)
    }

    /// Ledger changes since the last call (quota budgets, when journaling).
    public mutating func takeJournal() -> [LedgerChange] {
        var out: [LedgerChange] = []
        for id in dirty.sorted() where accounts[id]?.journalEntries.isEmpty == false {
            out += accounts[id]!.takeJournal()
            if accounts[id]!.pushes.isEmpty { dirty.remove(id) }
        }
        return out
    }

    /// Takes back a grant the ledger refused or never recorded (the node never saw it).
    /// `exhausted`: the ledger refused it under the cap (another coordinator granted the
    /// rest of the allowance), so nothing is left to grant here either.
    @discardableResult
    public mutating func revoke(_ grant: Grant, node: NodeID, exhausted: Bool = false) -> Bool {
        guard grant.amount > 0, var acct = accounts[grant.budget] else { return false }
        let done = acct.revoke(node: node, requestID: grant.requestID, leaseID: grant.leaseID, amount: grant.amount)
        if exhausted { acct.pool = 0 }
        put(acct, grant.budget)
        return done
    }

    /// Every budget's id, in order.
    public var budgetIDs: [BudgetID] { ordered }

    /// The ids that sort after `after`, in order (a page of the status starts here).
    public func budgetIDs(after: String) -> ArraySlice<BudgetID> {
        ordered[Self.index(after: after, in: ordered)...]
    }

    // MARK: events

    public mutating func acquire(_ req: AcquireRequest, now: Instant) -> AcquireOutcome {
        let req = req.clamped
        guard var acct = accounts[req.budget] else { return .unknownBudget }
        var expired: [(NodeID, Int64)] = []
        acct.advance(to: now, expired: &expired)
        let outcome = acct.acquire(req, now: now, settings: settings)
        acct.rebalance(now: now, settings: settings)
        put(acct, req.budget)
        return outcome
    }

    public mutating func release(_ req: ReleaseRequest, now: Instant) -> ReleaseOutcome {
        let req = req.clamped
        guard var acct = accounts[req.budget] else { return .unknownBudget }
        var expired: [(NodeID, Int64)] = []
        acct.advance(to: now, expired: &expired)
        defer { put(acct, req.budget) }
        guard var entry = acct.nodes[req.node], var lease = entry.lease, lease.id == req.leaseID else {
            if let back = acct.settleLapsed(req) {
                acct.rebalance(now: now, settings: settings)
                return .settledLate(returned: back)
            }
            return .ignoredUnknownLease
        }
        let closing = req.final && acct.book.closesOnFinalRelease
        let claimed = max(0, req.consumed - lease.consumedSeen) + max(0, req.released - lease.releasedSeen)
        // A node can never give back more than it could hold.
        let excess = acct.book.overClaim(released: req.released, claimed: claimed, on: lease)
        let returned = acct.apply(consumed: req.consumed, released: req.released, to: &lease, closing: closing)
        entry.lastSeen = now
        acct.nodes[req.node] = entry
        acct.nodes[req.node]!.lease = lease
        if closing {
            acct.close(req.node)
            acct.rebalance(now: now, settings: settings)
        } else if req.final && acct.book.closesAfterFinal(unreturned: lease.unreturned) {
            acct.close(req.node)
        }
        return excess > 0 ? .clamped(returned: returned, excess: excess) : .applied(returned: returned)
    }

    /// Expires leases, rolls quota windows, ends learning mode and refills buckets.
    public mutating func tick(now: Instant) -> [Expiry] {
        var out: [Expiry] = []
        // Only the budgets with a deadline due (a coordinator may hold millions; visiting every
        // one each tick cost 1.7 s at 10⁶). The expiries are sorted so every process reports
        // the same. Budgets with nothing due are brought up to date by their next event.
        lastTick = max(lastTick, now)
        while let top = deadlines.first, top.key <= now {
            _ = deadlines.pop()
            let id = top.value
            guard scheduled[id] == top.key else { continue } // moved since
            scheduled[id] = nil
            guard var acct = accounts[id] else { continue }
            var expired: [(NodeID, Int64)] = []
            acct.advance(to: now, expired: &expired)
            for (node, amount) in expired { out.append(Expiry(budget: id, node: node, amount: amount)) }
            if !expired.isEmpty { acct.rebalance(now: now, settings: settings) }
            put(acct, id)
        }
        out.sort { ($0.budget, $0.node) < ($1.budget, $1.node) }
        return out
    }

    /// This coordinator became the owner of `budget` (failover or rebalancing) with a new
    /// `epoch`. For one lease TTL it grants nothing beyond what nodes report holding, so
    /// leases granted by the previous owner run out before any new capacity is handed out.
    /// `committed` is what a quota's ledger says is already used or out in this window
    /// (pass the allowance when unknown: nothing is granted until the next window).
    /// `adoptable`: how much of `committed` nodes may still hold (a ledger's unreported
    /// units; everything committed when unknown): reported holdings are adopted out of it.
    /// `fromLedger`: `committed` is a durable quota's ledger row, which caps every grant: what
    /// it leaves free is granted at once, learning or not (`BudgetAccount.startLearning`).
    public mutating func ownershipGained(_ budget: BudgetID, epoch: UInt64, committed: Int64, adoptable: Int64? = nil,
                                         fromLedger: Bool = false, now: Instant) -> Bool {
        guard let old = accounts[budget] else { return false }
        var acct = BudgetAccount(spec: old.spec, now: now)
        acct.nextLeaseID = old.nextLeaseID
        acct.journaling = old.journaling
        acct.journalEntries = old.journalEntries
        acct.startLearning(epoch: epoch, now: now, until: now + settings.leaseTTL, committed: committed,
                           adoptable: adoptable ?? committed, fromLedger: fromLedger)
        put(acct, budget)
        return true
    }

    /// Another coordinator may have granted `budget` until `now` (it saw a view without this
    /// one): grant nothing new for one more lease TTL, keeping the books as they are, so its
    /// leases are reported and adopted or run out first.
    public mutating func extendLearning(_ budget: BudgetID, now: Instant) {
        guard var acct = accounts[budget] else { return }
        var expired: [(NodeID, Int64)] = []
        acct.advance(to: now, expired: &expired)
        acct.extendLearning(now: now, until: now + settings.leaseTTL)
        put(acct, budget)
    }

    /// A node said hello with `incarnation` (0: none given). When it names a new life of a
    /// node this allocator knew, the previous life's entries are retired in every budget
    /// (`BudgetAccount.retire`): the new life's request ids start again from 1 and must not
    /// be dropped as stale. Returns true then. Costs one visit per budget, once per restart.
    public mutating func hello(node: NodeID, incarnation: UInt64) -> Bool {
        guard incarnation != 0, let previous = lives.updateValue(incarnation, forKey: node), previous != incarnation else {
            return false
        }
        for id in Array(accounts.keys) where accounts[id]!.nodes[node] != nil {
            retiredLives += 1
            let name = NodeID("\(node.rawValue)~retired-\(retiredLives)")
            mutate(id) { $0.retire(node, as: name) }
        }
        return true
    }

    /// The life of `node` this allocator last heard of (0: none).
    public func incarnation(of node: NodeID) -> UInt64 { lives[node] ?? 0 }

    /// Offers and recalls produced by the events so far, to send to their nodes (over the
    /// connection each node keeps open). Taking them clears the queue.
    public mutating func takePushes() -> [Push] {
        var out: [Push] = []
        for id in dirty.sorted() where accounts[id]?.pushes.isEmpty == false {
            out += accounts[id]!.pushes
            accounts[id]!.pushes = []
            if accounts[id]!.journalEntries.isEmpty { dirty.remove(id) }
        }
        return out
    }

    // MARK: arithmetic

    /// `a × b / c` without overflow (saturating).
    static func scale(_ a: Int64, _ b: Int64, _ c: Int64) -> Int64 {
        let p = a.multipliedFullWidth(by: b)
        guard a > 0, b > 0, c > 0 else { return 0 }
        if p.high >= c / 2 { return .max / 4 }
        return min(.max / 4, c.dividingFullWidth(p).quotient)
    }

    // MARK: inspection

    /// A budget's books as seen by `allot status` and the tests.
    public struct Status: Hashable, Sendable {
        public var budget: BudgetID
        public var kind: BudgetKind
        public var pool: Int64
        public var outstanding: Int64
        /// Rate budgets: Σ refill rate nodes may be enforcing (units per period).
        public var committedRate: Int64
        public var consumed: Int64
        public var expiredSpent: Int64
        public var holders: Int
        public var epoch: UInt64
        public var learning: Bool
        public var grants: Int64
        /// Σ over nodes holding a lease: the spendable units each reported with its last
        /// acquire plus what that acquire was granted (within its capacity), as of each one's
        /// last exchange; a fleet-wide view of rate and concurrency budgets.
        public var heldAvailable: Int64 = 0
    }

    public func status(_ budget: BudgetID) -> Status? {
        guard var a = accounts[budget] else { return nil }
        // A rate pool refills with time; `tick` no longer visits budgets with nothing due, so
        // show it as of the last tick (what it would hold if asked then).
        if lastTick > .zero { a.refill(to: lastTick) } // (only a rate pool refills)
        return Status(budget: budget, kind: a.spec.kind, pool: a.pool, outstanding: a.outstanding, committedRate: a.committedRate,
                      consumed: a.consumed, expiredSpent: a.expiredSpent, holders: a.holders,
                      epoch: a.epoch, learning: a.isLearning, grants: a.grantsTotal,
                      heldAvailable: a.nodes.values.reduce(0) { sum, e in
                          guard let lease = e.lease else { return sum }
                          // What it reported with its last acquire, plus what that acquire was granted.
                          let held = Checked.sum(max(0, e.available), max(0, e.lastGrant?.amount ?? 0))
                          return Checked.sum(sum, lease.capacity > 0 ? min(held, lease.capacity) : held)
                      })
    }

    /// Σ the demand (units per second) last reported by the nodes active on `budget`: those
    /// holding a lease or heard from within `demandMemory`.
    public func demandPerSecond(_ budget: BudgetID, now: Instant) -> Int64 {
        guard let a = accounts[budget] else { return 0 }
        return a.nodes.values.reduce(0) { sum, e in
            e.lease != nil || now - e.lastSeen < settings.demandMemory ? Checked.sum(sum, e.demandRate) : sum
        }
    }

    /// Nil when every budget's books balance.
    public func checkInvariants() -> String? {
        for a in accounts.values { if let e = a.checkInvariants() { return e } }
        return nil
    }

    /// The next instant at which `tick` may have work (a lease expiry, a window end, the end
    /// of learning mode), from the deadline heap: never later than the real one, earlier when
    /// a deadline moved since it was scheduled (`tick` then finds nothing). Token buckets
    /// refill lazily and need no tick.
    public var nextDeadline: Instant { deadlines.first?.key ?? .distantFuture }
}
