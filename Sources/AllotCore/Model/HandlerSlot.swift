import Synchronization

/// A callback set by one part and called by another from any thread (a lease client's wake,
/// a coordinator's timer and gossip).
///
/// Not a `Mutex` holding the closure itself: `withLock` passes its value `inout` across a
/// generic boundary, and Swift writes a closure back through a reabstraction thunk, so every
/// call wrapped the stored closure in two more thunks. Calls got slower with each one
/// (a node's decision p50 on the benchmark's tokens traces went from 3 to 21 µs) and deep enough, in time, to overflow the
/// stack. Kept in a struct, the closure is stored once and never rewrapped.
public final class HandlerSlot<Argument>: Sendable {
    @usableFromInline struct Handler: Sendable {
        @usableFromInline let call: @Sendable (Argument) -> Void
    }
    @usableFromInline let slot = Mutex<Handler?>(nil)

    public init() {}

    /// Replaces the handler (nil: calls do nothing).
    public func set(_ handler: (@Sendable (Argument) -> Void)?) {
        let h = handler.map { Handler(call: $0) }
        slot.withLock { $0 = h }
    }

    /// Calls the handler outside the lock; false when none is set.
    @inlinable @discardableResult
    public func callAsFunction(_ argument: Argument) -> Bool {
        guard let h = slot.withLock({ $0 }) else { return false }
        h.call(argument)
        return true
    }
}
