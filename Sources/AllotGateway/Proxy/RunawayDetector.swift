import AllotCore
import Foundation

/// Flags a consumer whose request rate jumps above `factor` × its own recent baseline: two
/// exponentially decaying counters per consumer, a short one (`window`) and a long one
/// (`baseline`). A pure state machine; time is passed in.
public struct RunawayDetector: Sendable {
    struct Meter: Sendable {
        var short = 0.0
        var long = 0.0
        var last: Instant
        var flagged = false
    }

    private var meters: [String: Meter] = [:]
    public init() {}

    /// Records one request by `consumer`; returns whether it is a runaway now, and whether the
    /// flag was raised by this request (to count and audit each episode once).
    public mutating func record(_ consumer: String, policy: RunawayPolicy, now: Instant) -> (runaway: Bool, raised: Bool) {
        var m = meters[consumer] ?? Meter(last: now)
        let dt = max(0, (now - m.last).secondsDouble)
        let ws = policy.window.secondsDouble, wl = policy.baseline.secondsDouble
        m.short = m.short * exp(-dt / ws) + 1
        m.long = m.long * exp(-dt / wl) + 1
        m.last = now
        // Rates in requests per second: a decaying count divided by its time constant.
        let shortRate = m.short / ws, longRate = m.long / wl
        let runaway = shortRate > policy.factor * max(longRate, policy.minRate)
        let raised = runaway && !m.flagged
        m.flagged = runaway
        meters[consumer] = m
        return (runaway, raised)
    }

    /// Forgets consumers idle for longer than `idle` (bounded memory).
    public mutating func prune(now: Instant, idle: Duration) {
        meters = meters.filter { now - $0.value.last < idle }
    }
}
