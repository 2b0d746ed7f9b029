/// Max-min fair division of an integer capacity among integer wants (water-filling):
/// nobody gets more than it wants, and nobody can get more without taking from someone
/// who has less. The remainder of an uneven split goes to the largest wants first, ties
/// broken by position, so the result is deterministic.
public enum WaterFill {
    /// Shares for every want; `shares.reduce(0, +) <= capacity`.
    public static func shares(capacity: Int64, wants: [Int64]) -> [Int64] {
        var shares = [Int64](repeating: 0, count: wants.count)
        guard capacity > 0, !wants.isEmpty else { return shares }
        let order = wants.indices.sorted { wants[$0] != wants[$1] ? wants[$0] < wants[$1] : $0 < $1 }
        var remaining = capacity
        var left = Int64(order.count)
        var i = 0
        while i < order.count {
            let idx = order[i]
            let want = max(0, wants[idx])
            let fair = remaining / left
            if want <= fair {
                shares[idx] = want
                remaining -= want
                left -= 1
                i += 1
                continue
            }
            // Everyone from here on wants more than the fair level: split what is left.
            var extra = remaining - fair * left
            for j in stride(from: order.count - 1, through: i, by: -1) {
                let k = order[j]
                shares[k] = fair
                if extra > 0 && shares[k] < wants[k] { shares[k] += 1; extra -= 1 }
            }
            return shares
        }
        return shares
    }
}
