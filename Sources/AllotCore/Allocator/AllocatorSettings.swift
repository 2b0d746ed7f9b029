/// How the coordinator sizes and times leases. Validated once, at start.
public struct AllocatorSettings: Hashable, Sendable {
    /// How long a lease lives unless renewed. Also the longest lease any node can hold,
    /// hence the length of learning mode after an ownership change.
    public var leaseTTL: Duration = .seconds(10)
    /// How often a busy node is expected to come back; a slice is sized to last this long.
    public var refreshInterval: Duration = .seconds(1)
    /// Smallest grant worth a message (a grant is smaller only when that is all that is left).
    public var minSlice: Int64 = 1
    /// Largest single grant.
    public var maxSlice: Int64 = .max
    /// A node silent for this long no longer counts towards fair shares.
    public var demandMemory: Duration = .seconds(3)
    /// A node short of concurrency permits while others hold some free is told to ask again
    /// after this long: the free ones are being recalled for it (a round trip or two).
    public var recallRetry: Duration = .milliseconds(10)

    public init() {}

    public func validate() throws(AllotError) {
        guard leaseTTL > .zero else {
            throw AllotError(.invalidDuration, "lease.ttl must be positive (got \(leaseTTL))")
        }
        guard refreshInterval > .zero, refreshInterval < leaseTTL else {
            throw AllotError(.invalidSettings, "lease.refresh_interval must be positive and shorter than lease.ttl (got \(refreshInterval) with ttl \(leaseTTL))")
        }
        guard minSlice >= 1, maxSlice >= minSlice else {
            throw AllotError(.invalidSettings, "lease.min_slice must be ≥ 1 and ≤ lease.max_slice (got \(minSlice)…\(maxSlice))")
        }
        guard demandMemory > .zero else {
            throw AllotError(.invalidDuration, "lease.demand_memory must be positive (got \(demandMemory))")
        }
    }
}
