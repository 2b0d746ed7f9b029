import AllotCore
import NIOCore
import Synchronization

/// Runs a state machine's step when it next has work, not on a fixed poll: one timer on an
/// event loop, moved earlier whenever an event brings the next deadline forward. The
/// coordinator's tick follows `CoordinatorMachine.nextWake` (a lease's expiry, a window's
/// end, the end of learning, a retirement round); the cluster's gossip `Membership.nextWake`;
/// a node's poll `Enforcer.nextWake`. A busy coordinator ticks at most once per `spacing` (the work of deadlines close
/// together is done in one tick, and its pushes leave together, as with the fixed 100 ms poll
/// this replaces); an idle one at least once per `longest` (the wall clock the deadlines are
/// in may step, the event loop's does not; and a status shows the books as of the last tick).
public final class WakeTimer: Sendable {
    private struct Armed: Sendable {
        var at: Instant = .distantFuture
        var generation: UInt64 = 0
        var task: Scheduled<Void>?
        var stopped = false
        var lastFire: Instant = .zero
    }

    private let state = Mutex(Armed())
    private let loop: any EventLoop
    private let fire: @Sendable (Instant) -> Void
    public let spacing: Duration
    public let longest: Duration

    public init(loop: any EventLoop, spacing: Duration = .milliseconds(100), longest: Duration = .seconds(1),
         fire: @escaping @Sendable (Instant) -> Void) {
        self.loop = loop
        self.spacing = spacing
        self.longest = longest
        self.fire = fire
    }

    /// The machine's next deadline after an event: arms the timer when it is earlier than the
    /// one armed (a later one waits: the armed wake-up will offer it again).
    public func offer(_ at: Instant) {
        let now = WallClock.now()
        state.withLock { s in
            // Not sooner than `spacing` after the last tick (a wall clock stepped back cannot
            // push that into the future), not later than `longest` from now.
            let at = min(max(at, min(s.lastFire, now) + spacing), now + longest)
            guard !s.stopped, at < s.at else { return }
            s.task?.cancel()
            s.generation += 1
            s.at = at
            let generation = s.generation
            // The event loop's clock is not the wall clock: 1 ms late rather than early.
            let delay = max(.zero, at - now) + .milliseconds(1)
            s.task = loop.scheduleTask(in: .nanoseconds(delay.nanoseconds)) { [weak self] in self?.fired(generation) }
        }
    }

    private func fired(_ generation: UInt64) {
        let current = state.withLock { s -> Bool in
            guard s.generation == generation, !s.stopped else { return false }
            s.at = .distantFuture
            s.task = nil
            s.lastFire = WallClock.now()
            return true
        }
        if current { fire(WallClock.now()) }
    }

    public func stop() {
        state.withLock { s in
            s.stopped = true
            s.task?.cancel()
            s.task = nil
        }
    }
}
