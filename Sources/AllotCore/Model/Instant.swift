/// A point in time, in nanoseconds since the Unix epoch, as read from an injected clock.
///
/// The core never reads a clock itself: every event carries `now`. Lease lifetimes are
/// always *relative* durations (`ttl`), so two clocks that disagree on the absolute time
/// cannot stretch a lease; only the rate at which they run matters.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    @inlinable
    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static let zero = Instant(nanoseconds: 0)
    /// Later than any instant the engine will meet; used for "no deadline".
    public static let distantFuture = Instant(nanoseconds: .max / 2)

    @inlinable
    public static func < (a: Instant, b: Instant) -> Bool { a.nanoseconds < b.nanoseconds }

    @inlinable
    public static func + (a: Instant, d: Duration) -> Instant {
        Instant(nanoseconds: a.nanoseconds &+ d.nanoseconds)
    }

    @inlinable
    public static func - (a: Instant, d: Duration) -> Instant {
        Instant(nanoseconds: a.nanoseconds &- d.nanoseconds)
    }

    @inlinable
    public static func - (a: Instant, b: Instant) -> Duration {
        .nanoseconds(a.nanoseconds &- b.nanoseconds)
    }

    public var seconds: Double { Double(nanoseconds) / 1e9 }

    public init(seconds: Double) { self.nanoseconds = Int64((seconds * 1e9).rounded()) }

    public var description: String { "t=\(seconds)s" }
}

extension Duration {
    /// The duration as whole nanoseconds (sub-nanosecond parts are dropped; saturates).
    @inlinable
    public var nanoseconds: Int64 {
        let c = components
        let (whole, overflow) = c.seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return c.seconds < 0 ? .min / 2 : .max / 2 }
        return whole &+ c.attoseconds / 1_000_000_000
    }

    /// Seconds as a floating-point number, for reporting only (never for accounting).
    public var secondsDouble: Double { Double(nanoseconds) / 1e9 }
}
