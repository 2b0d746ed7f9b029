import AllotCore
import AllotWire

/// The lease client's settings, its traffic counters, and how it packs messages into frames.
extension LeaseClient {
    public struct Settings: Sendable {
        /// The shortest time between two polls of the endpoint (polls come when it next has
        /// work, `LeaseEndpoint.nextWake`, and at least once a second).
        public var pollInterval: Duration = .milliseconds(10)
        public var heartbeatInterval: Duration = .seconds(5)
        public var minBackoff: Duration = .milliseconds(50)
        public var maxBackoff: Duration = .seconds(5)
        public var maxItemsPerFrame = WireProtocol.defaultMaxItemsPerFrame
        public init() {}
    }

    /// Messages in each direction, for the "messages per 1,000 requests" figures.
    public struct Traffic: Sendable, Hashable {
        public var framesSent = 0
        public var framesReceived = 0
        public var connects = 0
        public var connectFailures = 0
    }

    /// Batches acquires and releases, many budgets per frame.
    static func frames(for outgoing: [Enforcer.Outgoing], maxItems: Int) -> [Allot_V1_Frame] {
        var acquires: [AcquireRequest] = []
        var releases: [ReleaseRequest] = []
        for m in outgoing {
            switch m {
            case .acquire(let a): acquires.append(a)
            case .release(let r): releases.append(r)
            }
        }
        var frames: [Allot_V1_Frame] = []
        for chunk in stride(from: 0, to: acquires.count, by: maxItems) {
            frames.append(.acquire(Array(acquires[chunk..<min(chunk + maxItems, acquires.count)])))
        }
        for chunk in stride(from: 0, to: releases.count, by: maxItems) {
            frames.append(.release(Array(releases[chunk..<min(chunk + maxItems, releases.count)])))
        }
        return frames
    }
}
