/// The node-side lease engine that a gateway embeds: spends slices locally and decides when
/// to ask for more and when to give back.
///
/// A pure state machine like the `Allocator`: every call carries `now`; outgoing messages
/// come from `poll(now:)`; nothing here does I/O or blocks.
///
/// Contract:
/// - `reserve`/`admit`/`settle` are O(budgets in the set), allocation-free, and never wait on
///   the network (invariant 2);
/// - admission is all or nothing across the set: a denial takes nothing from any budget;
/// - with a valid lease a node never spends more than it was granted, and never after its
///   copy of the lease ended (which is always before the coordinator's copy ends);
/// - without a lease each budget follows its `FailMode`.
public struct Enforcer: Sendable {
    public let settings: EnforcerSettings
    @usableFromInline var slices: [LocalSlice] = []
    var specs: [BudgetSpec] = []
    var handles: [BudgetID: BudgetHandle] = [:]
    /// The coordinator drops requests whose id is not above the last it saw from this node's
    /// current life (retries are idempotent that way); a restarted node starts again at 1 and
    /// says so with a new incarnation in its hello (`LeaseClient.incarnation`).
    var nextRequestID: UInt64 = 1
    /// The longest an acquire waited for its answer (re-sends included): after a coordinator
    /// fails, how long this node's budgets went unserved before their new owner answered.
    public var longestAnswerWait: Duration = .zero
    /// Set when some slice wants a refill; the shell SHOULD call `poll` soon after.
    @usableFromInline var _wantsPoll = false
    public var wantsPoll: Bool { _wantsPoll }
    /// Set by `nextWake` when it answered a later deadline (nothing to watch): the next
    /// reserve, admit or settle sets `wantsPoll`, so the shell polls again within its interval.
    @usableFromInline var _asleep = false
    /// Every registered budget.
    public var budgetIDs: [BudgetID] { specs.map(\.id) }
    /// Budgets registered (one slice each).
    public var budgetCount: Int { specs.count }

    public init(settings: EnforcerSettings) throws(AllotError) {
        try settings.validate()
        self.settings = settings
    }

    /// Registers a budget (idempotent per id) and returns its handle for the hot path.
    @discardableResult
    public mutating func register(_ spec: BudgetSpec) -> BudgetHandle {
        if let h = handles[spec.id] { return h }
        let h = BudgetHandle(index: Int32(slices.count))
        slices.append(LocalSlice(spec: spec))
        specs.append(spec)
        handles[spec.id] = h
        return h
    }

    public func handle(for id: BudgetID) -> BudgetHandle? { handles[id] }
    public func spec(_ h: BudgetHandle) -> BudgetSpec { specs[Int(h.index)] }

    // MARK: hot path

    /// Takes `cost` from every budget in `set`, or from none. Use before a request whose cost
    /// is an upper bound (then `settle`), or whose requests hold a concurrency permit.
    @inlinable
    public mutating func reserve(_ cost: Cost, on set: BudgetSet, now: Instant) -> Decision {
        take(cost, on: set, now: now, hold: true)
    }

    /// Checks and takes, then either holds the units until `settle` (`hold`) or spends them
    /// at once (`admit`: the same books as reserve + settle, in one pass).
    @inlinable
    mutating func take(_ cost: Cost, on set: BudgetSet, now: Instant, hold: Bool) -> Decision {
        if _asleep { (_asleep, _wantsPoll) = (false, true) }
        let ttl = settings.leaseTTL.nanoseconds
        var wants = false
        // Through the buffer: every access below is in place (through the array, the
        // optimizer copied whole slices and checked uniqueness at each one).
        let d = slices.withUnsafeMutableBufferPointer { slices in
            Self.take(cost, on: set, now: now, hold: hold, slices: slices, ttl: ttl, wants: &wants)
        }
        if wants { _wantsPoll = true }
        return d
    }

    @inlinable
    static func take(_ cost: Cost, on set: BudgetSet, now: Instant, hold: Bool, slices: UnsafeMutableBufferPointer<LocalSlice>,
                     ttl: Int64, wants: inout Bool) -> Decision {
        var r = Reservation(budgets: set)
        var denied = -1
        var waitOn = -1 // the one short budget (with a lease) this request waits for
        for i in 0..<set.count {
            let idx = Int(set.handles[i])
            // Checked once here, for the loops below too (an unsafe buffer has no bounds check);
            // a handle from another enforcer that happens to be in range is not caught, as before.
            precondition(UInt(bitPattern: idx) < UInt(slices.count), "a budget handle out of range")
            let amount = slices[idx].kind.amount(for: cost, unit: slices[idx].unit)
            r.amounts[i] = amount
            // Nothing to take: no lease needed, never refused (a model listing on a token budget).
            if amount == 0 { continue }
            slices[idx].lastCost = amount
            if now < slices[idx].expiresAt {
                slices[idx].refillBucket(now: now)
                guard slices[idx].spendable < amount else { continue }
                if denied < 0 { denied = i }
                if waitOn < 0 || slices[idx].kind.waitRank(i) < slices[Int(set.handles[waitOn])].kind.waitRank(waitOn) { waitOn = i }
            } else {
                var short = false
                switch slices[idx].mode {
                case .closed: short = true
                case .open: break
                case .staticAllowance:
                    let period = now.nanoseconds / ttl
                    let used = slices[idx].staticPeriod == period ? slices[idx].staticUsed : 0
                    short = used + amount > slices[idx].staticAllowance
                }
                // No lease: ask for one at once, whatever else refuses the request (a cold
                // node acquires all its budgets in parallel).
                slices[idx].needsRefill = true
                if short { slices[idx].refused = true } // open and static modes admit
                wants = true
                if short && denied < 0 { denied = i }
            }
        }
        if denied >= 0 {
            // Refused: demand on every budget of the set (what the node would spend once
            // admitted), but the node asks only for the one budget (holding a lease) the
            // request waits for; the set's other budgets are held back: they ask for nothing
            // and give back what they hold while nothing is admitted (`poll`). Asking for all
            // of them made a hold-and-wait cycle between nodes: one node waiting for
            // tokens/min kept the monthly quota that the others, waiting for the monthly quota
            // while holding tokens/min, needed (FleetCapTests, docs/design.md "Requests
            // charged to several budgets"). One fixed order (`LocalSlice.Kind.waitRank`) breaks it.
            // Only budgets after the awaited one in that order are held back: those before it
            // are kept (ordered acquisition: two slices that both run short are taken one
            // after the other, never given back in turn).
            let waitRank = waitOn < 0 ? 0 : slices[Int(set.handles[waitOn])].kind.waitRank(waitOn)
            for i in 0..<set.count where r.amounts[i] > 0 {
                let idx = Int(set.handles[i])
                slices[idx].demand.record(r.amounts[i], now: now)
                if i == waitOn {
                    slices[idx].heldBackAt = LocalSlice.notHeldBack
                    slices[idx].needsRefill = true
                    slices[idx].refused = true
                    wants = true
                } else if waitOn >= 0 && now < slices[idx].expiresAt && slices[idx].kind.waitRank(i) > waitRank {
                    slices[idx].heldBackAt = now
                }
            }
            // Named: the budget the request waits for (the one being asked for).
            return .denied(by: set[waitOn >= 0 ? waitOn : denied])
        }
        for i in 0..<set.count {
            let idx = Int(set.handles[i])
            let amount = r.amounts[i]
            if amount == 0 {
                r.fromFailMode[i] = true // nothing taken from any lease: settles to nothing
                continue
            }
            let keeps = slices[idx].kind.keeps(hold: hold)
            slices[idx].demand.record(amount, now: now)
            slices[idx].admitted.record(amount, now: now)
            slices[idx].heldBackAt = LocalSlice.notHeldBack
            if now < slices[idx].expiresAt {
                r.leases[i] = slices[idx].leaseID
                // The watermark (what the admitted rate spends in `prefetchLead`) is recomputed
                // in `poll`, off the hot path.
                if slices[idx].spendable &- amount <= slices[idx].watermark &+ amount {
                    slices[idx].needsRefill = true
                    wants = true
                }
                if keeps { slices[idx].take(amount, hold: hold) }
            } else {
                r.fromFailMode[i] = true
                switch slices[idx].mode {
                case .closed: preconditionFailure("closed budget admitted without a lease")
                case .open: if keeps { slices[idx].debt = Checked.add(slices[idx].debt, amount) }
                case .staticAllowance:
                    let period = now.nanoseconds / ttl
                    if slices[idx].staticPeriod != period {
                        slices[idx].staticPeriod = period
                        slices[idx].staticUsed = 0
                    }
                    if keeps { slices[idx].staticUsed += amount }
                }
            }
        }
        return .admitted(r)
    }

    /// Settles a reservation to what the request actually cost; the difference goes back to
    /// the slice it came from (or nowhere, if that lease has ended: the coordinator counted
    /// it as spent). Concurrency permits are returned.
    @inlinable
    public mutating func settle(_ r: Reservation, actual: Cost, now: Instant) {
        if _asleep { (_asleep, _wantsPoll) = (false, true) }
        for i in 0..<r.budgets.count {
            let idx = Int(r.budgets.handles[i])
            let reserved = r.amounts[i]
            let spent = slices[idx].kind.spent(actual, unit: slices[idx].unit)
            if reserved == 0 {
                // Nothing was taken (a zero charge): whatever the request cost after all is
                // owed, and asked for, so the next grant repays it and the ledger counts it.
                if spent > 0 {
                    slices[idx].debt = Checked.sum(slices[idx].debt, spent)
                    slices[idx].demand.record(spent, now: now)
                    slices[idx].needsRefill = true
                    _wantsPoll = true
                }
                continue
            }
            if r.fromFailMode[i] {
                switch slices[idx].mode {
                case .open: slices[idx].debt = max(0, Checked.sum(slices[idx].debt, spent, -reserved))
                case .staticAllowance: slices[idx].staticUsed = max(0, Checked.sum(slices[idx].staticUsed, spent, -reserved))
                case .closed: break
                }
                continue
            }
            guard r.leases[i] == slices[idx].leaseID else { continue }
            slices[idx].reserved -= reserved
            if spent <= reserved {
                // What comes back repays a debt first: a node that owes admits nothing more.
                let repaid = min(slices[idx].debt, reserved - spent)
                slices[idx].debt -= repaid
                slices[idx].consumed += spent + repaid
                slices[idx].available += reserved - spent - repaid
                slices[idx].fitToCapacity()
                if slices[idx].holdCap != nil {
                    slices[idx].applyHoldCap()
                    _wantsPoll = true
                }
            } else {
                // The upstream used more than the bound: pay from the slice, owe the rest
                // (reported as consumed when a later grant repays it, never before: the
                // coordinator would count it against a lease that never held it).
                let extra = Checked.sum(spent, -reserved)
                let paid = min(extra, max(0, slices[idx].spendable))
                slices[idx].charge(paid)
                slices[idx].consumed += reserved + paid
                slices[idx].debt = Checked.sum(slices[idx].debt, extra - paid)
            }
        }
    }

    /// Reserve and settle in one step, for a request whose cost is known up front.
    /// (On a concurrency budget this checks a permit is free and returns it at once.)
    @inlinable
    public mutating func admit(_ cost: Cost, on set: BudgetSet, now: Instant) -> Decision {
        take(cost, on: set, now: now, hold: false)
    }
}
