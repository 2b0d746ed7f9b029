/// A rate lease's local token bucket: its refill, and which of its two books decides.
extension LocalSlice {
    /// Rate leases, off the hot path: which book decides (`preferNoRefund`), from what is
    /// reserved now and the rate units are admitted at.
    mutating func chooseBook(admittedPerSecond: Int64) {
        guard reserved > 0, rate > 0 else { // (only a bucket has a rate)
            preferNoRefund = false
            return
        }
        // capacity < rate × reserved ÷ admitted, without dividing by an admitted rate of 0.
        let refillPerSecond = Double(rate) * 1e9 / Double(periodNs)
        preferNoRefund = Double(capacity) * Double(max(0, admittedPerSecond)) < refillPerSecond * Double(reserved)
    }

    /// Rate leases: refill the local bucket at the enforced rate, both books: `available` up
    /// to the capacity minus what is reserved (so a later refund can never lift it above the
    /// capacity), `noRefundLevel` up to the capacity (it never gets refunds).
    @inlinable
    mutating func refill(now: Instant) {
        let dt = now.nanoseconds &- lastRefill.nanoseconds
        guard dt > 0 else { return }
        lastRefill = now
        let inside = capacity - reserved - available
        let outside = capacity - noRefundLevel
        let room = max(inside, outside)
        guard room > 0, rate > 0 else {
            refillRemainder = 0
            return
        }
        let add: Int64
        if dt < 1 << 31 && rate < 1 << 31 {
            let x = dt &* rate &+ refillRemainder
            add = x / periodNs
            refillRemainder = x - add &* periodNs
        } else {
            let p = dt.multipliedFullWidth(by: rate)
            let (low, carry) = p.low.addingReportingOverflow(UInt64(refillRemainder))
            let high = p.high &+ (carry ? 1 : 0)
            if high >= periodNs / 2 { // more than any room: full
                add = room
                refillRemainder = 0
            } else {
                let (q, r) = periodNs.dividingFullWidth((high: high, low: low))
                add = q
                refillRemainder = r
            }
        }
        if add >= room { refillRemainder = 0 }
        available += min(add, max(0, inside))
        noRefundLevel += min(add, max(0, outside))
    }

    /// Tokens above a lowered capacity go back to the coordinator with the next message.
    mutating func giveBackAboveCapacity() {
        let back = max(0, min(available, available + reserved - capacity))
        withdraw(back)
        released += back
    }
}
