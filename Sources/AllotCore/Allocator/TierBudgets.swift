/// The coordinator's books on budgets made from tier templates the first time a node asks
/// (`pro.tpm/consumer=alice`): how many there are, in all, per tier and per node that made
/// them, and when each was last used, so a node cannot fill the table and lock every new
/// consumer out, and idle ones are retired. A pure value: the time is passed in.
public struct TierBudgets: Sendable {
    public struct Limits: Sendable, Equatable {
        public var total = 100_000
        public var perTier = 100_000
        /// Budgets one node may have caused to be made (and not yet retired).
        public var perNode = 20_000
        public init() {}
    }

    /// Why a tier budget was not made.
    public enum Refusal: String, Sendable {
        case total = "tier_budgets_total_cap"
        case tier = "tier_budgets_per_tier_cap"
        case node = "tier_budgets_per_node_cap"
    }

    public let limits: Limits
    public private(set) var count = 0
    private var byTier: [Substring: Int] = [:]
    private var byNode: [NodeID: Int] = [:]
    private var made: [BudgetID: (node: NodeID, lastUsed: Instant)] = [:]

    public init(limits: Limits = Limits()) { self.limits = limits }

    static func tier(_ id: BudgetID) -> Substring {
        // An Envoy rule's budget counts under its domain (`envoy:<domain>`): values a client
        // picks fill that domain's share, not another tier's.
        if id.rawValue.hasPrefix(DescriptorRules.prefix) { return id.rawValue.prefix { $0 != "|" } }
        return id.rawValue.prefix { $0 != "." && $0 != "/" }
    }

    /// Nil when `node` may make `id` now; otherwise which cap stops it.
    public func refusal(_ id: BudgetID, by node: NodeID) -> Refusal? {
        if count >= limits.total { return .total }
        if byTier[Self.tier(id), default: 0] >= limits.perTier { return .tier }
        if byNode[node, default: 0] >= limits.perNode { return .node }
        return nil
    }

    public mutating func made(_ id: BudgetID, by node: NodeID, now: Instant) {
        guard made[id] == nil else { return }
        made[id] = (node, now)
        count += 1
        byTier[Self.tier(id), default: 0] += 1
        byNode[node, default: 0] += 1
    }

    public func contains(_ id: BudgetID) -> Bool { made[id] != nil }

    /// A node acquired or released on `id`.
    public mutating func used(_ id: BudgetID, now: Instant) {
        guard count > 0 else { return } // no tier budgets: no hashing of the id per item
        made[id]?.lastUsed = now
    }

    /// `id` is gone (retired, or handed to another coordinator).
    public mutating func removed(_ id: BudgetID) {
        guard let m = made.removeValue(forKey: id) else { return }
        count -= 1
        byTier[Self.tier(id), default: 1] -= 1
        if byTier[Self.tier(id)] == 0 { byTier[Self.tier(id)] = nil }
        byNode[m.node, default: 1] -= 1
        if byNode[m.node] == 0 { byNode[m.node] = nil }
    }

    /// Tier budgets unused since before `cutoff(id)` (nil: keep it), at most `limit` (in no
    /// particular order: the rest go on a later call).
    public func idle(limit: Int, cutoff: (BudgetID) -> Instant?) -> [BudgetID] {
        var out: [BudgetID] = []
        for (id, m) in made {
            guard let c = cutoff(id), m.lastUsed < c else { continue }
            out.append(id)
            if out.count >= limit { break }
        }
        return out
    }
}
