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
public final class CoordinatorCore: Sendable {
    public struct Settings: Sendable {
        public var name = "coordinator"
        public var allocator = AllocatorSettings()
        public var session = Session.Limits()
        public var maxFrameBytes = WireProtocol.defaultMaxFrameBytes
        /// Tiers whose templates become budgets the first time a node asks for
        /// `tier.template/key`; at most `maxTierBudgets` of them.
        public var tiers: [Tier] = []
        public var maxTierBudgets = 100_000
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
        public var overclaims: Int64 = 0
    }

    private struct Connection: Sendable {
        var id: UInt64
        var identity: PeerIdentity
        var sink: any FrameSink
    }

    private struct State: Sendable {
        var allocator: Allocator
        var connections: [UInt64: Connection] = [:]
        var nodeConnection: [NodeID: UInt64] = [:]
        var nextConnection: UInt64 = 1
        var counters = Counters()
        var tierBudgets = 0
    }

    public let settings: Settings
    private let catalog: TierCatalog
    private let state: Mutex<State>

    public init(settings: Settings, budgets: [BudgetSpec], now: Instant) throws(AllotError) {
        self.settings = settings
        catalog = try TierCatalog(settings.tiers)
        state = Mutex(State(allocator: try Allocator(settings: settings.allocator, budgets: budgets, now: now)))
    }

    // MARK: connections

    /// A peer finished its hello. Returns the connection id and the hello answer.
    public func connected(_ identity: PeerIdentity, sink: any FrameSink) -> (UInt64, Allot_V1_Frame) {
        let id = state.withLock { s in
            let id = s.nextConnection
            s.nextConnection += 1
            s.connections[id] = Connection(id: id, identity: identity, sink: sink)
            if identity.role == .node { s.nodeConnection[NodeID(identity.name)] = id }
            return id
        }
        var ack = Allot_V1_HelloAck()
        ack.protocolVersion = WireProtocol.version
        ack.coordinatorName = settings.name
        ack.maxFrameBytes = UInt32(settings.maxFrameBytes)
        ack.maxItemsPerFrame = UInt32(settings.session.maxItemsPerFrame)
        ack.leaseTtlNs = settings.allocator.leaseTTL.nanoseconds
        ack.refreshIntervalNs = settings.allocator.refreshInterval.nanoseconds
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
    public func acquire(_ items: [Allot_V1_Acquire], from node: NodeID, now: Instant) -> Allot_V1_Frame {
        let (grants, pushes) = state.withLock { s -> ([Allot_V1_Grant], [(any FrameSink, Allot_V1_Frame)]) in
            var out: [Allot_V1_Grant] = []
            out.reserveCapacity(items.count)
            for item in items {
                let req = AcquireRequest(wire: item, node: node)
                var outcome = s.allocator.acquire(req, now: now)
                if outcome == .unknownBudget, s.tierBudgets < settings.maxTierBudgets,
                   let spec = catalog.instantiate(req.budget), (try? s.allocator.add(spec, now: now)) != nil {
                    s.tierBudgets += 1
                    outcome = s.allocator.acquire(req, now: now)
                }
                switch outcome {
                case .granted(let g), .resent(let g):
                    out.append(g.wire)
                    s.counters.grants += 1
                    s.counters.grantedUnits += g.amount
                case .ignoredStale:
                    out.append(Self.refusal(item, .staleRequest))
                case .unknownBudget:
                    out.append(Self.refusal(item, .unknownBudget))
                    s.counters.rejected["unknown_budget", default: 0] += 1
                }
            }
            return (out, Self.collectPushes(&s))
        }
        for (sink, frame) in pushes { sink.send(frame) }
        return .grants(grants)
    }

    /// An answer that grants nothing, saying why.
    private static func refusal(_ item: Allot_V1_Acquire, _ outcome: Allot_V1_Grant.Outcome) -> Allot_V1_Grant {
        var g = Allot_V1_Grant()
        g.requestID = item.requestID
        g.budget = item.budget
        g.outcome = outcome
        return g
    }

    /// Applies a batch of releases and reports from `node`.
    public func release(_ items: [Allot_V1_Release], from node: NodeID, now: Instant) {
        let pushes = state.withLock { s -> [(any FrameSink, Allot_V1_Frame)] in
            for item in items {
                switch s.allocator.release(ReleaseRequest(wire: item, node: node), now: now) {
                case .applied: s.counters.releases += 1
                case .clamped:
                    s.counters.releases += 1
                    s.counters.overclaims += 1
                    s.counters.rejected["overclaim", default: 0] += 1
                case .ignoredUnknownLease: s.counters.rejected["unknown_lease", default: 0] += 1
                case .unknownBudget: s.counters.rejected["unknown_budget", default: 0] += 1
                }
            }
            return Self.collectPushes(&s)
        }
        for (sink, frame) in pushes { sink.send(frame) }
    }

    /// Expires leases and rolls windows; call every ~100 ms.
    public func tick(now: Instant) {
        let pushes = state.withLock { s -> [(any FrameSink, Allot_V1_Frame)] in
            _ = s.allocator.tick(now: now)
            return Self.collectPushes(&s)
        }
        for (sink, frame) in pushes { sink.send(frame) }
    }

    private static func collectPushes(_ s: inout State) -> [(any FrameSink, Allot_V1_Frame)] {
        let pushes = s.allocator.takePushes()
        guard !pushes.isEmpty else { return [] }
        var byNode: [NodeID: [Allot_V1_Grant]] = [:]
        for p in pushes { byNode[p.node, default: []].append(p.grant.wire) }
        var out: [(any FrameSink, Allot_V1_Frame)] = []
        for (node, grants) in byNode {
            guard let id = s.nodeConnection[node], let c = s.connections[id] else { continue }
            s.counters.pushes += Int64(grants.count)
            out.append((c.sink, .grants(grants, push: true)))
        }
        return out
    }

    // MARK: observability

    public func status() -> Allot_V1_Frame {
        state.withLock { s in
            var r = Allot_V1_StatusResponse()
            r.coordinatorName = settings.name
            r.connectedNodes = UInt32(s.nodeConnection.count)
            for id in s.allocator.budgetIDs {
                guard let st = s.allocator.status(id) else { continue }
                var b = Allot_V1_BudgetStatus()
                b.budget = id.rawValue
                b.kind = st.kind.name
                b.limit = st.kind.ceiling
                b.pool = st.pool
                b.outstanding = st.outstanding
                b.consumed = st.consumed
                b.holders = UInt32(st.holders)
                b.committedRate = st.committedRate
                b.expiredSpent = st.expiredSpent
                r.budgets.append(b)
            }
            var f = Allot_V1_Frame()
            f.statusResponse = r
            return f
        }
    }

    public func allocatorStatus(_ budget: BudgetID) -> Allocator.Status? {
        state.withLock { $0.allocator.status(budget) }
    }

    public var counters: Counters { state.withLock { $0.counters } }

    public func count(frame kind: String) { state.withLock { $0.counters.framesIn[kind, default: 0] += 1 } }
    public func count(rejected reason: String) { state.withLock { $0.counters.rejected[reason, default: 0] += 1 } }
    public func count(handshakeFailure reason: String) { state.withLock { $0.counters.handshakeFailures[reason, default: 0] += 1 } }
    public func count(frameError reason: String) { state.withLock { $0.counters.frameErrors[reason, default: 0] += 1 } }

    /// Asks every connected peer to go away (graceful shutdown).
    public func drain() {
        let sinks = state.withLock { $0.connections.values.map(\.sink) }
        for sink in sinks {
            sink.send(.error(.shuttingDown, "coordinator shutting down", closing: true))
            sink.close()
        }
    }
}
