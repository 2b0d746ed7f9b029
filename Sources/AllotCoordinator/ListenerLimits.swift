import AllotCore
import Synchronization

/// Timeouts and caps of the lease listener (docs/security.md). A connection that does not
/// finish its TLS handshake, or send its hello, in time is closed; so is one that sends
/// nothing (not even a heartbeat, every 5 s from nodes) for `idleTimeout`.
public struct ListenerLimits: Sendable, Equatable {
    public var handshakeTimeout: Duration = .seconds(5)
    /// From the end of the handshake to the hello.
    public var helloTimeout: Duration = .seconds(5)
    public var idleTimeout: Duration = .seconds(30)
    /// Open connections in all, and per certificate identity (its SPIFFE URI).
    public var maxConnections = 4096
    public var maxConnectionsPerIdentity = 8
    /// Unsent replies to one peer above `writeHighWatermark` bytes stop reading from it until
    /// they drain below `writeLowWatermark`.
    public var writeLowWatermark = 256 << 10
    public var writeHighWatermark = 1 << 20
    public init() {}
}

/// Warnings about what peers send, at most one per reason per `interval`; the ones held
/// back are counted and reported with the next one let through.
public final class WarningLimiter: Sendable {
    private let interval: Duration
    private let last = Mutex<[String: (at: Instant, suppressed: Int)]>([:])

    public init(interval: Duration = .seconds(1)) { self.interval = interval }

    /// Nil: hold this warning back. Otherwise how many of this reason were held back since.
    public func admit(_ reason: String, now: Instant) -> Int? {
        last.withLock { m in
            if let l = m[reason], now - l.at < interval {
                m[reason]!.suppressed += 1
                return nil
            }
            if m.count > 1024 { m.removeAll() } // reasons are a fixed set; never grows without bound
            let held = m[reason]?.suppressed ?? 0
            m[reason] = (now, 0)
            return held
        }
    }
}
