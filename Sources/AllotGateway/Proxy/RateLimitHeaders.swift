import AllotCore

/// One budget's standing, as the response headers report it.
public struct BudgetStanding: Hashable, Sendable {
    public var spec: BudgetSpec
    /// What this node can still admit without asking (a lower bound of the fleet's remaining:
    /// other nodes and the coordinator's pool may hold more).
    public var remaining: Int64

    public init(spec: BudgetSpec, remaining: Int64) {
        self.spec = spec
        self.remaining = remaining
    }

    /// The template part of the id (`pro.tpm` of `pro.tpm/consumer=alice`).
    public var policyName: String {
        let raw = spec.id.rawValue
        return String(raw[..<(raw.firstIndex(of: "/") ?? raw.endIndex)])
    }

    /// The budget's limit and window in seconds, for rate and quota budgets.
    func quota(now: Instant) -> (limit: Int64, window: Int64)? {
        switch spec.kind {
        case .rate(let limit, let period, _):
            return (limit, max(1, period.wholeSeconds))
        case .quota(let allowance, let window):
            let w = window.window(containing: now)
            return (allowance, max(1, (w.end - w.start).wholeSeconds))
        case .concurrency:
            return nil
        }
    }

    /// Seconds until `amount` units are available again (at least 1).
    public func secondsUntil(_ amount: Int64, now: Instant) -> Int64 {
        switch spec.kind {
        case .rate(let limit, let period, _):
            let seconds = (Double(max(amount, 1)) * Double(period.nanoseconds) / Double(limit) / 1e9).rounded(.up)
            return max(1, Int64(min(seconds, 1e12)))
        case .quota(_, let window):
            return max(1, (window.window(containing: now).end - now).wholeSeconds)
        case .concurrency:
            return 1
        }
    }

    /// Seconds until the budget is back to its full limit.
    func resetSeconds(now: Instant) -> Int64 {
        switch spec.kind {
        case .rate(let limit, _, _): secondsUntil(max(0, limit - remaining), now: now)
        default: secondsUntil(1, now: now)
        }
    }
}

extension Duration {
    /// Rounded up: a reset or retry time must never be early.
    var wholeSeconds: Int64 { (nanoseconds + 999_999_999) / 1_000_000_000 }
}

/// The rate-limit headers every response carries: the IETF `RateLimit-Policy` / `RateLimit`
/// pair (one item per rate or quota budget) and OpenAI's `x-ratelimit-*-requests` and
/// `x-ratelimit-*-tokens` (from the first rate budget counting requests, and tokens).
public enum RateLimitHeaders {
    public static func make(_ standings: [BudgetStanding], now: Instant) -> [(String, String)] {
        var out: [(String, String)] = []
        var policy: [String] = [], state: [String] = []
        for s in standings {
            guard let q = s.quota(now: now) else { continue }
            policy.append("\"\(s.policyName)\";q=\(q.limit);w=\(q.window)")
            state.append("\"\(s.policyName)\";r=\(max(0, s.remaining));t=\(s.resetSeconds(now: now))")
        }
        if !policy.isEmpty {
            out.append(("RateLimit-Policy", policy.joined(separator: ", ")))
            out.append(("RateLimit", state.joined(separator: ", ")))
        }
        func pick(_ units: Set<Unit>) -> BudgetStanding? {
            standings.first { if case .rate = $0.spec.kind { units.contains($0.spec.unit) } else { false } }
                ?? standings.first { if case .quota = $0.spec.kind { units.contains($0.spec.unit) } else { false } }
        }
        for (suffix, units) in [("requests", Set([Unit.requests])), ("tokens", Set([.tokens, .inputTokens, .outputTokens]))] {
            guard let s = pick(units), let q = s.quota(now: now) else { continue }
            out.append(("x-ratelimit-limit-\(suffix)", "\(q.limit)"))
            out.append(("x-ratelimit-remaining-\(suffix)", "\(max(0, s.remaining))"))
            out.append(("x-ratelimit-reset-\(suffix)", openAIDuration(seconds: s.resetSeconds(now: now))))
        }
        return out
    }

    /// OpenAI's reset format: `1s`, `6m0s`, `2h3m0s`.
    public static func openAIDuration(seconds: Int64) -> String {
        let h = seconds / 3600, m = (seconds % 3600) / 60, s = seconds % 60
        if h > 0 { return "\(h)h\(m)m\(s)s" }
        if m > 0 { return "\(m)m\(s)s" }
        return "\(s)s"
    }
}
