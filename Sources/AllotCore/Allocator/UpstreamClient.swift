/// The region's side of its global budgets (step 5): towards the global owner, a region's
/// coordinator is one node, speaking the ordinary lease protocol on behalf of its whole region.
/// A pure state machine: `poll` looks at what the regional allocator holds for each budget
/// (`RegionView`) and says what to send upstream and what to take out of the regional pool;
/// `receive` turns the global owner's grants into deposits.
///
/// Counters under one upstream lease are cumulative from when that lease began: consumed =
/// what regional nodes consumed plus what expired on them, released = what the region gave
/// back; holding = deposited − consumed − released. Wants are the regional demand for one
/// (global) refresh interval on top of what is sub-leased.
public struct UpstreamClient: Sendable {
    public struct Settings: Hashable, Sendable {
        public var node: NodeID
        /// The global level refreshes more slowly than the leaves.
        public var refreshInterval: Duration = .seconds(5)
        public var retryTimeout: Duration = .seconds(1)
        public var renewMargin: Duration = .seconds(10)
        public init(node: NodeID) { self.node = node }
    }

    /// The regional allocator's books for one upstream-backed budget, plus the regional demand.
    public struct RegionView: Hashable, Sendable {
        public var free: Int64
        public var subLeased: Int64
        /// Cumulative: consumed + expired on regional leases, and given back upstream.
        public var spent: Int64
        public var withdrawn: Int64
        public var deposited: Int64
        public var demandPerSecond: Int64
        /// Of `spent`, the free units lost when an upstream lease ran out (never used).
        public var lost: Int64
        public init(free: Int64, subLeased: Int64, spent: Int64, withdrawn: Int64, deposited: Int64, demandPerSecond: Int64,
                    lost: Int64 = 0) {
            self.free = free
            self.subLeased = subLeased
            self.spent = spent
            self.withdrawn = withdrawn
            self.deposited = deposited
            self.demandPerSecond = demandPerSecond
            self.lost = lost
        }
    }

    public enum Action: Hashable, Sendable {
        /// Take this many free units out of the regional pool (before sending the release).
        case withdraw(BudgetID, Int64)
        case send(Enforcer.Outgoing)
    }

    struct Slot: Sendable {
        var leaseID: LeaseID = 0
        var epoch: UInt64 = 0
        var expiresAt: Instant = .zero
        var pending: (request: AcquireRequest, firstSentAt: Instant, lastSentAt: Instant)?
        /// Region totals when the current upstream lease began.
        var baseSpent: Int64 = 0
        var baseWithdrawn: Int64 = 0
        var baseDeposited: Int64 = 0
        var baseLost: Int64 = 0
        /// The global owner moved: report to the new one at the next poll.
        var reportOwner = false
        /// An upstream lease that ran out unrenewed (a cut): its late settlement, what the
        /// region really used under it. Sent every refresh interval while the link may still
        /// be cut, and once more right after the first grant that shows it works (`heard`).
        var settlement: (report: ReleaseRequest, lastSentAt: Instant, tries: Int, heard: Bool)?
    }

    /// Late settlements are re-sent at most this many times.
    static let settlementTries = 30

    public let settings: Settings
    var slots: [BudgetID: Slot] = [:]
    var nextRequestID: UInt64 = 1

    public init(settings: Settings) { self.settings = settings }

    public mutating func register(_ budget: BudgetID) {
        if slots[budget] == nil { slots[budget] = Slot() }
    }

    public var budgets: [BudgetID] { slots.keys.sorted() }
    public func contains(_ budget: BudgetID) -> Bool { slots[budget] != nil }

    /// This region no longer serves `budget` here (its regional owner moved, or shutdown):
    /// gives the free units back upstream. Units on sub-leases stay out; the upstream counts
    /// them as spent when its lease runs out. `view`: the books as they stand; the caller
    /// takes the free units out of its pool when the answer is not nil.
    public mutating func forget(_ budget: BudgetID, view: RegionView?) -> Enforcer.Outgoing? {
        guard let s = slots.removeValue(forKey: budget), s.leaseID != 0, let v = view else { return nil }
        return .release(ReleaseRequest(node: settings.node, budget: budget, leaseID: s.leaseID,
                                       consumed: v.spent - s.baseSpent, released: v.withdrawn + v.free - s.baseWithdrawn,
                                       final: false))
    }

    /// Re-sends the request pending for `budget` after `after` (a redirect, or "unavailable").
    public mutating func retrySoon(_ budget: BudgetID, after: Duration, now: Instant) {
        guard var p = slots[budget]?.pending else { return }
        p.lastSentAt = now + after - settings.retryTimeout
        slots[budget]!.pending = p
    }

    /// Re-sends every pending request at the next poll (a connection was lost).
    public mutating func retryAllPending(now: Instant) {
        for id in slots.keys where slots[id]!.pending != nil { retrySoon(id, after: .zero, now: now) }
    }

    /// The global owner of these budgets changed: report each lease to the new owner at the
    /// next poll (it adopts what the region holds), or re-send what was pending.
    public mutating func ownersChanged(_ moved: Set<BudgetID>, now: Instant) {
        for id in moved where slots[id] != nil {
            if slots[id]!.pending != nil { retrySoon(id, after: .zero, now: now) } else { slots[id]!.reportOwner = true }
        }
    }

    public var awaitingGrants: Bool { slots.values.contains { $0.pending != nil } }

    /// When the upstream lease of `budget` ends (zero: none).
    public func expiry(_ budget: BudgetID) -> Instant { slots[budget]?.expiresAt ?? .zero }

    public mutating func poll(now: Instant, views: [BudgetID: RegionView]) -> [Action] {
        var out: [Action] = []
        for id in slots.keys.sorted() {
            guard var s = slots[id], let v = views[id] else { continue }
            defer { slots[id] = s }
            if s.leaseID != 0 && now >= s.expiresAt {
                // Ran out unrenewed: what the region used under it is final from here (every
                // sub-lease ended with it, nothing is deposited until a new grant). The free
                // units lost with it were never used: settle late, so that the global owner
                // stops counting them as spent and others can have them.
                let used = (v.spent - v.lost) - (s.baseSpent - s.baseLost)
                let report = ReleaseRequest(node: settings.node, budget: id, leaseID: s.leaseID, consumed: used,
                                            released: v.withdrawn - s.baseWithdrawn, final: true)
                s.settlement = (report, .zero, 0, false)
                s.leaseID = 0
            }
            if let st = s.settlement {
                if st.heard {
                    // The global cluster answered since: the link works, send it once more and
                    // be done (the global owner accepts one settlement per lapsed lease).
                    out.append(.send(.release(st.report)))
                    s.settlement = nil
                } else if now - st.lastSentAt >= settings.refreshInterval {
                    out.append(.send(.release(st.report)))
                    s.settlement = st.tries + 1 >= Self.settlementTries ? nil : (st.report, now, st.tries + 1, false)
                }
            }
            if let p = s.pending {
                if now - p.firstSentAt < settings.refreshInterval {
                    if now - p.lastSentAt >= settings.retryTimeout {
                        s.pending!.lastSentAt = now
                        out.append(.send(.acquire(p.request)))
                    }
                    continue
                }
                // Unanswered for a whole refresh interval (the region is cut off): a grant for
                // it, counted from when it was first sent, would arrive nearly expired. Ask
                // afresh; anything granted to the old request runs out upstream as spent.
                s.pending = nil
            }
            let perInterval = v.demandPerSecond * settings.refreshInterval.nanoseconds / 1_000_000_000
            let want = perInterval + v.subLeased
            let low = v.demandPerSecond > 0 && v.free <= perInterval / 2
            let renew = s.leaseID != 0 && s.expiresAt - now <= settings.renewMargin && (v.subLeased > 0 || v.demandPerSecond > 0)
                || s.leaseID != 0 && s.reportOwner
            s.reportOwner = false
            if low || renew || (s.leaseID == 0 && v.demandPerSecond > 0) {
                let req = request(id, s, v, want: want)
                nextRequestID += 1
                s.pending = (req, now, now)
                out.append(.send(.acquire(req)))
                continue
            }
            // Far more free than the region needs: give the surplus back.
            if s.leaseID != 0 && v.free > 2 * perInterval + 1 {
                let back = v.free - perInterval
                out.append(.withdraw(id, back))
                var after = v
                after.free -= back
                after.withdrawn += back
                out.append(.send(.release(ReleaseRequest(node: settings.node, budget: id, leaseID: s.leaseID,
                                                         consumed: after.spent - s.baseSpent,
                                                         released: after.withdrawn - s.baseWithdrawn, final: false))))
            }
        }
        return out
    }

    private func request(_ id: BudgetID, _ s: Slot, _ v: RegionView, want: Int64) -> AcquireRequest {
        let consumed = s.leaseID == 0 ? 0 : v.spent - s.baseSpent
        let released = s.leaseID == 0 ? 0 : v.withdrawn - s.baseWithdrawn
        let holding = s.leaseID == 0 ? 0 : v.deposited - s.baseDeposited - consumed - released
        return AcquireRequest(requestID: nextRequestID, node: settings.node, budget: id, want: want,
                              demandRate: v.demandPerSecond, leaseID: s.leaseID, epoch: s.epoch, consumed: consumed,
                              released: released, holding: holding, available: v.free)
    }

    /// A grant from the global owner: the units to deposit in the regional pool and until when
    /// they (and every sub-lease made of them) may be used. Nil when it answers nothing pending
    /// or comes from an older epoch.
    public mutating func receive(_ g: Grant, now: Instant, view: RegionView) -> (amount: Int64, expiresAt: Instant)? {
        guard var s = slots[g.budget], let p = s.pending, p.request.requestID == g.requestID, g.epoch >= s.epoch else { return nil }
        s.pending = nil
        s.epoch = g.epoch
        s.settlement?.heard = true
        if g.leaseID != s.leaseID && g.leaseID != 0 {
            // A new upstream lease: count from here.
            s.leaseID = g.leaseID
            s.baseSpent = view.spent
            s.baseWithdrawn = view.withdrawn
            s.baseDeposited = view.deposited
            s.baseLost = view.lost
        }
        // The node counts the TTL from when it sent the request, so its copy ends first.
        s.expiresAt = p.firstSentAt + g.ttl
        slots[g.budget] = s
        return (g.amount, s.expiresAt)
    }
}
