import AllotCluster
import AllotCoordination
import AllotCore
import AllotWire

/// The coordinator machine's answers and status in wire terms.
extension CoordinatorMachine.Answer {
    public var wire: Allot_V1_Grant {
        switch self {
        case .grant(let g): return g.wire
        case .retryLater(let g, let after):
            var w = g.wire
            w.outcome = .unavailable
            w.retryAfterNs = after.nanoseconds
            return w
        case .redirect(let id, let budget, let owner):
            var w = Self.refusal(id, budget, .notOwner)
            w.owner = owner.wire
            return w
        case .unavailable(let id, let budget, let after):
            var w = Self.refusal(id, budget, .unavailable)
            w.retryAfterNs = after.nanoseconds
            return w
        case .unknownBudget(let id, let budget): return Self.refusal(id, budget, .unknownBudget)
        case .stale(let id, let budget): return Self.refusal(id, budget, .staleRequest)
        }
    }

    /// An answer that grants nothing, saying why.
    private static func refusal(_ requestID: UInt64, _ budget: BudgetID, _ outcome: Allot_V1_Grant.Outcome) -> Allot_V1_Grant {
        var g = Allot_V1_Grant()
        g.requestID = requestID
        g.budget = budget.rawValue
        g.outcome = outcome
        return g
    }
}

extension Allot_V1_BudgetStatus {
    init(_ id: BudgetID, _ st: Allocator.Status) {
        self.init()
        budget = id.rawValue
        kind = st.kind.name
        limit = st.kind.ceiling
        pool = st.pool
        outstanding = st.outstanding
        consumed = st.consumed
        holders = UInt32(clamping: st.holders)
        committedRate = st.committedRate
        expiredSpent = st.expiredSpent
        learning = st.learning
        heldAvailable = st.heldAvailable
    }
}

extension Allot_V1_Frame {
    /// The coordinator's answer to a hello: its name, limits and lease terms.
    static func helloAck(_ settings: CoordinatorCore.Settings) -> Allot_V1_Frame {
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
        return f
    }
}
