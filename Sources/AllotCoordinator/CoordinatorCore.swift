import AllotCluster
import AllotCoordination
import AllotCore
import AllotTransport
import AllotWire
import Synchronization

/// Where frames for one connected peer go (a NIO channel, or an in-process pipe in tests).
public protocol FrameSink: Sendable {
    func send(_ frame: Allot_V1_Frame)
    func close()
}

/// The coordinator's shell, whatever the transport: the connected peers, and the
/// `CoordinatorMachine` (every decision: ownership, durable grants, tier budgets, restarts,
/// the region upstream) under one mutex. Each method translates frames, hands the event to
/// the machine, and performs the actions it returns: answers and pushes to connections,
/// ledger writes and loads (with `LedgerWriter`), member lists to nodes.
public final class CoordinatorCore: Sendable {
    public struct Settings: Sendable {
        public var name = "coordinator"
        public var allocator = AllocatorSettings()
        public var session = Session.Limits()
        public var listener = ListenerLimits()
        public var maxFrameBytes = WireProtocol.defaultMaxFrameBytes
        /// Tiers, cluster membership and quorum, a region's upstream: see `CoordinatorMachine.Settings`.
        public var tiers: [Tier] = []
        public var tierLimits = TierBudgets.Limits()
        public var member: MemberID?
        public var quorum = 0
        public var upstream: UpstreamClient.Settings?
        public var softLimits = SoftLimitTable()
        public var descriptors = DescriptorRules() // `envoy_ratelimit:` files (`CoordinatorMachine.Settings`)
        /// The policy sections of the file it started with (`PolicyDocument`; "" when none).
        public var policy = ""
        public init() {}
    }

    public typealias Counters = CoordinatorCounters

    struct State: Sendable {
        var machine: CoordinatorMachine
        var peers = PeerConnections()
    }

    public let settings: Settings
    public let ledger: LedgerWriter?
    /// The consumer directory (keys and consumers) and the policy (budgets, tiers, models),
    /// each versioned in the ledger.
    public let directory: DirectoryKeeper, config: ConfigKeeper
    /// Rate limit on warnings about peers' frames (a flood must not become a flood of logs).
    public let warnings = WarningLimiter()
    let state: Mutex<State>
    /// Opened by `CoordinatorService` once started and listening (the cluster waits for it).
    let serving = StartGate()
    private let gossipHandler = HandlerSlot<Membership.Envelope>()
    private let wakeHandler = HandlerSlot<Instant>()

    /// `ledger`: quota budgets are durable (call `start` before serving, to resume them).
    public init(settings: Settings, budgets: [BudgetSpec], ledger: LedgerWriter? = nil, now: Instant) throws(AllotError) {
        self.settings = settings
        self.ledger = ledger
        directory = DirectoryKeeper(tiers: Set(settings.tiers.map(\.name)), store: ledger?.store, maxFrameBytes: settings.maxFrameBytes)
        config = ConfigKeeper(policy: settings.policy, store: ledger?.store)
        var m = CoordinatorMachine.Settings()
        (m.allocator, m.tiers, m.tierLimits, m.member, m.quorum) = (settings.allocator, settings.tiers, settings.tierLimits, settings.member, settings.quorum)
        (m.upstream, m.durable, m.softLimits, m.descriptors) = (settings.upstream, ledger != nil, settings.softLimits, settings.descriptors)
        state = Mutex(State(machine: try CoordinatorMachine(settings: m, budgets: budgets, now: now)))
    }

    /// Resumes the durable budgets this coordinator owns from the ledger (standalone; in a
    /// cluster, `membersChanged` does it).
    public func start(now: Instant) { run { ((), $0.start()) } }

    /// Runs `body` on the machine under the lock and finds, in the same critical section, the
    /// connections its answers go to; then sends and performs the rest outside the lock.
    func run<T>(_ body: (inout CoordinatorMachine) -> (T, [CoordinatorMachine.Action])) -> T {
        let (result, sends, io, wake) = state.withLock { s in
            let (result, actions) = body(&s.machine)
            let (sends, io) = deliveries(actions, &s)
            return (result, sends, io, s.machine.nextWake)
        }
        for (sink, frame) in sends { sink.send(frame) }
        perform(io)
        wakeHandler(wake)
        return result
    }

    /// Reads or changes the machine under the lock (events without actions).
    public func machine<T>(_ body: (inout CoordinatorMachine) -> T) -> T {
        let (result, wake) = state.withLock { (body(&$0.machine), $0.machine.nextWake) }
        wakeHandler(wake)
        return result
    }

    /// Told the machine's next deadline after every event (`WakeTimer` calls `tick` then).
    public func onWake(_ handler: (@Sendable (Instant) -> Void)?) {
        wakeHandler.set(handler)
        _ = machine { $0.nextWake } // tells the new handler the next deadline
    }

    // MARK: connections

    /// A peer finished its hello. Returns the connection id and the hello answer, or nil when
    /// the identity already has `maxConnectionsPerIdentity` connections open. A node's
    /// `incarnation` (its life, 0 when not given) tells a restart from a reconnect.
    public func connected(_ identity: PeerIdentity, incarnation: UInt64 = 0, serial: String = "", sink: any FrameSink) -> (UInt64, Allot_V1_Frame)? {
        let admitted = state.withLock { s -> (UInt64, Allot_V1_Frame?)? in
            guard s.peers.count(of: identity) < settings.listener.maxConnectionsPerIdentity else {
                s.machine.counters.closedByLimit["per_identity_cap", default: 0] += 1
                return nil
            }
            let id = s.peers.add(identity, serial: serial, sink: sink)
            guard identity.role == .node else { return (id, nil) }
            s.machine.hello(node: NodeID(identity.name), incarnation: incarnation)
            return (id, s.machine.view.map { Allot_V1_Frame.members($0.members, version: $0.version) })
        }
        guard let (id, members) = admitted else { return nil }
        // After the hello answer, which the caller writes first on this connection's loop.
        if let members { sink.send(members) }
        return (id, .helloAck(settings))
    }

    public func disconnected(_ id: UInt64) {
        state.withLock { $0.peers.remove(id) }
    }

    public var connectedNodes: Int { state.withLock { $0.peers.nodeCount } }

    // MARK: events

    /// Serves a batch of acquires from `node`; the frames to answer with. Offers and recalls
    /// for other nodes are pushed; grants on durable budgets leave once the ledger has them.
    public func acquire(_ items: [Allot_V1_Acquire], from node: NodeID, now: Instant) -> [Allot_V1_Frame] {
        let answers = run { $0.acquire(items.map { AcquireRequest(wire: $0, node: node) }, from: node, now: now) }
        return frames(answers.map(\.wire))
    }

    /// Applies a batch of releases and reports from `node`.
    public func release(_ items: [Allot_V1_Release], from node: NodeID, now: Instant) {
        run { ((), $0.release(items.map { ReleaseRequest(wire: $0, node: node) }, from: node, now: now)) }
    }

    /// Expires leases, rolls windows, ends learning, retires idle tier budgets: when `onWake` says.
    public func tick(now: Instant) { run { ((), $0.tick(now: now)) } }

    /// Hands whatever the allocator journaled since the last event to the ledger.
    public func flushJournal() { run { ((), $0.flushJournal()) } }

    /// The live members changed (cluster mode); see `CoordinatorMachine.viewChanged`.
    public func membersChanged(_ live: [MemberID], healthy: Int? = nil, now: Instant) {
        run { ((), $0.viewChanged(live, healthy: healthy, now: now)) }
    }

    /// `member` probed this coordinator (see `CoordinatorMachine.peerSeesMe`).
    public func peerSeesMe(_ member: MemberID, now: Instant) { machine { $0.peerSeesMe(member, now: now) } }

    /// Where gossip from other coordinators goes (set by `ClusterService`).
    public func onGossip(_ handler: @escaping @Sendable (Membership.Envelope) -> Void) {
        gossipHandler.set(handler)
    }

    /// A gossip frame from a peer with a coordinator certificate. The sender must be who its
    /// certificate says; an error frame to answer with otherwise.
    public func gossip(_ g: Allot_V1_Gossip, from peer: PeerIdentity) -> Allot_V1_Frame? {
        guard let e = Membership.Envelope(wire: g), e.from.name == peer.name, e.to.name == settings.member?.name else {
            count(rejected: "bad_gossip")
            return .error(.protocolViolation, "gossip from \(peer.uri) must name its own certificate as sender and this coordinator as receiver", closing: false)
        }
        if !gossipHandler(e) { count(rejected: "gossip_not_clustered") }
        return nil
    }

    /// `node`'s audit head: kept in the ledger (the highest sequence per node), so that
    /// `allot audit verify --ledger` finds records cut off its trail. Without a ledger, kept
    /// here only. Returns an error frame for a malformed head.
    public func auditHead(_ h: Allot_V1_AuditHead, from node: NodeID, now: Instant) -> Allot_V1_Frame? {
        let head = AuditHead(file: h.file, sequence: h.sequence, mac: h.mac)
        guard head.isWellFormed else {
            count(rejected: "bad_audit_head")
            return .error(.protocolViolation, "an audit head needs a trail file name, a sequence ≥ 1 and a 64-hex-digit MAC", closing: false)
        }
        machine { $0.auditHead(head, from: node) }
        if let store = ledger?.store { Task { try? await store.recordAuditHead(node: node.rawValue, head, now: now) } }
        return nil
    }

    // MARK: actions

    /// The frames for the machine's answers, pushes and member lists, each with the connection
    /// it goes to (nodes not connected ask again); and the ledger's actions, to perform after.
    private func deliveries(_ actions: [CoordinatorMachine.Action], _ s: inout State) -> ([(any FrameSink, Allot_V1_Frame)], [CoordinatorMachine.Action]) {
        var sends: [(any FrameSink, Allot_V1_Frame)] = []
        var io: [CoordinatorMachine.Action] = []
        func send(_ grants: [Allot_V1_Grant], to node: NodeID, push: Bool) {
            guard let sink = s.peers.sink(of: node) else { return }
            if push { s.machine.counters.pushes += Int64(grants.count) }
            for f in frames(grants, push: push) { sends.append((sink, f)) }
        }
        for action in actions {
            switch action {
            case .push(let pushes):
                var byNode: [NodeID: [Allot_V1_Grant]] = [:]
                for p in pushes { byNode[p.node, default: []].append(p.grant.wire) }
                for (node, grants) in byNode { send(grants, to: node, push: true) }
            case .send(let node, let answers):
                send(answers.map(\.wire), to: node, push: false)
            case .members(let members, let version):
                let frame = Allot_V1_Frame.members(members, version: version)
                for sink in s.peers.nodeSinks { sends.append((sink, frame)) }
            case .writeLedger, .loadLedger, .softLimitCrossed:
                io.append(action)
            }
        }
        return (sends, io)
    }

    /// The ledger's side of the machine's actions (everything else is sent by `run`).
    private func perform(_ actions: [CoordinatorMachine.Action]) {
        for action in actions {
            switch action {
            case .writeLedger(let journal, let held):
                ledger?.submit(journal) { [weak self] accepted in
                    self?.run { ((), $0.recorded(journal, held: held, accepted: accepted)) }
                }
            case .loadLedger(let budget): load(budget)
            case .softLimitCrossed(let crossings): Self.log(crossings)
            case .push, .send, .members: break
            }
        }
    }

    /// Reads `budget`'s ledger row for its current window (again, backing off, until it is
    /// read or no longer wanted), then hands it to the machine.
    private func load(_ budget: BudgetID) {
        guard let ledger else { return }
        Task {
            var backoff = Duration.milliseconds(50)
            while let window = machine({ $0.loadWindow(budget, now: WallClock.now()) }) {
                if let row = try? await ledger.store.load(budget, windowStart: window) {
                    if machine({ $0.loaded(budget, row: row, windowStart: window, now: WallClock.now()) }) { return }
                    continue // the window rolled over while it was read: the new window's row at once
                }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(2))
            }
        }
    }
}
