/// The enforcer's side of the lease protocol: what to send, and what to do with answers.
extension Enforcer {
    /// A message from the node to the coordinator.
    public enum Outgoing: Hashable, Sendable {
        case acquire(AcquireRequest)
        case release(ReleaseRequest)
    }

    public enum GrantOutcome: Hashable, Sendable {
        case applied
        /// From an owner epoch older than one already seen for this budget.
        case ignoredStaleEpoch
        /// Not an answer to the acquire in flight (a late duplicate, or already answered).
        case ignoredUnknownRequest
        case unknownBudget
    }

    /// Something the shell must act on.
    public enum Event: Hashable, Sendable {
        /// The lease ended before it was renewed. For a concurrency budget with permits in
        /// use, the shell MUST abort those requests: the coordinator will reuse the permits.
        case leaseExpired(BudgetHandle, permitsInUse: Int64)
    }

    func releaseAll(_ s: inout LocalSlice, spec: BudgetSpec, final: Bool) -> Outgoing {
        s.released += max(0, s.available)
        s.empty()
        let msg = ReleaseRequest(node: settings.node, budget: spec.id, leaseID: s.leaseID,
                                 consumed: s.consumed, released: s.released, final: final)
        if final { expireSlice(&s) }
        return .release(msg)
    }

    func expireSlice(_ s: inout LocalSlice) {
        s.rate = 0
        s.capacity = 0
        s.leaseID = 0
        s.clearBooks()
        s.expiresAt = .zero
    }

    /// Applies the coordinator's answer to an acquire.
    public mutating func receive(_ g: Grant, now: Instant) -> GrantOutcome {
        guard let h = handles[g.budget] else { return .unknownBudget }
        let i = Int(h.index)
        var s = slices[i]
        defer { slices[i] = s }
        if g.requestID == 0 { return receivePush(g, into: &s, now: now) }
        guard let p = s.pending, p.requestID == g.requestID else { return .ignoredUnknownRequest }
        guard g.epoch >= s.epoch else { return .ignoredStaleEpoch }
        if g.epoch > s.epoch {
            // A new owner numbers afresh, and knows nothing of the old one's recalls of
            // permits: it adopts what the node holds (a cap left in force would give it all
            // back while the new owner, learning, grants nothing).
            s.lastSequence = 0
            if s.kind == .permits { s.holdCap = nil }
        }
        s.pending = nil
        longestAnswerWait = max(longestAnswerWait, now - p.firstSentAt)
        s.epoch = g.epoch
        s.retryNotBefore = now + g.retryAfter
        guard g.leaseID != 0 else { return .applied }
        if s.leaseID != 0 && now < s.expiresAt { s.refillBucket(now: now) }
        if s.hasNewerTerms(than: g) {
            // A push overtook this answer and carried newer terms: keep them, take the
            // renewal and the tokens.
            s.expiresAt = p.firstSentAt + g.ttl
            s.deposit(g.amount)
            return .applied
        }
        s.lastSequence = max(s.lastSequence, g.sequence)
        // A new owner adopted the lease this request reported on, but it ended here while the
        // request went unanswered (a coordinator out of reach): take the new lease id with
        // nothing on it, and say so at once, instead of reviving what was reported.
        let staleAdoption = g.adopted && s.leaseID == 0 && p.request.leaseID != 0
        if staleAdoption {
            s.clearBooks()
            s.leaseID = g.leaseID
            s.needsAck = true
            _wantsPoll = true
        } else if g.leaseID != s.leaseID {
            if g.adopted {
                // The new owner took over our holding as of the request: count from there.
                s.consumed -= p.request.consumed
                s.released -= p.request.released
            } else {
                s.clearBooks()
            }
            s.leaseID = g.leaseID
        }
        if s.apply(g, staleAdoption: staleAdoption, now: now) {
            // Lowered terms stay committed at the coordinator until it sees we applied them.
            s.needsAck = true
            _wantsPoll = true
        }
        s.expiresAt = p.firstSentAt + g.ttl
        if s.debt > 0 {
            // Repay what `open` mode admitted without a lease.
            let paid = min(s.debt, max(0, s.spendable))
            s.charge(paid)
            s.consumed += paid
            s.debt -= paid
        }
        return .applied
    }

    /// An offer (raise) or recall (lower) of a bucket's terms, sent unasked.
    private mutating func receivePush(_ g: Grant, into s: inout LocalSlice, now: Instant) -> GrantOutcome {
        guard g.epoch == s.epoch else { return .ignoredStaleEpoch }
        guard g.leaseID == s.leaseID, s.leaseID != 0, now < s.expiresAt,
              g.sequence > s.lastSequence else { return .ignoredUnknownRequest }
        guard s.takesPushes else {
            // A slice's recall (a lowered quota or concurrency limit): hold at most `capacity`
            // units (`LocalSlice.recall`), give the rest back with the next message, and say
            // so at once.
            s.lastSequence = g.sequence
            s.recall(keep: max(0, g.capacity))
            _wantsPoll = true
            return .applied
        }
        s.refillBucket(now: now)
        s.lastSequence = g.sequence
        if g.rate < s.rate || g.capacity < s.capacity {
            // A recall: apply at once (tokens above the new capacity are given up), and
            // acknowledge so the coordinator can hand the difference to others.
            s.needsAck = true
            _wantsPoll = true
        }
        s.rate = g.rate
        s.capacity = g.capacity
        s.giveBackAboveCapacity()
        return .applied
    }

    /// Ends leases whose time is up (the shell calls it with `poll`, at `nextWake`).
    public mutating func tick(now: Instant) -> [Event] {
        var events: [Event] = []
        for i in slices.indices where slices[i].leaseID != 0 && now >= slices[i].expiresAt {
            let inUse = slices[i].permitsInUse
            expireSlice(&slices[i])
            events.append(.leaseExpired(BudgetHandle(index: Int32(i)), permitsInUse: inUse))
        }
        return events
    }

    /// True while some acquire is unanswered.
    public var awaitingGrants: Bool { slices.contains { $0.pending != nil } }

    /// Gives every lease back, for a clean shutdown.
    public mutating func shutdown(now: Instant) -> [Outgoing] {
        var out: [Outgoing] = []
        for i in slices.indices where slices[i].leaseID != 0 && now < slices[i].expiresAt {
            out.append(releaseAll(&slices[i], spec: specs[i], final: true))
        }
        return out
    }

    // MARK: inspection

    /// A slice as seen by tests and status pages.
    public struct SliceStatus: Hashable, Sendable {
        public var leaseID: LeaseID
        public var available: Int64
        public var reserved: Int64
        public var consumed: Int64
        public var released: Int64
        public var debt: Int64
        public var expiresAt: Instant
        public var awaitingGrant: Bool
        public var rate: Int64
        public var capacity: Int64
        /// What a request may take now (rate leases: the better of the two books).
        public var spendable: Int64
        /// A concurrency slice the coordinator told to ask again at this instant (soon when it
        /// recalls other nodes' free permits for it); nil for other kinds.
        public var permitsRetryAt: Instant?

        /// Whether a request this slice refused at `now` may wait for its answer until
        /// `deadline`: an ask is in flight, the node holds no lease yet, or free permits are
        /// being recalled for it (the coordinator named a retry before the deadline).
        public func worthWaiting(now: Instant, deadline: Instant) -> Bool {
            let recalling = permitsRetryAt.map { now < $0 && $0 <= deadline } ?? false
            return awaitingGrant || leaseID == 0 || recalling
        }
    }

    public func status(_ h: BudgetHandle) -> SliceStatus {
        let s = slices[Int(h.index)]
        return SliceStatus(leaseID: s.leaseID, available: s.available, reserved: s.reserved,
                           consumed: s.consumed, released: s.released, debt: s.debt,
                           expiresAt: s.expiresAt, awaitingGrant: s.pending != nil, rate: s.rate, capacity: s.capacity,
                           spendable: max(0, s.spendable), permitsRetryAt: s.kind == .permits ? s.retryNotBefore : nil)
    }
}

extension Enforcer {
    /// Nil when every slice's books balance (nothing negative, nothing spent beyond grants).
    public func checkInvariants() -> String? {
        for (i, s) in slices.enumerated() {
            if let v = s.bookViolation() { return "\(settings.node) \(specs[i].id): \(v)" }
            if s.reserved < 0 { return "\(settings.node) \(specs[i].id): reserved \(s.reserved) < 0" }
            if s.leaseID == 0 && (s.available != 0 || s.noRefundLevel != 0 || s.reserved != 0) {
                return "\(settings.node) \(specs[i].id): holds \(s.available)+\(s.reserved) without a lease"
            }
        }
        return nil
    }
}

extension Enforcer {
    /// The acquire in flight for `budget` was refused without an answer to wait for (the
    /// coordinator is not its owner, or cannot grant right now): send it again (same request
    /// id) after `after` instead of after the usual retry timeout.
    public mutating func retrySoon(_ budget: BudgetID, after: Duration, now: Instant) {
        guard let h = handles[budget] else { return }
        resend(Int(h.index), at: now + after)
    }

    /// The coordinator answered acquire `requestID` with "unknown budget" (deleted from the
    /// configuration, refused by its tier-budget caps, or not in the version it holds yet):
    /// that acquire is dropped, and while requests still come (they follow the budget's fail
    /// mode) the node asks again once per refresh interval, not at every retry timeout. The
    /// slice's books stay as they are: a lease it holds runs out at its time (permits in use
    /// included, as any lease), or is adopted if the budget comes back meanwhile.
    public mutating func unknownBudget(_ budget: BudgetID, requestID: UInt64, now: Instant) {
        guard let h = handles[budget], slices[Int(h.index)].pending?.requestID == requestID else { return }
        let i = Int(h.index)
        slices[i].pending = nil
        slices[i].retryNotBefore = now + settings.refreshInterval
    }

    /// These budgets have a new owner: each lease held is reported to it at the next poll
    /// (learning mode adopts it), and each acquire in flight goes to it again.
    public mutating func ownersChanged(_ budgets: Set<BudgetID>, now: Instant) {
        for b in budgets {
            guard let h = handles[b] else { continue }
            let i = Int(h.index)
            if slices[i].pending != nil {
                resend(i, at: now)
            } else if slices[i].leaseID != 0 {
                slices[i].reportOwner = true
                _wantsPoll = true
            }
        }
    }

    /// Every acquire in flight goes out again at the next poll (same request ids): the
    /// coordinator it went to is gone, or the owners changed.
    public mutating func retryAllPending(now: Instant) {
        for i in slices.indices { resend(i, at: now) }
    }

    /// The pending acquire of slice `i`, if any, leaves again at `at` (same request id).
    private mutating func resend(_ i: Int, at: Instant) {
        guard slices[i].pending != nil else { return }
        slices[i].pending!.lastSentAt = at - settings.retryTimeout
        _wantsPoll = true
    }
}
