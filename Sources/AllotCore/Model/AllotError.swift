/// The one error shape of every module: a stable code (snake_case, `rawValue`) and a message
/// that names the field or value and says what to do; `underlying` keeps what a system call
/// said. Each module has its own codes (`AllotErrorCode`, `WireErrorCode`, `TransportErrorCode`).
public struct CodedError<Code: ErrorCode>: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: Code
    public var message: String
    public var underlying: String?

    public init(_ code: Code, _ message: String, underlying: String? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        if let underlying { return "\(code): \(message) (\(underlying))" }
        return "\(code): \(message)"
    }
}

/// The codes of one module's errors: stable names, printed as they are.
public protocol ErrorCode: RawRepresentable<String>, Hashable, Sendable, CustomStringConvertible {}

extension ErrorCode {
    public var description: String { rawValue }
}

/// Every error the lease engine can report (budgets, settings, requests).
public typealias AllotError = CodedError<AllotErrorCode>

public enum AllotErrorCode: String, ErrorCode {
    /// A limit, allowance or concurrency ceiling is zero or negative.
    case invalidLimit = "invalid_limit"
    /// A rate budget's burst is below 1.
    case invalidBurst = "invalid_burst"
    /// A period, TTL or interval is zero or negative.
    case invalidDuration = "invalid_duration"
    /// A unit name that Allot does not know.
    case unknownUnit = "unknown_unit"
    /// A budget kind name that Allot does not know.
    case unknownKind = "unknown_kind"
    /// A key dimension name that Allot does not know.
    case unknownDimension = "unknown_dimension"
    /// An IANA time zone identifier that this system's time zone database lacks.
    case unknownTimeZone = "unknown_time_zone"
    /// A calendar window whose reset time does not exist on some day in its time zone.
    case nonexistentWindow = "nonexistent_window"
    /// A single request costs more than the budget could ever allow.
    case costExceedsLimit = "cost_exceeds_limit"
    /// A budget id that is not configured.
    case unknownBudget = "unknown_budget"
    /// A tier name that is not configured.
    case unknownTier = "unknown_tier"
    /// An override names a budget template that the tier does not have.
    case unknownTemplate = "unknown_template"
    /// Two budgets with the same id.
    case duplicateBudget = "duplicate_budget"
    /// Lease or enforcer settings that contradict each other.
    case invalidSettings = "invalid_settings"
    /// More budgets in one admission than the enforcer supports.
    case tooManyBudgets = "too_many_budgets"
}
