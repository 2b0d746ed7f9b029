/// One request in the audit trail: who, what, how much, and what was decided.
/// Written as one JSON line; `prev` chains it to the line before (SHA-256, hex).
public struct AuditRecord: Codable, Hashable, Sendable {
    public var seq: Int64 = 0
    public var prev: String = ""
    /// RFC 3339 with milliseconds, UTC.
    public var time: String
    public var node: String
    public var consumer: String
    /// A prefix of the API key's SHA-256, never the key.
    public var keyID: String
    public var tier: String
    public var route: String
    public var model: String?
    public var reserved: Int64
    public var inputTokens: Int64
    public var outputTokens: Int64
    public var costMicroDollars: Int64
    public var upstreamStatus: Int?
    public var latencyMs: Int64
    /// `admit` or `deny`.
    public var decision: String
    /// The budget that denied, if any.
    public var budget: String?
    public var runaway: Bool
    /// How an admitted request was settled: `usage` (as reported), `bound` (usage never came:
    /// the full reservation), `error` (an error response: one request), `refund` (no response).
    public var settlement: String?
    /// The upstream reported more than the reservation's bound: charged in full all the same
    /// (absent otherwise).
    public var overBound: Bool?
    /// Input tokens the upstream served from its prompt cache (absent when none).
    public var cachedTokens: Int64?
    /// Input tokens written to the upstream's prompt cache (Anthropic; absent when none).
    public var cacheWriteTokens: Int64?
    /// Shadow mode: the budget that would have denied this admitted request (absent otherwise).
    public var wouldDeny: String?

    public init(time: String, node: String, consumer: String, keyID: String, tier: String, route: String,
                model: String?, reserved: Int64, inputTokens: Int64, outputTokens: Int64, costMicroDollars: Int64,
                upstreamStatus: Int?, latencyMs: Int64, decision: String, budget: String?, runaway: Bool,
                settlement: String? = nil, overBound: Bool? = nil, cachedTokens: Int64? = nil,
                cacheWriteTokens: Int64? = nil, wouldDeny: String? = nil) {
        self.time = time
        self.node = node
        self.consumer = consumer
        self.keyID = keyID
        self.tier = tier
        self.route = route
        self.model = model
        self.reserved = reserved
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.costMicroDollars = costMicroDollars
        self.upstreamStatus = upstreamStatus
        self.latencyMs = latencyMs
        self.decision = decision
        self.budget = budget
        self.runaway = runaway
        self.settlement = settlement
        self.overBound = overBound
        self.cachedTokens = cachedTokens
        self.cacheWriteTokens = cacheWriteTokens
        self.wouldDeny = wouldDeny
    }

    /// The record of a torn tail cut at start-up: `budget` names the file and how much was cut.
    public static func cut(bytes: Int, file: String, node: String, time: String) -> AuditRecord {
        AuditRecord(time: time, node: node, consumer: "-", keyID: "-", tier: "-", route: "-", model: nil, reserved: 0,
                    inputTokens: 0, outputTokens: 0, costMicroDollars: 0, upstreamStatus: nil, latencyMs: 0,
                    decision: "audit_cut", budget: "\(file): \(bytes) bytes of a torn last record cut at start-up", runaway: false)
    }

    enum CodingKeys: String, CodingKey {
        case seq, prev, time, node, consumer, tier, route, model, reserved, decision, budget, runaway, settlement
        case keyID = "key_id"
        case inputTokens = "input_tokens"
        case outputTokens = "output_tokens"
        case costMicroDollars = "cost_micro_dollars"
        case upstreamStatus = "upstream_status"
        case latencyMs = "latency_ms"
        case overBound = "over_bound"
        case cachedTokens = "cached_tokens"
        case cacheWriteTokens = "cache_write_tokens"
        case wouldDeny = "would_deny"
    }
}
