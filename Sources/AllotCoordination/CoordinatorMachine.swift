import AllotCluster
import AllotCore

/// Everything a coordinator decides, as a pure state machine: events in (with the time),
/// answers and actions out. No I/O, no clock, no locks: `CoordinatorCore` is the shell that
/// holds it under a mutex, translates frames, writes the ledger and sends what it says; the
/// tests and the simulator drive it in virtual time.
///
/// What lives here: the allocator and its budgets; ownership in a cluster (the view, epochs,
/// quorum, learning after a gain); tier budgets made on first use and retired when idle; the
/// durable-grant write-ahead (grants held until the ledger has their record); node restarts;
/// a region's upstream side towards the global cluster.
public struct CoordinatorMachine: Sendable {
    public struct Settings: Sendable {
        public var allocator = AllocatorSettings()
        /// Tiers whose templates become budgets the first time a node asks for
        /// `tier.template/key`; at most `tierLimits` of them (in all, per tier, per node).
        /// One unused with no holders for a lease TTL (a rate budget: until its bucket is full
        /// again; a quota without a ledger: until its window has nothing consumed) is retired.
        public var tiers: [Tier] = []
        public var tierLimits = TierBudgets.Limits()
        /// Envoy rate-limit rules (`allot ratelimit-service`): budgets `envoy:…` made on first
        /// use as tier budgets are, counted under the same limits.
        public var descriptors = DescriptorRules()
        /// Cluster mode: this coordinator as a member. Nil: standalone, owns every budget.
        public var member: MemberID?
        /// Cluster mode: the fewest live members (this one included) under which it still
        /// grants. Below it (the minority side of a partition) it drops every budget and
        /// answers "unavailable", so nodes there spend what they hold and then follow their
        /// fail mode. 0 or 1: always grant.
        public var quorum = 0
        /// A region: its `reach: global` budgets are leased from the global cluster (see
        /// `UpstreamClient`). Nil: this cluster is the root, every budget local.
        public var upstream: UpstreamClient.Settings?
        /// Quota budgets are durable: their grants wait for the ledger, their rows are loaded.
        public var durable = false
        /// Percents of budgets' limits to report when crossed, once per window.
        public var softLimits = SoftLimitTable()
        public init() {}
    }

    /// The answer to one acquire.
    public enum Answer: Sendable, Hashable {
        /// Granted (or a retry answered again), including grants of nothing.
        case grant(Grant)
        /// A held grant whose ledger write failed: taken back, ask again after the delay.
        case retryLater(Grant, after: Duration)
        /// Another member owns the budget.
        case redirect(requestID: UInt64, budget: BudgetID, owner: MemberID)
        /// Not served now (no quorum, the budget's ledger row is loading): ask again after.
        case unavailable(requestID: UInt64, budget: BudgetID, retryAfter: Duration)
        case unknownBudget(requestID: UInt64, budget: BudgetID)
        case stale(requestID: UInt64, budget: BudgetID)
    }

    /// What the shell does for the machine.
    public enum Action: Sendable {
        /// Offers and recalls to push to nodes, in the order the allocator made them.
        case push([Push])
        /// Answers to `node`'s earlier acquires (held grants, now recorded or taken back).
        case send(NodeID, [Answer])
        /// Hand these ledger changes to the ledger; report with `recorded`.
        case writeLedger([LedgerChange], held: [DurableGrants.Held])
        /// Read `budget`'s ledger row for the window `loadWindow` names; report with `loaded`.
        case loadLedger(BudgetID)
        /// Tell every connected node the cluster's members.
        case members([MemberID], version: UInt64)
        /// Soft limits crossed (log them; the counts are in `softLimits`).
        case softLimitCrossed([SoftLimits.Crossing])
    }

    /// Tiers and soft limits change with `reconfigure`; the rest is fixed at start.
    public internal(set) var settings: Settings
    public internal(set) var allocator: Allocator
    public var counters = CoordinatorCounters()
    /// Cluster mode: who owns what, the quorum, recent views (nil when standalone).
    public internal(set) var view: OwnershipView?
    /// Quota budgets whose ledger row is being read: nothing granted until it arrives.
    public internal(set) var loading: Set<BudgetID> = []
    public internal(set) var auditHeads: [String: AuditHead] = [:]
    var catalog: TierCatalog
    var configured: [BudgetID: BudgetSpec]
    var tierBudgets: TierBudgets
    var lastRetirement: Instant = .zero
    var lastEpoch: UInt64 = 0
    var durableGrants = DurableGrants()
    /// Budgets a new configuration removed, until one lease TTL after: made again meanwhile
    /// (a template restored), they learn first: nodes may still hold the old one's leases.
    var removed: [BudgetID: Instant] = [:]
    /// Soft limits: what each watched budget crossed in its window, and the counts.
    public internal(set) var softLimits: SoftLimits
    /// A region: the global budgets' side towards the global cluster, and messages for it
    /// made outside a poll (releases of budgets this coordinator stopped owning).
    var upstream: UpstreamClient?
    var upstreamOutbox: [Enforcer.Outgoing] = []

    public init(settings: Settings, budgets: [BudgetSpec], now: Instant) throws(AllotError) {
        self.settings = settings
        softLimits = SoftLimits(settings.softLimits)
        catalog = try TierCatalog(settings.tiers)
        allocator = try Allocator(settings: settings.allocator, budgets: [], now: now)
        allocator.journaling = settings.durable
        allocator.epoch = UInt64(max(1, now.nanoseconds / 1_000))
        tierBudgets = TierBudgets(limits: settings.tierLimits)
        upstream = settings.upstream.map { UpstreamClient(settings: $0) }
        var configured: [BudgetID: BudgetSpec] = [:]
        for b in budgets {
            if configured[b.id] != nil { throw AllotError(.duplicateBudget, "budget \(b.id) is already configured") }
            configured[b.id] = b
        }
        self.configured = configured
        for b in budgets { try add(b, epoch: nil, now: now) }
        lastEpoch = allocator.epoch
        if settings.durable { loading = Set(budgets.filter { $0.kind.isQuota && !allocator.isUpstreamBacked($0.id) }.map(\.id)) }
        if let me = settings.member {
            view = OwnershipView(me: me, quorum: settings.quorum, leaseTTL: settings.allocator.leaseTTL)
        }
    }

    /// The durable budgets to resume from the ledger before serving (standalone; in a cluster,
    /// `viewChanged` asks for them).
    public func start() -> [Action] {
        loading.filter { allocator.contains($0) }.sorted().map { .loadLedger($0) }
    }

    /// A node said hello: a new life of a node seen before is started afresh, its previous
    /// life's leases run out as they are, its grants waiting for a record are dropped.
    public mutating func hello(node: NodeID, incarnation: UInt64) {
        guard allocator.hello(node: node, incarnation: incarnation) else { return }
        durableGrants.forget(node: node)
        counters.nodeRestarts += 1
    }

    /// `node`'s audit head (the highest sequence per node is kept).
    public mutating func auditHead(_ head: AuditHead, from node: NodeID) {
        if (auditHeads[node.rawValue]?.sequence ?? 0) <= head.sequence { auditHeads[node.rawValue] = head }
        counters.auditHeads += 1
    }

    // MARK: lease traffic

    /// Serves a batch of acquires from `node`: the answers to send back now, in order, and
    /// the actions (pushes to other nodes, ledger writes and loads). Grants on durable budgets
    /// are held and answered later, once the ledger has their record.
    public mutating func acquire(_ items: [AcquireRequest], from node: NodeID, now: Instant) -> ([Answer], [Action]) {
        var out: [Answer] = []
        var held: [DurableGrants.Held] = []
        var actions: [Action] = []
        out.reserveCapacity(items.count)
        for req in items {
            if let owner = view?.owner(of: req.budget), owner != settings.member {
                out.append(.redirect(requestID: req.requestID, budget: req.budget, owner: owner))
                counters.redirects += 1
                continue
            }
            if !(view?.serving ?? true) || loading.contains(req.budget) {
                out.append(.unavailable(requestID: req.requestID, budget: req.budget, retryAfter: .milliseconds(20)))
                continue
            }
            if durableGrants.isWaiting(node: node, budget: req.budget, requestID: req.requestID) {
                continue // a retry of a grant still waiting for its record: answered with it
            }
            var outcome = allocator.acquire(req, now: now)
            tierBudgets.used(req.budget, now: now)
            if outcome == .unknownBudget, let spec = instantiate(req.budget) {
                if let cap = tierBudgets.refusal(spec.id, by: node) {
                    counters.rejected[cap.rawValue, default: 0] += 1
                    out.append(.unknownBudget(requestID: req.requestID, budget: req.budget))
                    continue
                }
                guard (try? add(spec, epoch: nextEpoch(now: now), now: now)) != nil else {
                    out.append(.unknownBudget(requestID: req.requestID, budget: req.budget))
                    continue
                }
                tierBudgets.made(spec.id, by: node, now: now)
                counters.tierBudgetsMade += 1
                if allocator.isUpstreamBacked(spec.id) {
                    // Nothing to grant until the region's first upstream grant arrives.
                    outcome = allocator.acquire(req, now: now)
                } else if settings.durable && spec.kind.isQuota {
                    loading.insert(spec.id)
                    // The ledger says whether nodes may hold units of it (then it is learned).
                    actions.append(.loadLedger(spec.id))
                    out.append(.unavailable(requestID: req.requestID, budget: req.budget, retryAfter: .milliseconds(10)))
                    continue
                } else {
                    if view?.movedRecently(spec.id, now: now) == true || (removed[spec.id].map { now < $0 } ?? false) {
                        gain(spec.id, ledger: nil, learning: true, now: now)
                    }
                    outcome = allocator.acquire(req, now: now)
                }
            }
            switch outcome {
            case .granted(let g), .resent(let g):
                if settings.durable, g.amount > 0, let w = allocator.window(g.budget), case .granted = outcome,
                   !allocator.isUpstreamBacked(g.budget) {
                    held.append(durableGrants.hold(g, node: node, windowStart: w.start, life: allocator.incarnation(of: node)))
                } else {
                    out.append(.grant(g))
                }
                counters.grants += 1
                counters.grantedUnits += g.amount
            case .ignoredStale:
                out.append(.stale(requestID: req.requestID, budget: req.budget))
            case .unknownBudget:
                out.append(.unknownBudget(requestID: req.requestID, budget: req.budget))
                counters.rejected["unknown_budget", default: 0] += 1
            }
        }
        // Loads first (they were started while serving), then pushes, then the ledger.
        actions += takePushes()
        actions += write(allocator.takeJournal(), held: held)
        actions += watchSoftLimits(items.lazy.map(\.budget), now: now)
        return (out, actions)
    }

    /// Applies a batch of releases and reports from `node`.
    public mutating func release(_ items: [ReleaseRequest], from node: NodeID, now: Instant) -> [Action] {
        for item in items {
            if let owner = view?.owner(of: item.budget), owner != settings.member {
                counters.rejected["not_owner", default: 0] += 1
                continue
            }
            tierBudgets.used(item.budget, now: now)
            switch allocator.release(item, now: now) {
            case .applied: counters.releases += 1
            case .clamped:
                counters.releases += 1
                counters.overclaims += 1
                counters.rejected["overclaim", default: 0] += 1
            case .settledLate(let back):
                counters.lateSettlements += 1
                counters.lateSettledUnits += back
            case .ignoredUnknownLease: counters.rejected["unknown_lease", default: 0] += 1
            case .unknownBudget: counters.rejected["unknown_budget", default: 0] += 1
            }
        }
        return takePushes() + write(allocator.takeJournal(), held: []) + watchSoftLimits(items.lazy.map(\.budget), now: now)
    }

    /// Expires leases and rolls windows (every ~100 ms); once a second, retires idle tier budgets.
    public mutating func tick(now: Instant) -> [Action] {
        let expired = allocator.tick(now: now)
        var journal: [LedgerChange] = []
        if now - lastRetirement >= .seconds(1) {
            lastRetirement = now
            journal = retireIdleTierBudgets(now: now)
            if !removed.isEmpty { removed = removed.filter { now < $0.value } }
            softLimits.prune(now: now)
        }
        return takePushes() + write(journal + allocator.takeJournal(), held: []) + watchSoftLimits(expired.lazy.map(\.budget), now: now)
    }

    /// Looks at the soft limits of `budgets` (those just spent from, or whose leases ran out).
    mutating func watchSoftLimits(_ budgets: some Sequence<BudgetID>, now: Instant) -> [Action] {
        guard softLimits.watching else { return [] }
        var seen = Set<BudgetID>(), crossed: [SoftLimits.Crossing] = []
        for id in budgets where seen.insert(id).inserted && !softLimits.table.percents(for: id).isEmpty {
            guard let st = allocator.status(id), !loading.contains(id) else { continue }
            crossed += softLimits.observe(st, quotaWindow: allocator.window(id)?.start, now: now)
        }
        return crossed.isEmpty ? [] : [.softLimitCrossed(crossed)]
    }

    /// The next instant `tick` has work: a lease's expiry, a window's end, the end of learning
    /// (the allocator's deadlines, never later than the real one), or the next retirement
    /// round while tier budgets exist. The shell wakes the machine then, not on a fixed poll.
    public var nextWake: Instant {
        min(allocator.nextDeadline, tierBudgets.count > 0 ? lastRetirement + .seconds(1) : .distantFuture)
    }

    /// Whatever the allocator journaled since the last event, for the ledger.
    public mutating func flushJournal() -> [Action] { write(allocator.takeJournal(), held: []) }

    /// A ledger write, when there is something to write and a ledger to write it to.
    func write(_ journal: [LedgerChange], held: [DurableGrants.Held]) -> [Action] {
        guard settings.durable, !journal.isEmpty || !held.isEmpty else { return [] }
        return [.writeLedger(journal, held: held)]
    }

    /// The allocator's pushes (offers, recalls).
    mutating func takePushes() -> [Action] {
        let pushes = allocator.takePushes()
        return pushes.isEmpty ? [] : [.push(pushes)]
    }
}
