/// Saturating arithmetic for untrusted counts: a bound that would overflow is Int64.max,
/// which every budget refuses, never a trap or a wrapped small number.
public enum Checked {
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
