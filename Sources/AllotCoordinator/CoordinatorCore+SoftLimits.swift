import AllotCore
import Logging

/// Soft limits, the coordinator's side: a log event per crossing (the machine decides them,
/// once per window; `/metrics` shows their counts and the budgets above a soft limit now).
extension CoordinatorCore {
    static let softLimitLogger = Logger(label: "allot.soft-limits")

    static func log(_ crossings: [SoftLimits.Crossing]) {
        for c in crossings {
            softLimitLogger.warning("soft limit crossed", metadata: [
                "allot.budget": "\(c.budget)", "allot.percent": "\(c.percent)", "allot.used": "\(c.used)",
                "allot.limit": "\(c.limit)", "allot.window_start_ns": "\(c.windowStart.nanoseconds)",
            ])
        }
    }

    /// Crossings reported since start, by budget and percent; and the budgets above one of
    /// their soft limits in their current window, with the highest percent crossed.
    public func softLimitCounts() -> [BudgetID: [Int: Int64]] { machine { $0.softLimits.counts } }
    public func softLimitLevels(now: Instant) -> [(budget: BudgetID, percent: Int)] { machine { $0.softLimits.levels(now: now) } }
}
