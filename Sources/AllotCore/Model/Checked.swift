/// Saturating arithmetic for untrusted counts: a bound that would overflow is Int64.max,
/// which every budget refuses, never a trap or a wrapped small number.
public enum Checked {
    /// The largest count of units any message may carry (2^62): two of them add up without
    /// overflow. Counts from peers are refused or clamped to 0...maxUnits before use.
    public static let maxUnits: Int64 = 1 << 62

    /// `v` within 0...maxUnits.
    @inlinable public static func units(_ v: Int64) -> Int64 { min(max(v, 0), maxUnits) }

    /// `a + b`, saturating (the two-term `sum`, for hot paths).
    @inlinable public static func add(_ a: Int64, _ b: Int64) -> Int64 {
        let (v, o) = a.addingReportingOverflow(b)
        return o ? (b > 0 ? .max : .min) : v
    }

    /// `a − b`, saturating.
    @inlinable public static func difference(_ a: Int64, _ b: Int64) -> Int64 {
        let (v, o) = a.subtractingReportingOverflow(b)
        return o ? (b < 0 ? .max : .min) : v
    }

    public static func product(_ a: Int64, _ b: Int64) -> Int64 {
        let (v, o) = a.multipliedReportingOverflow(by: b)
        return o ? ((a < 0) != (b < 0) ? .min : .max) : v
    }

    public static func sum(_ values: Int64...) -> Int64 {
        var total: Int64 = 0
        for v in values {
            let (s, o) = total.addingReportingOverflow(v)
            if o { return v > 0 ? .max : .min }
            total = s
        }
        return total
    }
}
