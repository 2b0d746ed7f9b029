/// One-way message delay and loss between nodes and the coordinator.
public struct NetworkModel: Hashable, Sendable {
    /// Mean one-way latency and the half-width of its uniform jitter.
    public var latency: Duration
    public var jitter: Duration
    /// Probability that a message is lost, in [0, 1).
    public var loss: Double

    public init(latency: Duration = .microseconds(500), jitter: Duration = .microseconds(100), loss: Double = 0) {
        self.latency = latency
        self.jitter = jitter
        self.loss = loss
    }

    /// The delivery delay for one message in nanoseconds, or nil when it is lost.
    func delay(_ rng: inout SimRandom) -> Int64? {
        if loss > 0 && rng.unit() < loss { return nil }
        let j = jitter.nanoseconds
        let base = latency.nanoseconds
        if j == 0 { return base }
        return max(1, base + Int64((rng.unit() * 2 - 1) * Double(j)))
    }
}
