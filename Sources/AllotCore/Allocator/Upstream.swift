/// The hierarchy (step 5): a region's coordinator owns a *global* budget only as a node of the
/// global cluster. What it may sub-lease to its own nodes is what its upstream lease holds:
/// units are `deposit`ed as upstream grants arrive, free units are `withdraw`n to give back
/// upstream, and every sub-lease expires no later than the upstream lease (TTLs nest). When
/// the upstream lease runs out unrenewed (the region is cut off), its free units are lost
/// (the upstream counts them as spent) and nothing more is granted until a new deposit.
///
/// Invariant (checked by `checkInvariants`): for a quota, every unit deposited is free, out
/// on a sub-lease, consumed, expired, withdrawn or lost — exactly. For concurrency, permits
/// free and out never exceed those held upstream.
///
/// Rate budgets are not sub-leased yet (a region would need its upstream rate and burst as
/// its own limit, lowered when the upstream recalls): `addUpstreamBacked` refuses them.
struct Upstream: Hashable, Sendable {
    var deposited: Int64 = 0
    var withdrawn: Int64 = 0
    var lost: Int64 = 0
    /// When the upstream lease ends (zero: none held).
    var expiresAt: Instant = .zero
}

extension Allocator {
    /// What an upstream-backed budget holds, for the shell that keeps it fed.
    public struct UpstreamStatus: Hashable, Sendable {
        public var deposited: Int64
        public var withdrawn: Int64
        public var lost: Int64
        public var free: Int64
        public var subLeased: Int64
        public var expiresAt: Instant
    }

    /// Adds a quota or concurrency budget whose units come from an upstream lease (nothing
    /// to grant until the first `deposit`), with owner epoch `epoch` (default: the allocator's).
    public mutating func addUpstreamBacked(_ spec: BudgetSpec, epoch: UInt64? = nil, now: Instant) throws(AllotError) {
        guard !spec.kind.isRate else {
            throw AllotError(.invalidSettings, "\(spec.id): rate budgets cannot be sub-leased from an upstream yet; make it regional")
        }
        try add(spec, now: now)
        mutate(spec.id) { a in
            a.upstream = Upstream()
            a.pool = 0
            if let epoch { a.epoch = epoch }
        }
    }

    public func isUpstreamBacked(_ budget: BudgetID) -> Bool { account(budget)?.upstream != nil }

    /// Units (or permits) granted by the upstream, usable until `expiresAt` (a renewal moves it).
    public mutating func deposit(_ budget: BudgetID, amount: Int64, expiresAt: Instant, now: Instant) {
        mutate(budget) { a in
            guard a.upstream != nil else { return }
            var expired: [(NodeID, Int64)] = []
            a.advance(to: now, expired: &expired)
            a.pool += max(0, amount)
            a.upstream!.deposited += max(0, amount)
            a.upstream!.expiresAt = expiresAt
        }
    }

    /// Takes up to `max` free units out, to give back upstream; returns how many.
    public mutating func withdraw(_ budget: BudgetID, max wanted: Int64, now: Instant) -> Int64 {
        var taken: Int64 = 0
        mutate(budget) { a in
            guard a.upstream != nil else { return }
            var expired: [(NodeID, Int64)] = []
            a.advance(to: now, expired: &expired)
            taken = min(max(0, wanted), a.pool)
            a.pool -= taken
            a.upstream!.withdrawn += taken
        }
        return taken
    }

    /// Brings `budget`'s books up to `now` (expiries, a lapsed upstream lease), so a view
    /// taken next is current.
    public mutating func advance(_ budget: BudgetID, now: Instant) {
        mutate(budget) { a in
            var expired: [(NodeID, Int64)] = []
            a.advance(to: now, expired: &expired)
        }
    }

    /// What `UpstreamClient` needs to know about an upstream-backed budget: its books, and
    /// the demand its nodes reported (or `demand`, when the caller measures it). Call
    /// `advance` first: the view is the books as they stand.
    public func regionView(_ budget: BudgetID, now: Instant, demand: Int64? = nil) -> UpstreamClient.RegionView? {
        guard let u = upstreamStatus(budget), let st = status(budget) else { return nil }
        return UpstreamClient.RegionView(free: u.free, subLeased: u.subLeased, spent: st.consumed + st.expiredSpent + u.lost,
                                         withdrawn: u.withdrawn, deposited: u.deposited,
                                         demandPerSecond: demand ?? demandPerSecond(budget, now: now), lost: u.lost)
    }

    public func upstreamStatus(_ budget: BudgetID) -> UpstreamStatus? {
        guard let a = account(budget), let u = a.upstream else { return nil }
        return UpstreamStatus(deposited: u.deposited, withdrawn: u.withdrawn, lost: u.lost, free: a.pool,
                              subLeased: a.outstanding, expiresAt: u.expiresAt)
    }
}
