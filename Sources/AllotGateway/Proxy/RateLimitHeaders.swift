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
/// `x-ratelimit-*-tokens` (from the first rate budget counting requests, and tokens), or on
/// Anthropic's route its `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` with
/// the reset as an RFC 3339 time, as Anthropic's SDKs read it.
public enum RateLimitHeaders {
    public static func make(_ standings: [BudgetStanding], now: Instant, anthropic: Bool = false) -> [(String, String)] {
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
            let reset = s.resetSeconds(now: now)
            if anthropic {
                out.append(("anthropic-ratelimit-\(suffix)-limit", "\(q.limit)"))
                out.append(("anthropic-ratelimit-\(suffix)-remaining", "\(max(0, s.remaining))"))
                out.append(("anthropic-ratelimit-\(suffix)-reset", rfc3339(now + .seconds(reset))))
            } else {
                out.append(("x-ratelimit-limit-\(suffix)", "\(q.limit)"))
                out.append(("x-ratelimit-remaining-\(suffix)", "\(max(0, s.remaining))"))
                out.append(("x-ratelimit-reset-\(suffix)", openAIDuration(seconds: reset)))
            }
        }
        return out
    }

    /// `2026-12-03T10:17:12Z`: whole seconds, rounded up (a reset must never be early), UTC.
    public static func rfc3339(_ t: Instant) -> String {
        let secs = t.nanoseconds / 1_000_000_000 + (t.nanoseconds % 1_000_000_000 > 0 ? 1 : 0)
        let days = secs >= 0 ? secs / 86_400 : (secs - 86_399) / 86_400
        let rem = secs - days * 86_400
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(y)-\(two(m))-\(two(d))T\(two(rem / 3600)):\(two(rem % 3600 / 60)):\(two(rem % 60))Z"
    }

    /// OpenAI's reset format: `1s`, `6m0s`, `2h3m0s`.
    public static func openAIDuration(seconds: Int64) -> String {
        let h = seconds / 3600, m = (seconds % 3600) / 60, s = seconds % 60
        if h > 0 { return "\(h)h\(m)m\(s)s" }
        if m > 0 { return "\(m)m\(s)s" }
        return "\(s)s"
    }
}
