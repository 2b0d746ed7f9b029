import AllotCore

/// Seconds since the epoch as an Instant (tests only).
func at(_ seconds: Double) -> Instant { Instant(seconds: seconds) }

func rateBudget(_ id: String = "r", limit: Int64 = 1000, period: Duration = .seconds(1), burst: Int64 = 1000,
                failMode: FailMode = .closed) -> BudgetSpec {
    try! BudgetSpec(id: BudgetID(id), unit: .tokens, kind: .rate(limit: limit, period: period, burst: burst), failMode: failMode)
}

func quotaBudget(_ id: String = "q", allowance: Int64 = 1000, window: CalendarWindow = try! CalendarWindow(.minute),
                 failMode: FailMode = .closed) -> BudgetSpec {
    try! BudgetSpec(id: BudgetID(id), unit: .tokens, kind: .quota(allowance: allowance, window: window), failMode: failMode)
}

func concurrencyBudget(_ id: String = "c", limit: Int64 = 4, failMode: FailMode = .closed) -> BudgetSpec {
    try! BudgetSpec(id: BudgetID(id), unit: .requests, kind: .concurrency(limit: limit), failMode: failMode)
}

func grant(_ o: Allocator.AcquireOutcome) -> Grant? {
    if case .granted(let g) = o { return g }
    return nil
}

extension Cost {
    static func tokens(_ n: Int64) -> Cost { Cost(requests: 1, tokens: n) }
}
