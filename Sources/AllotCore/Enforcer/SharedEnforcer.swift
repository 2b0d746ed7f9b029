import Synchronization

/// An `Enforcer` shared by the threads of a gateway: every call takes a `Mutex` around the
/// state machine for a few dozen nanoseconds, never an actor hop, never I/O.
public final class SharedEnforcer: Sendable {
    private let state: Mutex<Enforcer>

    public init(settings: EnforcerSettings) throws(AllotError) {
        state = Mutex(try Enforcer(settings: settings))
    }

    @discardableResult
    public func register(_ spec: BudgetSpec) -> BudgetHandle {
        state.withLock { $0.register(spec) }
    }

    /// See `Enforcer.reserve`. Allocation-free.
    @inlinable
    public func reserve(_ cost: Cost, on set: BudgetSet, now: Instant) -> Decision {
        withEnforcer { $0.reserve(cost, on: set, now: now) }
    }

    /// See `Enforcer.settle`. Allocation-free.
    @inlinable
    public func settle(_ r: Reservation, actual: Cost, now: Instant) {
        withEnforcer { $0.settle(r, actual: actual, now: now) }
    }

    /// See `Enforcer.admit`. Allocation-free.
    @inlinable
    public func admit(_ cost: Cost, on set: BudgetSet, now: Instant) -> Decision {
        withEnforcer { $0.admit(cost, on: set, now: now) }
    }

    /// Runs `body` on the state machine under the lock (poll, receive, tick, shutdown, status).
    @inlinable
    public func withEnforcer<T>(_ body: (inout Enforcer) throws -> T) rethrows -> T {
        try lock(body)
    }

    @usableFromInline
    func lock<T>(_ body: (inout Enforcer) throws -> T) rethrows -> T {
        try state.withLock { try body(&$0) }
    }
}
