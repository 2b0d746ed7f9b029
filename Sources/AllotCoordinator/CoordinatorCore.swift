import AllotCluster
import AllotCore
import AllotTransport
import AllotWire
import Synchronization

/// Where frames for one connected peer go (a NIO channel, or an in-process pipe in tests).
public protocol FrameSink: Sendable {
    func send(_ frame: Allot_V1_Frame)
    func close()
}

/// The coordinator's shared state, whatever the transport: the allocator (a pure state
/// machine, under a mutex), the connected nodes to push to, and the counters behind
/// `/metrics`. Every method is a thin shell: translate, call the allocator, translate back.
///
/// In a cluster it also holds the membership view: it serves only the budgets it owns
/// (rendezvous over the live members), redirects the rest, and on every change drops the
/// budgets it lost and takes over the ones it gained in learning mode, with a new epoch.
/// With a ledger, a quota budget's grants are sent only once their record is durable (see
/// `LedgerWriter`), and a budget it gains resumes from its ledger row.
public final class CoordinatorCore: Sendable {
    public struct Settings: Sendable {
        public var name = "coordinator"
        public var allocator = AllocatorSettings()
        public var session = Session.Limits()
        public var listener = ListenerLimits()
        public var maxFrameBytes = WireProtocol.defaultMaxFrameBytes
        /// Tiers whose templates become budgets the first time a node asks for
        /// `tier.template/key`; at most `tierLimits` of them (in all, per tier, per node).
        /// One unused with no holders for a lease TTL (a rate budget: until its bucket is full
        /// again; a quota without a ledger: until its window has nothing consumed) is retired.
        public var tiers: [Tier] = []
        public var tierLimits = TierBudgets.Limits()
        /// Cluster mode: this coordinator as a member. Nil: standalone, owns every budget.
        public var member: MemberID?
        /// Cluster mode: the fewest live members (this one included) under which it still
        /// grants. Below it (the minority side of a partition) it drops every budget and
        /// answers "unavailable", so nodes there spend what they hold and then follow their
        /// fail mode. 0 or 1: always grant.
        public var quorum = 0
        /// A region (step 5): its `reach: global` budgets are leased from the global cluster
        /// as this node (see `RegionUplink`). Nil: this cluster is the root, every budget local.
        public var upstream: UpstreamClient.Settings?
        public init() {}
    }

    /// Counters, by name and label; rendered as Prometheus text by the admin endpoint.
    public struct Counters: Sendable {
        public var grants: Int64 = 0
        public var grantedUnits: Int64 = 0
        public var releases: Int64 = 0
        public var pushes: Int64 = 0
        public var framesIn: [String: Int64] = [:]
        public var rejected: [String: Int64] = [:]
        public var handshakeFailures: [String: Int64] = [:]
        public var frameErrors: [String: Int64] = [:]
        /// Connections closed by a limit (handshake/hello/idle timeout, caps, refusals, a
        /// frame this side could not send), by reason; and reading paused for backpressure.
        public var closedByLimit: [String: Int64] = [:]
        public var backpressurePauses: Int64 = 0
        public var overclaims: Int64 = 0
        public var redirects: Int64 = 0
        public var ownershipGained: Int64 = 0
        public var ownershipLost: Int64 = 0
        public var ledgerRefusals: Int64 = 0
        public var ledgerRevoked: Int64 = 0
        /// A region: units deposited by the global cluster's grants.
        public var upstreamUnits: Int64 = 0
        /// Late settlements of lapsed quota leases (a region back after a cut), and the
        /// units they returned to the pool.
        public var lateSettlements: Int64 = 0
        public var lateSettledUnits: Int64 = 0
        /// Hellos from a new life of a node already known (its previous life retired).
        public var nodeRestarts: Int64 = 0
        /// Tier budgets made on first use, and retired when idle.
        public var tierBudgetsMade: Int64 = 0
        public var tierBudgetsRetired: Int64 = 0
        /// Audit heads received from nodes.
        public var auditHeads: Int64 = 0
    }

    private struct Connection: Sendable {
        var id: UInt64
        var identity: PeerIdentity
        var sink: any FrameSink
        /// The peer certificate's serial number (hex), for the deny list.
        var serial = ""
    }

    private struct State: Sendable {
        var allocator: Allocator
        var connections: [UInt64: Connection] = [:]
        var nodeConnection: [NodeID: UInt64] = [:]
        var nextConnection: UInt64 = 1
        var counters = Counters()
        var tierBudgets: TierBudgets
        var lastRetirement: Instant = .zero
        /// Cluster mode: who owns what, the quorum, recent views (nil when standalone).
        var view: OwnershipView?
        var lastEpoch: UInt64 = 0
        /// Quota budgets whose ledger row is being read: nothing granted until it arrives.
        var loading: Set<BudgetID> = []
        /// Grants on durable budgets waiting for their ledger record.
        var durable = DurableGrants()
        /// A region: the global budgets' side towards the global cluster, and messages for it
        /// made outside a poll (releases of budgets this coordinator stopped owning).
        var upstream: UpstreamClient?
        var upstreamOutbox: [Enforcer.Outgoing] = []
        var auditHeads: [String: AuditHead] = [:]
    }

    public let settings: Settings
    public let ledger: LedgerWriter?
    /// Rate limit on warnings about peers' frames (a flood must not become a flood of logs).
    public let warnings = WarningLimiter()
    private let catalog: TierCatalog
    private let configured: [BudgetID: BudgetSpec]
    private let state: Mutex<State>
    private let gossipHandler = Mutex<(@Sendable (Membership.Envelope) -> Void)?>(nil)

    /// `ledger`: quota budgets are durable (call `start` before serving, to resume them).
    public init(settings: Settings, budgets: [BudgetSpec], ledger: LedgerWriter? = nil, now: Instant) throws(AllotError) {
        self.settings = settings
        self.ledger = ledger
        catalog = try TierCatalog(settings.tiers)
        var allocator = try Allocator(settings: settings.allocator, budgets: [], now: now)
        allocator.journaling = ledger != nil
        allocator.epoch = UInt64(max(1, now.nanoseconds / 1_000))
        var configured: [BudgetID: BudgetSpec] = [:]
        var st = State(allocator: allocator, tierBudgets: TierBudgets(limits: settings.tierLimits))
        st.upstream = settings.upstream.map { UpstreamClient(settings: $0) }
        for b in budgets {
            if configured[b.id] != nil { throw AllotError(.duplicateBudget, "budget \(b.id) is already configured") }
            configured[b.id] = b
            try Self.add(b, &st, epoch: nil, now: now)
        }
        self.configured = configured
        st.lastEpoch = st.allocator.epoch
        if ledger != nil { st.loading = Set(budgets.filter { $0.kind.isQuota && !st.allocator.isUpstreamBacked($0.id) }.map(\.id)) }
        if let me = settings.member {
            st.view = OwnershipView(me: me, quorum: settings.quorum, leaseTTL: settings.allocator.leaseTTL)
        }
        state = Mutex(st)
    }

    /// Resumes the durable budgets this coordinator owns from the ledger (standalone; in a
    /// cluster, `membersChanged` does it). A quota window with units the ledger says may still
    /// be on nodes (a restart with leases out) is learned for one lease TTL first.
    public func start(now: Instant) {
        let owned = state.withLock { s in s.loading.filter { s.allocator.contains($0) } }
        for b in owned.sorted() { load(b, learning: false) }
    }

    // MARK: connections

    /// A peer finished its hello. Returns the connection id and the hello answer, or nil when
    /// the identity already has `maxConnectionsPerIdentity` connections open.
    /// A node's `incarnation` (its life, 0 when not given): a new life of a node seen before
    /// is started afresh (`Allocator.hello`), its previous life's leases run out as they are.
    public func connected(_ identity: PeerIdentity, incarnation: UInt64 = 0, serial: String = "", sink: any FrameSink) -> (UInt64, Allot_V1_Frame)? {
        let admitted = state.withLock { s -> (UInt64, Allot_V1_Frame?)? in
            guard s.connections.values.lazy.filter({ $0.identity.uri == identity.uri }).count < settings.listener.maxConnectionsPerIdentity else {
                s.counters.closedByLimit["per_identity_cap", default: 0] += 1
                return nil
            }
            let id = s.nextConnection
            s.nextConnection += 1
            s.connections[id] = Connection(id: id, identity: identity, sink: sink, serial: serial)
            if identity.role == .node {
                let node = NodeID(identity.name)
                s.nodeConnection[node] = id
                if s.allocator.hello(node: node, incarnation: incarnation) {
                    // Grants still waiting for their record belong to the previous life.
                    s.durable.forget(node: node)
                    s.counters.nodeRestarts += 1
                }
            }
            return (id, identity.role == .node ? s.view.map { Allot_V1_Frame.members($0.members, version: $0.version) } : nil)
        }
        guard let (id, members) = admitted else { return nil }
        if let members {
            // After the hello answer, which the caller writes first on this connection's loop.
            sink.send(members)
        }
        var ack = Allot_V1_HelloAck()
        ack.protocolVersion = WireProtocol.version
        ack.coordinatorName = settings.name
        ack.maxFrameBytes = UInt32(settings.maxFrameBytes)
        ack.maxItemsPerFrame = UInt32(settings.session.maxItemsPerFrame)
        ack.leaseTtlNs = settings.allocator.leaseTTL.nanoseconds
        ack.refreshIntervalNs = settings.allocator.refreshInterval.nanoseconds
        if let me = settings.member { ack.member = me.wire }
        var f = Allot_V1_Frame()
        f.helloAck = ack
        return (id, f)
    }

    public func disconnected(_ id: UInt64) {
        state.withLock { s in
            guard let c = s.connections.removeValue(forKey: id) else { return }
            let node = NodeID(c.identity.name)
            if s.nodeConnection[node] == id { s.nodeConnection[node] = nil }
        }
    }

    public var connectedNodes: Int { state.withLock { $0.nodeConnection.count } }

    // MARK: lease traffic

    /// Serves a batch of acquires from `node`; offers and recalls for other nodes are pushed.
    /// Grants on durable budgets leave later, once the ledger has their record.
    public func acquire(_ items: [Allot_V1_Acquire], from node: NodeID, now: Instant) -> [Allot_V1_Frame] {
        let (grants, pushes, journal, held) = state.withLock { s in
            var out: [Allot_V1_Grant] = []
            var held: [DurableGrants.Held] = []
            out.reserveCapacity(items.count)
            for item in items {
                let req = AcquireRequest(wire: item, node: node)
                if let owner = Self.owner(of: req.budget, s), owner != settings.member {
                    var g = Self.refusal(item, .notOwner)
                    g.owner = owner.wire
                    out.append(g)
                    s.counters.redirects += 1
                    continue
                }
                if !(s.view?.serving ?? true) || s.loading.contains(req.budget) {
                    var g = Self.refusal(item, .unavailable)
                    g.retryAfterNs = Duration.milliseconds(20).nanoseconds
                    out.append(g)
                    continue
                }
                if s.durable.isWaiting(node: node, budget: req.budget, requestID: req.requestID) {
                    continue // a retry of a grant still waiting for its record: answered with it
                }
                var outcome = s.allocator.acquire(req, now: now)
                s.tierBudgets.used(req.budget, now: now)
                if outcome == .unknownBudget, let spec = catalog.instantiate(req.budget) {
                    if let cap = s.tierBudgets.refusal(spec.id, by: node) {
                        s.counters.rejected[cap.rawValue, default: 0] += 1
                        out.append(Self.refusal(item, .unknownBudget))
                        continue
                    }
                    guard (try? Self.add(spec, &s, epoch: Self.nextEpoch(&s, now: now), now: now)) != nil else {
                        out.append(Self.refusal(item, .unknownBudget))
                        continue
                    }
                    s.tierBudgets.made(spec.id, by: node, now: now)
                    s.counters.tierBudgetsMade += 1
                    if s.allocator.isUpstreamBacked(spec.id) {
                        // Nothing to grant until the region's first upstream grant arrives.
                        outcome = s.allocator.acquire(req, now: now)
                    } else if ledger != nil && spec.kind.isQuota {
                        s.loading.insert(spec.id)
                        // The ledger says whether nodes may hold units of it (then it is learned).
                        load(spec.id, learning: false)
                        var g = Self.refusal(item, .unavailable)
                        g.retryAfterNs = Duration.milliseconds(10).nanoseconds
                        out.append(g)
                        continue
                    } else {
                        if s.view?.movedRecently(spec.id, now: now) == true {
                            Self.gain(spec.id, ledger: nil, learning: true, &s, now: now)
                        }
                        outcome = s.allocator.acquire(req, now: now)
                    }
                }
                switch outcome {
                case .granted(let g), .resent(let g):
                    if ledger != nil, g.amount > 0, let w = s.allocator.window(g.budget), case .granted = outcome,
                       !s.allocator.isUpstreamBacked(g.budget) {
                        held.append(s.durable.hold(g, node: node, windowStart: w.start, life: s.allocator.incarnation(of: node)))
                    } else {
                        out.append(g.wire)
                    }
                    s.counters.grants += 1
                    s.counters.grantedUnits += g.amount
                case .ignoredStale:
                    out.append(Self.refusal(item, .staleRequest))
                case .unknownBudget:
                    out.append(Self.refusal(item, .unknownBudget))
                    s.counters.rejected["unknown_budget", default: 0] += 1
                }
            }
            return (out, collectPushes(&s), s.allocator.takeJournal(), held)
        }
        for (sink, frame) in pushes { sink.send(frame) }
        write(journal, held: held)
        return frames(grants)
    }

    /// Grants in frames within this coordinator's limits (none when there are none).
    func frames(_ grants: [Allot_V1_Grant], push: Bool = false) -> [Allot_V1_Frame] {
        Allot_V1_Frame.grants(grants, push: push, maxItems: settings.session.maxItemsPerFrame, maxBytes: settings.maxFrameBytes)
    }

    /// The owner of `budget` in the current view (nil when standalone).
    private static func owner(of budget: BudgetID, _ s: State) -> MemberID? {
        s.view?.owner(of: budget)
    }

    /// Adds `spec` to the allocator: upstream-backed when this coordinator is a region and the
    /// budget is global (its units then come only from the global cluster's grants).
    private static func add(_ spec: BudgetSpec, _ s: inout State, epoch: UInt64?, now: Instant) throws(AllotError) {
        guard s.upstream != nil, spec.reach == .global else { return try s.allocator.add(spec, now: now) }
        try s.allocator.addUpstreamBacked(spec, epoch: epoch, now: now)
        s.upstream!.register(spec.id)
    }

    /// A fresh owner epoch, above every one this coordinator used.
    private static func nextEpoch(_ s: inout State, now: Instant) -> UInt64 {
        let epoch = max(s.lastEpoch + 1, UInt64(max(1, now.nanoseconds / 1_000)))
        s.lastEpoch = epoch
        return epoch
    }

    /// Forgets `budget`; a global one gives its free units back upstream.
    private static func drop(_ budget: BudgetID, _ s: inout State) -> [LedgerChange] {
        if s.upstream?.contains(budget) == true { _ = releaseUpstream(budget, &s) }
        return s.allocator.remove(budget)
    }

    /// A region lets go of a global budget's upstream lease: its free units go back to the
    /// global cluster (queued in the outbox). Returns the region's view of it as it was.
    private static func releaseUpstream(_ budget: BudgetID, _ s: inout State) -> UpstreamClient.RegionView? {
        let view = s.allocator.regionView(budget, now: .zero, demand: 0)
        guard let release = s.upstream!.forget(budget, view: view) else { return nil }
        s.upstreamOutbox.append(release)
        return view
    }

    /// Takes over `budget` (already in the allocator) with a new epoch: in learning mode, or
    /// straight from its ledger row when no node can hold a lease the ledger does not know.
    /// A region's global budget starts empty instead: its units come from a new upstream lease
    /// (nodes holding the previous owner's sub-leases get a new lease and drop the old one).
    private static func gain(_ budget: BudgetID, ledger: LedgerCounters?, learning: Bool, _ s: inout State, now: Instant) {
        let epoch = nextEpoch(&s, now: now)
        s.counters.ownershipGained += 1
        guard let spec = s.allocator.spec(budget) else { return }
        if s.allocator.isUpstreamBacked(budget) {
            _ = drop(budget, &s)
            try? add(spec, &s, epoch: epoch, now: now)
            return
        }
        if learning || (ledger?.unreported ?? 0) > 0 {
            var committed: Int64 = 0
            if case .quota(let allowance, _) = spec.kind { committed = ledger?.committed ?? allowance }
            _ = s.allocator.ownershipGained(budget, epoch: epoch, committed: committed, adoptable: ledger?.unreported, now: now)
        } else {
            s.allocator.resume(budget, epoch: epoch, ledger: ledger ?? LedgerCounters(), now: now)
        }
    }

    /// Reads `budget`'s ledger row for its current window, then takes it over.
    private func load(_ budget: BudgetID, learning: Bool) {
        guard let ledger else { return }
        Task {
            var backoff = Duration.milliseconds(50)
            while true {
                let window = state.withLock { $0.allocator.window(budget) }
                guard let window else { return }
                do {
                    let row = try await ledger.store.load(budget, windowStart: window.start)
                    state.withLock { s in
                        guard s.loading.remove(budget) != nil, s.allocator.contains(budget) else { return }
                        Self.gain(budget, ledger: row, learning: learning, &s, now: WallClock.now())
                    }
                    return
                } catch {
                    let owned = state.withLock { $0.loading.contains(budget) }
                    guard owned else { return }
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(2))
                }
            }
        }
    }

    /// Hands the journal to the ledger; held grants go out once it is durable. A grant whose
    /// record was refused (the cap was reached by another coordinator) or whose write failed
    /// is taken back; the node gets "nothing" or "ask again later" instead.
    private func write(_ journal: [LedgerChange], held: [DurableGrants.Held]) {
        guard let ledger, !journal.isEmpty || !held.isEmpty else { return }
        ledger.submit(journal) { [weak self] accepted in
            self?.recorded(journal, held: held, accepted: accepted)
        }
    }

    private func recorded(_ journal: [LedgerChange], held: [DurableGrants.Held], accepted: [Bool]?) {
        let (sends, retry) = state.withLock { s -> ([(any FrameSink, Allot_V1_Frame)], [LedgerChange]) in
            var lives: [NodeID: UInt64] = [:]
            for h in held where lives[h.node] == nil { lives[h.node] = s.allocator.incarnation(of: h.node) }
            let outcome = s.durable.recorded(journal, held: held, accepted: accepted) { lives[$0] ?? 0 }
            for (h, exhausted) in outcome.revoke {
                s.allocator.revoke(h.grant, node: h.node, exhausted: exhausted)
                s.counters.ledgerRevoked += 1
                if exhausted { s.counters.ledgerRefusals += 1 }
            }
            var byNode: [NodeID: [Allot_V1_Grant]] = [:]
            for (node, answer) in outcome.answers {
                switch answer {
                case .grant(let g), .nothing(let g):
                    byNode[node, default: []].append(g.wire)
                case .retryLater(let g, let after):
                    var w = g.wire
                    w.outcome = .unavailable
                    w.retryAfterNs = after.nanoseconds
                    byNode[node, default: []].append(w)
                }
            }
            var sends: [(any FrameSink, Allot_V1_Frame)] = []
            for (node, grants) in byNode {
                guard let id = s.nodeConnection[node], let c = s.connections[id] else { continue }
                for f in frames(grants) { sends.append((c.sink, f)) }
            }
            return (sends, outcome.retry)
        }
        for (sink, frame) in sends { sink.send(frame) }
        if !retry.isEmpty { write(retry, held: []) }
    }

    /// An answer that grants nothing, saying why.
    private static func refusal(_ item: Allot_V1_Acquire, _ outcome: Allot_V1_Grant.Outcome) -> Allot_V1_Grant {
        var g = Allot_V1_Grant()
        g.requestID = item.requestID
        g.budget = item.budget
        g.outcome = outcome
        return g
    }

    // MARK: membership

    /// The live members changed (cluster mode): drop the budgets now owned by others, take over
    /// the configured ones now owned here, and tell every connected node. `healthy`: how many
    /// of them are not suspected (default: all); the quorum counts those, so the minority side
    /// of a partition stops granting about one suspicion timeout before the majority declares
    /// it dead and takes its budgets over.
    public func membersChanged(_ live: [MemberID], healthy: Int? = nil, now: Instant) {
        guard let me = settings.member else { return }
        var toLoad: [BudgetID] = []
        let (journal, sinks, frame) = state.withLock { s -> ([LedgerChange], [any FrameSink], Allot_V1_Frame) in
            guard let change = s.view!.viewChanged(live, healthy: healthy, now: now) else {
                // Only the suspicion count moved, not the quorum: nothing to do.
                return ([], [], .members(s.view!.members, version: s.view!.version))
            }
            let (appeared, wasFormed, regained, quorate) = (change.appeared, change.wasFormed, change.regained, change.quorate)
            var journal: [LedgerChange] = []
            let view = s.view!
            for b in s.allocator.budgetIDs where !quorate || view.owner(of: b) != me {
                journal += Self.drop(b, &s)
                s.loading.remove(b)
                s.counters.ownershipLost += 1
                if configured[b] == nil { s.tierBudgets.removed(b) }
            }
            if quorate && !regained && !appeared.isEmpty {
                for b in s.allocator.budgetIDs where view.owner(of: b) == me {
                    if let alt = view.alternate(of: b), appeared.contains(alt) {
                        s.allocator.extendLearning(b, now: now)
                    }
                }
            }
            // Budgets gained: rate and concurrency budgets are learned for one lease TTL (at
            // formation too: a member that restarts into a running cluster cannot know what
            // others granted meanwhile); durable quotas as their ledger row says.
            for (id, spec) in configured where quorate && view.owner(of: id) == me {
                if wasFormed && !regained && s.allocator.contains(id) { continue }
                if !s.allocator.contains(id) { try? Self.add(spec, &s, epoch: nil, now: now) }
                if ledger != nil && spec.kind.isQuota && !s.allocator.isUpstreamBacked(id) {
                    s.loading.insert(id)
                    toLoad.append(id)
                } else {
                    Self.gain(id, ledger: nil, learning: true, &s, now: now)
                }
            }
            let sinks = s.nodeConnection.values.compactMap { s.connections[$0]?.sink }
            return (journal, sinks, .members(view.members, version: view.version))
        }
        // A durable quota is learned only if its ledger row says units may still be on nodes;
        // the database's conditional update covers a previous owner still granting.
        for b in toLoad { load(b, learning: false) }
        write(journal, held: [])
        for sink in sinks { sink.send(frame) }
    }

    /// Where gossip from other coordinators goes (set by `ClusterService`).
    public func onGossip(_ handler: @escaping @Sendable (Membership.Envelope) -> Void) {
        gossipHandler.withLock { $0 = handler }
    }

    /// A gossip frame from a peer with a coordinator certificate. The sender must be who its
    /// certificate says; an error frame to answer with otherwise.
    public func gossip(_ g: Allot_V1_Gossip, from peer: PeerIdentity) -> Allot_V1_Frame? {
        guard let e = Membership.Envelope(wire: g), e.from.name == peer.name, e.to.name == settings.member?.name else {
            count(rejected: "bad_gossip")
            return .error(.protocolViolation, "gossip from \(peer.uri) must name its own certificate as sender and this coordinator as receiver", closing: false)
        }
        let handler = gossipHandler.withLock { $0 }
        if let handler { handler(e) } else { count(rejected: "gossip_not_clustered") }
        return nil
    }

    /// `member` probed this coordinator, so its view has this one in it: if it (re)appeared
    /// lately, it granted this coordinator's budgets at most until now. Those budgets stay in
    /// learning mode for one lease TTL from here, so its last leases are reported or expire
    /// before anything new is granted.
    public func peerSeesMe(_ member: MemberID, now: Instant) {
        guard let me = settings.member else { return }
        state.withLock { s in
            guard s.view?.seesMe(member) == true else { return }
            for b in s.allocator.budgetIDs where s.view!.alternate(of: b)?.name == member.name {
                s.allocator.extendLearning(b, now: now)
            }
        }
    }

    // MARK: a region's side towards the global cluster (step 5)

    /// Keeps the global budgets this coordinator owns fed from the global cluster: what to
    /// send there now (acquires with the region's demand and reports, releases of surplus).
    public func upstreamStep(now: Instant) -> [Enforcer.Outgoing] {
        state.withLock { s in
            guard s.upstream != nil else { return [] }
            var out = s.upstreamOutbox
            s.upstreamOutbox = []
            var views: [BudgetID: UpstreamClient.RegionView] = [:]
            for b in s.upstream!.budgets {
                s.allocator.advance(b, now: now)
                views[b] = s.allocator.regionView(b, now: now)
            }
            for action in s.upstream!.poll(now: now, views: views) {
                switch action {
                case .withdraw(let b, let n): _ = s.allocator.withdraw(b, max: n, now: now)
                case .send(let m): out.append(m)
                }
            }
            return out
        }
    }

    /// Grants from the global cluster: their units go into the regional pool, usable (and
    /// sub-leased) until the upstream lease ends.
    public func upstreamReceive(_ grants: [Grant], now: Instant) {
        state.withLock { s in
            guard s.upstream != nil else { return }
            for g in grants {
                s.allocator.advance(g.budget, now: now)
                guard let view = s.allocator.regionView(g.budget, now: now),
                      let d = s.upstream!.receive(g, now: now, view: view) else { continue }
                s.allocator.deposit(g.budget, amount: d.amount, expiresAt: d.expiresAt, now: now)
                s.counters.upstreamUnits += d.amount
            }
        }
    }

    /// For `RegionUplink`: the rest of the node's side of the protocol, on the global budgets.
    public func upstream<T>(_ body: (inout UpstreamClient) -> T) -> T? {
        state.withLock { s in
            guard s.upstream != nil else { return nil }
            return body(&s.upstream!)
        }
    }

    /// Gives every global budget's free units back upstream (shutdown).
    public func upstreamShutdown() -> (outgoing: [Enforcer.Outgoing], waiting: Bool) {
        state.withLock { s in
            guard s.upstream != nil else { return ([], false) }
            let waiting = s.upstream!.awaitingGrants
            for b in s.upstream!.budgets {
                // Shutting down: what was given back can no longer be granted here.
                if let v = Self.releaseUpstream(b, &s) { _ = s.allocator.withdraw(b, max: v.free, now: WallClock.now()) }
            }
            defer { s.upstreamOutbox = [] }
            return (s.upstreamOutbox, waiting)
        }
    }

    /// Cluster mode: the view as nodes see it.
    public var members: (list: [MemberID], version: UInt64) { state.withLock { $0.view.map { ($0.members, $0.version) } ?? ([], 0) } }
    public var isFormed: Bool { state.withLock { $0.view?.formed ?? true } }
    /// Standalone, or formed with a quorum: grants are being served (`/readyz`).
    public var isServing: Bool { state.withLock { $0.view?.serving ?? true } }

    /// `node`'s audit head: kept in the ledger (the highest sequence per node), so that
    /// `allot audit verify --ledger` finds records cut off its trail. Without a ledger, kept
    /// here only. Returns an error frame for a malformed head.
    public func auditHead(_ h: Allot_V1_AuditHead, from node: NodeID, now: Instant) -> Allot_V1_Frame? {
        let head = AuditHead(file: h.file, sequence: h.sequence, mac: h.mac)
        guard head.isWellFormed else {
            count(rejected: "bad_audit_head")
            return .error(.protocolViolation, "an audit head needs a trail file name, a sequence ≥ 1 and a 64-hex-digit MAC", closing: false)
        }
        state.withLock { s in
            if (s.auditHeads[node.rawValue]?.sequence ?? 0) <= head.sequence { s.auditHeads[node.rawValue] = head }
            s.counters.auditHeads += 1
        }
        if let store = ledger?.store {
            Task { try? await store.recordAuditHead(node: node.rawValue, head, now: now) }
        }
        return nil
    }

    /// The audit heads reported to this coordinator since it started, by node.
    public var auditHeads: [String: AuditHead] { state.withLock { $0.auditHeads } }

    /// Applies a batch of releases and reports from `node`.
    public func release(_ items: [Allot_V1_Release], from node: NodeID, now: Instant) {
        let (pushes, journal) = state.withLock { s -> ([(any FrameSink, Allot_V1_Frame)], [LedgerChange]) in
            for item in items {
                if let owner = Self.owner(of: BudgetID(item.budget), s), owner != settings.member {
                    s.counters.rejected["not_owner", default: 0] += 1
                    continue
                }
                s.tierBudgets.used(BudgetID(item.budget), now: now)
                switch s.allocator.release(ReleaseRequest(wire: item, node: node), now: now) {
                case .applied: s.counters.releases += 1
                case .clamped:
                    s.counters.releases += 1
                    s.counters.overclaims += 1
                    s.counters.rejected["overclaim", default: 0] += 1
                case .settledLate(let back):
                    s.counters.lateSettlements += 1
                    s.counters.lateSettledUnits += back
                case .ignoredUnknownLease: s.counters.rejected["unknown_lease", default: 0] += 1
                case .unknownBudget: s.counters.rejected["unknown_budget", default: 0] += 1
                }
            }
            return (collectPushes(&s), s.allocator.takeJournal())
        }
        for (sink, frame) in pushes { sink.send(frame) }
        write(journal, held: [])
    }

    /// Expires leases and rolls windows; call every ~100 ms. Once a second, retires idle tier budgets.
    public func tick(now: Instant) {
        let (pushes, journal) = state.withLock { s -> ([(any FrameSink, Allot_V1_Frame)], [LedgerChange]) in
            _ = s.allocator.tick(now: now)
            var journal: [LedgerChange] = []
            if now - s.lastRetirement >= .seconds(1) {
                s.lastRetirement = now
                journal = retireIdleTierBudgets(&s, now: now)
            }
            return (collectPushes(&s), journal + s.allocator.takeJournal())
        }
        for (sink, frame) in pushes { sink.send(frame) }
        write(journal, held: [])
    }

    /// Tier budgets nobody holds and nobody used for long enough that making them again later
    /// changes nothing a node could see (at most 1,000 per call). Their ledger rows stay.
    private func retireIdleTierBudgets(_ s: inout State, now: Instant) -> [LedgerChange] {
        let ttl = settings.allocator.leaseTTL, durable = ledger != nil
        // Read in place (a copy of the allocator here would be copied again by the drops below).
        let idle = s.tierBudgets.idle(limit: 1_000) { id -> Instant? in
            guard !s.loading.contains(id), let st = s.allocator.status(id), st.holders == 0, st.outstanding == 0 else { return nil }
            switch st.kind {
            case .rate(let limit, let period, let burst):
                // Until its bucket would be full again (made anew, it starts full).
                return now - ttl - period * Int(max(1, min(1_000, (burst + limit - 1) / limit)))
            case .quota:
                // Without a ledger the window's count lives only here: keep it until it is 0.
                return durable || (st.consumed == 0 && st.expiredSpent == 0) ? now - ttl : nil
            case .concurrency:
                return now - ttl
            }
        }
        var journal: [LedgerChange] = []
        for id in idle {
            journal += Self.drop(id, &s)
            s.tierBudgets.removed(id)
            s.counters.tierBudgetsRetired += 1
        }
        return journal
    }

    private func collectPushes(_ s: inout State) -> [(any FrameSink, Allot_V1_Frame)] {
        let pushes = s.allocator.takePushes()
        guard !pushes.isEmpty else { return [] }
        var byNode: [NodeID: [Allot_V1_Grant]] = [:]
        for p in pushes { byNode[p.node, default: []].append(p.grant.wire) }
        var out: [(any FrameSink, Allot_V1_Frame)] = []
        for (node, grants) in byNode {
            guard let id = s.nodeConnection[node], let c = s.connections[id] else { continue }
            s.counters.pushes += Int64(grants.count)
            for f in frames(grants, push: true) { out.append((c.sink, f)) }
        }
        return out
    }

    // MARK: observability

    /// One page of the status: the budgets whose id sorts after `after`, as many as one frame
    /// holds; `next` names the last one when more follow.
    public func status(after: String = "") -> Allot_V1_Frame {
        state.withLock { s in
            var r = Allot_V1_StatusResponse()
            r.coordinatorName = settings.name
            r.connectedNodes = UInt32(clamping: s.nodeConnection.count)
            let ids = s.allocator.budgetIDs(after: after)
            let page = WireProtocol.pages(Array(ids.prefix(settings.session.maxItemsPerFrame)), maxItems: settings.session.maxItemsPerFrame, maxBytes: settings.maxFrameBytes) {
                $0.rawValue.utf8.count + 16
            }.first ?? []
            if page.count < ids.count, let last = page.last { r.next = last.rawValue }
            r.budgets = page.compactMap { Self.budgetStatus($0, s) }
            var f = Allot_V1_Frame()
            f.statusResponse = r
            return f
        }
    }

    /// Every budget's status at once (for `/metrics`, which is not bound by a frame's size).
    public func budgetStatuses() -> [Allot_V1_BudgetStatus] {
        state.withLock { s in s.allocator.budgetIDs.compactMap { Self.budgetStatus($0, s) } }
    }

    private static func budgetStatus(_ id: BudgetID, _ s: State) -> Allot_V1_BudgetStatus? {
        guard let st = s.allocator.status(id) else { return nil }
        var b = Allot_V1_BudgetStatus()
        b.budget = id.rawValue
        b.kind = st.kind.name
        b.limit = st.kind.ceiling
        b.pool = st.pool
        b.outstanding = st.outstanding
        b.consumed = st.consumed
        b.holders = UInt32(clamping: st.holders)
        b.committedRate = st.committedRate
        b.expiredSpent = st.expiredSpent
        return b
    }

    public func allocatorStatus(_ budget: BudgetID) -> Allocator.Status? {
        state.withLock { $0.allocator.status(budget) }
    }

    public var counters: Counters { state.withLock { $0.counters } }

    public func count(frame kind: String) { state.withLock { $0.counters.framesIn[kind, default: 0] += 1 } }
    public func count(rejected reason: String) { state.withLock { $0.counters.rejected[reason, default: 0] += 1 } }
    public func count(handshakeFailure reason: String) { state.withLock { $0.counters.handshakeFailures[reason, default: 0] += 1 } }
    public func count(closedBy reason: String) { state.withLock { $0.counters.closedByLimit[reason, default: 0] += 1 } }
    public func count(backpressure: Void) { state.withLock { $0.counters.backpressurePauses += 1 } }
    public func count(frameError reason: String) { state.withLock { $0.counters.frameErrors[reason, default: 0] += 1 } }

    /// Hands whatever the allocator journaled since the last event to the ledger.
    public func flushJournal() {
        let journal = state.withLock { $0.allocator.takeJournal() }
        write(journal, held: [])
    }

    /// Closes the open connections whose identity or certificate serial `denyList` now names
    /// (after a reload); returns how many.
    @discardableResult
    public func disconnect(denied denyList: DenyList) -> Int {
        let sinks = state.withLock { s in s.connections.values.filter { denyList.denies($0.identity, serial: $0.serial) }.map(\.sink) }
        for sink in sinks {
            sink.send(.error(.permissionDenied, "this identity is on the coordinator's deny list", closing: true))
            sink.close()
        }
        state.withLock { $0.counters.closedByLimit["denied", default: 0] += Int64(sinks.count) }
        return sinks.count
    }

    /// Drops every connection without a word (a crash, in tests).
    public func abort() {
        let sinks = state.withLock { $0.connections.values.map(\.sink) }
        for sink in sinks { sink.close() }
    }

    /// Asks every connected peer to go away (graceful shutdown).
    public func drain() {
        let sinks = state.withLock { $0.connections.values.map(\.sink) }
        for sink in sinks {
            sink.send(.error(.shuttingDown, "coordinator shutting down", closing: true))
            sink.close()
        }
    }
}
