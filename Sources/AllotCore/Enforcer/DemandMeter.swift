/// Measures a rate (units per second) over the last second in ten 100 ms buckets, with a
/// faster view over the last 300 ms so a sudden burst is seen at once. Fixed size; O(1)
/// amortised per record; no allocation.
public struct DemandMeter: Sendable {
    @usableFromInline static let bucketNs: Int64 = 100_000_000
    @usableFromInline var buckets: InlineArray<10, Int64> = InlineArray(repeating: 0)
    @usableFromInline var current: Int64 = 0 // index of the current bucket (time / width)
    /// Total recorded since the start; for tests and reports.
    @usableFromInline var _total: Int64 = 0
    public var total: Int64 { _total }

    public init() {}

    @inlinable
    mutating func roll(to now: Instant) {
        let b = now.nanoseconds / Self.bucketNs
        if b == current { return }
        if b - current >= 10 || b < current {
            for i in 0..<10 { buckets[i] = 0 }
        } else {
            var k = current + 1
            while k <= b { buckets[Int(k % 10)] = 0; k += 1 }
        }
        current = b
    }

    @inlinable
    public mutating func record(_ amount: Int64, now: Instant) {
        roll(to: now)
        // Each bucket saturates at 2^58 (whatever a peer or an upstream reported): ten of them,
        // or three times ten, still add up without overflow.
        let cap = Self.bucketCap, a = min(max(amount, 0), cap)
        buckets[Int(current % 10)] = min(buckets[Int(current % 10)] + a, cap)
        _total = Checked.add(_total, a)
    }

    @usableFromInline static let bucketCap: Int64 = 1 << 58

    /// True when nothing was recorded in the second before `now` (read without rolling, so a
    /// `now` older than the last record — another thread's clock — changes nothing; it
    /// counts as not quiet).
    public func isQuiet(now: Instant) -> Bool {
        let b = now.nanoseconds / Self.bucketNs
        if b - current >= 10 { return true }
        if b < current { return _total == 0 }
        var k = max(current - 9, b - 9)
        while k <= current {
            if buckets[Int(((k % 10) + 10) % 10)] != 0 { return false }
            k += 1
        }
        return true
    }

    /// Units per second over the last 300 ms only: quick to see a drop.
    public mutating func recentRate(now: Instant) -> Int64 {
        roll(to: now)
        var recent: Int64 = 0
        for k in 0..<3 { recent += buckets[Int((current - Int64(k) + 10) % 10)] }
        return recent * 10 / 3
    }

    /// Units per second over the last second (the current bucket included).
    public mutating func average(now: Instant) -> Int64 {
        roll(to: now)
        var sum: Int64 = 0
        for i in 0..<10 { sum += buckets[i] }
        return sum
    }

    /// Units per second: the larger of the 1 s average and the last 300 ms average.
    public mutating func rate(now: Instant) -> Int64 {
        roll(to: now)
        var sum: Int64 = 0
        var recent: Int64 = 0
        for i in 0..<10 {
            sum += buckets[i]
        }
        for k in 0..<3 { recent += buckets[Int((current - Int64(k) + 10) % 10)] }
        return max(sum, recent * 10 / 3)
    }
}
