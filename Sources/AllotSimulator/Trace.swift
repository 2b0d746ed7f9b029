/// One request in a demand trace. Every strategy replays the same trace.
public struct Arrival: Sendable {
    /// Arrival time, nanoseconds since the simulation's epoch.
    public var time: Int64
    public var node: Int32
    /// Tokens the request really uses (prompt + output); known only when it ends.
    public var tokens: Int64
    /// A safe upper bound known before the call: prompt bytes (a token is at least one
    /// byte) plus `max_tokens`.
    public var tokensUpperBound: Int64
    /// LiteLLM's estimate: characters / 4 + `max_tokens`.
    public var tokensEstimate: Int64
    /// How long the request is in flight (holds a concurrency permit, awaits settlement).
    public var duration: Int64

    /// What the request costs when it ends.
    var cost: AllotCore.Cost { Cost(requests: 1, tokens: tokens) }
    /// What must be reserved before it starts.
    var bound: AllotCore.Cost { Cost(requests: 1, tokens: tokensUpperBound) }
}

import AllotCore

/// The kinds of text an LLM prompt holds, with how densely each tokenizes. Dense text
/// (code, JSON, CJK) has fewer characters per token than the 4 that estimators assume.
enum TextKind: CaseIterable {
    case english, code, json, cjk
    var charsPerToken: Double {
        switch self {
        case .english: 4.0
        case .code: 2.6
        case .json: 2.2
        case .cjk: 1.3
        }
    }
    var bytesPerChar: Double { self == .cjk ? 3 : 1 }
}
