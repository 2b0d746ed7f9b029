import AllotCore
import AllotSimulator

/// The demo's traffic replayed through post-paid counting, as Envoy AI Gateway, Kong and
/// LiteLLM count tokens: a request goes through while the budget's counter is not yet spent,
/// and its tokens are counted only when it ends, so everything in flight when the counter runs
/// out lands above the cap. The counter here is one exact central counter (no sync delay
/// between gateways: kinder to post-paid than a real fleet); the consumer's request-rate
/// budget is counted up front, as every peer counts requests.
enum PostPaid {
    /// A request a consumer sent: when, what the upstream charges for it, how long it takes.
    struct Offered: Sendable {
        var consumer: String
        var at: Instant
        var tokens: Int64
        /// Measured when it was served; else the consumer's mean.
        var seconds: Double?
    }

    /// One admitted request of the replay.
    struct Admitted: Sendable {
        var at: Instant
        var end: Instant
        var tokens: Int64
    }

    /// The requests post-paid counting lets through under `tokens` (a rate budget) and
    /// `requests` (when the consumer has one).
    static func replay(_ offered: [Offered], tokens: BudgetSpec, requests: BudgetSpec?) -> [Admitted] {
        let served = offered.compactMap(\.seconds)
        let mean = served.isEmpty ? 0.1 : served.reduce(0, +) / Double(served.count)
        var tokenBucket = Bucket(tokens)
        var requestBucket = requests.map(Bucket.init)
        var pending: [(end: Instant, tokens: Int64)] = []
        var out: [Admitted] = []
        for o in offered.sorted(by: { $0.at < $1.at }) {
            // Requests that ended before this one arrived are counted now, in end order.
            pending.sort { $0.end < $1.end }
            while let p = pending.first, p.end <= o.at {
                tokenBucket.take(Double(p.tokens), at: p.end)
                pending.removeFirst()
            }
            guard tokenBucket.level(at: o.at) > 0, requestBucket?.level(at: o.at) ?? 1 >= 1 else { continue }
            requestBucket?.take(1, at: o.at)
            let end = Instant(nanoseconds: o.at.nanoseconds + Int64((o.seconds ?? mean) * 1e9))
            pending.append((end, o.tokens))
            out.append(Admitted(at: o.at, end: end, tokens: o.tokens))
        }
        return out
    }

    /// By how much `admitted` exceeds `spec` (tokens; `BudgetChecker`'s measure, as for Allot).
    static func overshoot(_ admitted: [Admitted], spec: BudgetSpec) -> Int64 {
        guard let epoch = admitted.first?.at else { return 0 }
        var checker = BudgetChecker(spec: spec, epoch: epoch)
        for a in admitted {
            checker.admit(a.tokens, at: a.at.nanoseconds - epoch.nanoseconds, end: a.end.nanoseconds - epoch.nanoseconds)
        }
        return checker.excess
    }

    /// A token bucket that may go below zero (a post-paid debt), full at the start.
    struct Bucket {
        var capacity: Double, perSecond: Double, value: Double
        var last: Instant?

        init(_ spec: BudgetSpec) {
            if case .rate(let limit, let period, let burst) = spec.kind {
                capacity = Double(max(burst, 1))
                perSecond = Double(limit) / period.secondsDouble
            } else {
                capacity = .infinity
                perSecond = 0
            }
            value = capacity
        }

        mutating func level(at t: Instant) -> Double {
            if let last, t > last { value = min(capacity, value + perSecond * Double(t.nanoseconds - last.nanoseconds) / 1e9) }
            if last == nil || t > last! { last = t }
            return value
        }

        mutating func take(_ amount: Double, at t: Instant) {
            _ = level(at: t)
            value -= amount
        }
    }
}
