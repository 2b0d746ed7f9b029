/// The write-ahead of durable grants: a grant on a ledger-backed quota is held until the
/// ledger has its record, then sent; a grant the ledger refused (another coordinator reached
/// the cap) or never recorded (the write failed) is taken back and the node told so. A retry
/// of a held request is not served twice. Pure: the coordinator's shell writes the ledger and
/// sends the answers.
public struct DurableGrants: Sendable {
    /// A grant waiting for its ledger record.
    public struct Held: Sendable, Hashable {
        public var node: NodeID
        public var grant: Grant
        public var windowStart: Instant
        /// The node's life it was made for (not sent to a later one).
        public var life: UInt64
        public init(node: NodeID, grant: Grant, windowStart: Instant, life: UInt64) {
            self.node = node
            self.grant = grant
            self.windowStart = windowStart
            self.life = life
        }
    }

    /// What a node is told about a held grant once the ledger answered.
    public enum Answer: Sendable, Hashable {
        /// Recorded: the grant goes out as made.
        case grant(Grant)
        /// Refused under the cap: the lease stands, nothing was added (amount 0).
        case nothing(Grant)
        /// The write failed: ask again after `retryAfter` (the grant was taken back).
        case retryLater(Grant, retryAfter: Duration)
    }

    /// What to do after the ledger answered a write.
    public struct Outcome: Sendable {
        /// Answers per node, in the order the grants were held.
        public var answers: [(node: NodeID, answer: Answer)] = []
        /// Grants to take back from the allocator (`exhausted`: nothing is left to grant).
        public var revoke: [(held: Held, exhausted: Bool)] = []
        /// Releases and reports of a failed write, to write again (grants left out: taken back).
        public var retry: [LedgerChange] = []
    }

    private struct Key: Hashable, Sendable {
        var node: NodeID
        var budget: BudgetID
        var requestID: UInt64
    }

    private var inFlight: Set<Key> = []
    /// How long a node waits before asking again after a failed ledger write.
    public var retryAfter: Duration = .milliseconds(200)

    public init() {}

    /// Whether `node`'s request `requestID` on `budget` has a grant waiting for its record (a
    /// retry of it is answered by that grant when it goes out, not served again).
    public func isWaiting(node: NodeID, budget: BudgetID, requestID: UInt64) -> Bool {
        inFlight.contains(Key(node: node, budget: budget, requestID: requestID))
    }

    /// Holds `grant` for `node` until the ledger answers.
    public mutating func hold(_ grant: Grant, node: NodeID, windowStart: Instant, life: UInt64) -> Held {
        inFlight.insert(Key(node: node, budget: grant.budget, requestID: grant.requestID))
        return Held(node: node, grant: grant, windowStart: windowStart, life: life)
    }

    /// `node` started a new life: its grants still waiting belong to the previous one.
    public mutating func forget(node: NodeID) {
        inFlight = inFlight.filter { $0.node != node }
    }

    /// The ledger answered the write of `journal` with the grants `held` in it: `accepted` per
    /// change (nil: the write failed). `life(node)`: the node's current life.
    public mutating func recorded(_ journal: [LedgerChange], held: [Held], accepted: [Bool]?,
                                  life: (NodeID) -> UInt64) -> Outcome {
        var out = Outcome()
        for h in held {
            inFlight.remove(Key(node: h.node, budget: h.grant.budget, requestID: h.grant.requestID))
            let i = journal.firstIndex { $0.budget == h.grant.budget && $0.windowStart == h.windowStart }
            if let accepted, let i, accepted[i] {
                // A grant for a previous life stays on its retired lease and runs out with it.
                if h.life == life(h.node) { out.answers.append((h.node, .grant(h.grant))) }
                continue
            }
            out.revoke.append((h, accepted != nil))
            var g = h.grant
            g.amount = 0
            out.answers.append((h.node, accepted == nil ? .retryLater(g, retryAfter: retryAfter) : .nothing(g)))
        }
        if accepted == nil {
            out.retry = journal.compactMap { c -> LedgerChange? in
                var c = c
                c.delta.granted = 0
                return c.delta.isZero ? nil : c
            }
        }
        return out
    }
}
