/// What a strategy decided for one request of the trace.
public struct Outcome: Sendable {
    /// When the decision took effect (the request started), ns since the epoch.
    public var time: Int64
    public var admitted: Bool
    /// When the request stopped holding a concurrency permit (end, or abort).
    public var end: Int64
    /// How long the request waited for its decision, ns (a round trip for a central counter).
    public var wait: Int64 = 0

    static let undecided = Outcome(time: -1, admitted: false, end: -1)
}

/// A strategy's whole run: one outcome per arrival, and what it cost in messages.
public struct StrategyRun: Sendable {
    public var name: String
    public var outcomes: [Outcome]
    /// Messages between nodes and the coordinator (or Redis calls), sent, lost ones included.
    public var messages: Int
    /// `regions`: of those, the ones between regions.
    public var crossRegionMessages = 0
    /// The first broken allocator/enforcer invariant seen while running, if any.
    public var invariantViolation: String?
    /// A breakdown of the messages, for humans.
    public var detail: String?
    /// Window counters: see `StrategyMetrics.ownWindowExcess`.
    public var ownWindowExcess: Double?
}
