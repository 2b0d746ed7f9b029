/// What a budget counts. All amounts are integers (`Int64`): no floating-point drift
/// can creep into a ledger.
public enum Unit: String, CaseIterable, Hashable, Sendable, Codable {
    case requests
    case tokens
    case inputTokens = "input_tokens"
    case outputTokens = "output_tokens"
    case microDollars = "micro_dollars"

    /// Parses a unit name as written in configuration.
    public init(parsing name: String) throws(AllotError) {
        guard let unit = Unit(rawValue: name) else {
            let known = Unit.allCases.map(\.rawValue).joined(separator: ", ")
            throw AllotError(.unknownUnit, "unknown unit '\(name)'; use one of: \(known)")
        }
        self = unit
    }
}

/// What one request costs, in every unit at once. A request is charged to several
/// budgets, each of which reads the amount for its own unit.
public struct Cost: Hashable, Sendable {
    public var requests: Int64
    public var tokens: Int64
    public var inputTokens: Int64
    public var outputTokens: Int64
    public var microDollars: Int64

    @inlinable
    public init(requests: Int64 = 1, tokens: Int64 = 0, inputTokens: Int64 = 0,
                outputTokens: Int64 = 0, microDollars: Int64 = 0) {
        self.requests = requests
        self.tokens = tokens
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.microDollars = microDollars
    }

    /// One request and nothing else.
    public static let oneRequest = Cost()

    @inlinable
    public subscript(unit: Unit) -> Int64 {
        switch unit {
        case .requests: requests
        case .tokens: tokens
        case .inputTokens: inputTokens
        case .outputTokens: outputTokens
        case .microDollars: microDollars
        }
    }
}
