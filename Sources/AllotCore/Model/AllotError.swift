/// Every error the lease engine can report: a stable code, a message that says what was
/// wrong and what to do about it, and an optional underlying error.
///
/// The set of codes can grow without breaking callers: `Code` wraps a private enum, so
/// callers compare against the static members (`error.code == .invalidLimit`).
public struct AllotError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidLimit = "invalid_limit"
            case invalidBurst = "invalid_burst"
            case invalidDuration = "invalid_duration"
            case unknownUnit = "unknown_unit"
            case unknownKind = "unknown_kind"
            case unknownDimension = "unknown_dimension"
            case unknownTimeZone = "unknown_time_zone"
            case nonexistentWindow = "nonexistent_window"
            case costExceedsLimit = "cost_exceeds_limit"
            case unknownBudget = "unknown_budget"
            case unknownTier = "unknown_tier"
            case unknownTemplate = "unknown_template"
            case duplicateBudget = "duplicate_budget"
            case invalidSettings = "invalid_settings"
            case tooManyBudgets = "too_many_budgets"
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A limit, allowance or concurrency ceiling is zero or negative.
        public static let invalidLimit = Code(.invalidLimit)
        /// A rate budget's burst is below 1.
        public static let invalidBurst = Code(.invalidBurst)
        /// A period, TTL or interval is zero or negative.
        public static let invalidDuration = Code(.invalidDuration)
        /// A unit name that Allot does not know.
        public static let unknownUnit = Code(.unknownUnit)
        /// A budget kind name that Allot does not know.
        public static let unknownKind = Code(.unknownKind)
        /// A key dimension name that Allot does not know.
        public static let unknownDimension = Code(.unknownDimension)
        /// An IANA time zone identifier that this system's time zone database lacks.
        public static let unknownTimeZone = Code(.unknownTimeZone)
        /// A calendar window whose reset time does not exist on some day in its time zone.
        public static let nonexistentWindow = Code(.nonexistentWindow)
        /// A single request costs more than the budget could ever allow.
        public static let costExceedsLimit = Code(.costExceedsLimit)
        /// A budget id that is not configured.
        public static let unknownBudget = Code(.unknownBudget)
        /// A tier name that is not configured.
        public static let unknownTier = Code(.unknownTier)
        /// An override names a budget template that the tier does not have.
        public static let unknownTemplate = Code(.unknownTemplate)
        /// Two budgets with the same id.
        public static let duplicateBudget = Code(.duplicateBudget)
        /// Lease or enforcer settings that contradict each other.
        public static let invalidSettings = Code(.invalidSettings)
        /// More budgets in one admission than the enforcer supports.
        public static let tooManyBudgets = Code(.tooManyBudgets)

        public var description: String { base.rawValue }
    }

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
