import Synchronization

/// An `Enforcer` shared by the threads of a gateway: every call takes a `Mutex` around the
/// state machine for a few dozen nanoseconds, never an actor hop, never I/O.
public final class SharedEnforcer: Sendable {
    @usableFromInline let state: Mutex<Enforcer>
    @usableFromInline let pollWanted = HandlerSlot<Void>()

    public init(settings: EnforcerSettings) throws(AllotError) {
        state = Mutex(try Enforcer(settings: settings))
    }

    @discardableResult
    public func register(_ spec: BudgetSpec) -> BudgetHandle {
        state.withLock { $0.register(spec) }
    }

    /// Called (outside the lock) after a `reserve`, `admit` or `settle` that set
    /// `Enforcer.wantsPoll` (it was clear before): a slice ran low, a budget has no lease, a
    /// debt is owed, or the first event after `nextWake` found nothing to watch. The lease
    /// client polls soon then, instead of on a fixed timer.
    public func onWantsPoll(_ handler: (@Sendable () -> Void)?) {
        pollWanted.set(handler.map { h in { @Sendable _ in h() } })
    }

    @usableFromInline
    func wantsPoll() {
        pollWanted(())
    }

    /// See `Enforcer.reserve`. Allocation-free.
    @inlinable
    public func reserve(_ cost: Cost, on set: BudgetSet, now: Instant) -> Decision {
        let (d, wants) = withEnforcer { e in
            let before = e.wantsPoll
            return (e.reserve(cost, on: set, now: now), !before && e.wantsPoll)
        }
        if wants { wantsPoll() }
        return d
    }

    /// See `Enforcer.settle`. Allocation-free.
    @inlinable
    public func settle(_ r: Reservation, actual: Cost, now: Instant) {
        let wants = withEnforcer { e in
            let before = e.wantsPoll
            e.settle(r, actual: actual, now: now)
            return !before && e.wantsPoll
        }
        if wants { wantsPoll() }
    }

    /// See `Enforcer.admit`. Allocation-free.
    @inlinable
    public func admit(_ cost: Cost, on set: BudgetSet, now: Instant) -> Decision {
        let (d, wants) = withEnforcer { e in
            let before = e.wantsPoll
            return (e.admit(cost, on: set, now: now), !before && e.wantsPoll)
        }
        if wants { wantsPoll() }
        return d
    }

    /// Runs `body` on the state machine under the lock (poll, receive, tick, shutdown, status).
    @inlinable
    public func withEnforcer<T>(_ body: (inout Enforcer) throws -> T) rethrows -> T {
        try lock(body)
    }

    /// Inlinable, so the hot path's lock is specialized where it is used (unspecialized, a
    /// decision looked up its result type's metadata at run time).
    @inlinable
    func lock<T>(_ body: (inout Enforcer) throws -> T) rethrows -> T {
        try state.withLock { try body(&$0) }
    }
}
