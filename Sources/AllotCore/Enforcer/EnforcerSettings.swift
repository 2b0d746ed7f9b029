/// How a node spends and refills its slices. Validated once, at start.
public struct EnforcerSettings: Hashable, Sendable {
    public var node: NodeID
    /// A slice is sized to last this long at the measured demand (match the coordinator's).
    public var refreshInterval: Duration = .seconds(1)
    /// Refill when what is left would last less than this at the admitted rate.
    public var prefetchLead: Duration = .milliseconds(100)
    /// Re-send an unanswered acquire (same request id) after this long.
    public var retryTimeout: Duration = .milliseconds(200)
    /// Renew a lease this long before it ends, while there is demand.
    public var renewMargin: Duration = .seconds(3)
    /// Give everything back once demand has been zero this long.
    public var idleRelease: Duration = .seconds(2)
    /// The lease TTL the coordinators use; the `static` fail mode's allowance is per TTL.
    public var leaseTTL: Duration = .seconds(10)

    public init(node: NodeID) { self.node = node }

    public func validate() throws(AllotError) {
        for (name, d) in [("refresh_interval", refreshInterval), ("prefetch_lead", prefetchLead),
                          ("retry_timeout", retryTimeout), ("renew_margin", renewMargin),
                          ("idle_release", idleRelease), ("lease_ttl", leaseTTL)] where d <= .zero {
            throw AllotError(.invalidDuration, "node.\(name) must be positive (got \(d))")
        }
        guard renewMargin < leaseTTL else {
            throw AllotError(.invalidSettings, "node.renew_margin (\(renewMargin)) must be shorter than node.lease_ttl (\(leaseTTL))")
        }
    }
}
