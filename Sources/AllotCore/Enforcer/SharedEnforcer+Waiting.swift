extension SharedEnforcer {
    /// What `reserve(_:on:deadline:…)` came to.
    public enum Waited: Sendable {
        case admitted(Reservation, at: Instant)
        /// The budget whose denial stands, and its slice then.
        case refused(BudgetHandle, Enforcer.SliceStatus, at: Instant)
    }

    /// Reserves `cost` on `set`, all or nothing, as a gateway or a sidecar does before it
    /// answers. A denial by a slice whose node is asking for a lease (or holds none) is tried
    /// again every millisecond until `deadline` while `mayWait()` (a node with no coordinator
    /// connected has nothing to wait for); a denial by a slice that is not asking, at most 3
    /// times (another request may take a refill that arrived between a denial and the look).
    /// A concurrency slice told to ask again before `deadline` (the coordinator is recalling
    /// free permits for it from other nodes) waits for that answer too.
    /// `poke` asks the lease client to poll now (it decides whether asking is worth it).
    public func reserve(_ cost: Cost, on set: BudgetSet, deadline: Instant, clock: () -> Instant, poke: () -> Void,
                        mayWait: () -> Bool = { true }) async -> Waited {
        var idleRetries = 0
        while true {
            let now = clock()
            switch reserve(cost, on: set, now: now) {
            case .admitted(let reservation): return .admitted(reservation, at: now)
            case .denied(let h):
                poke()
                let status = withEnforcer { $0.status(h) }
                let waiting = status.worthWaiting(now: now, deadline: deadline) && mayWait()
                guard clock() < deadline && (waiting || idleRetries < 3) else { return .refused(h, status, at: now) }
                if !waiting { idleRetries += 1 }
                try? await Task.sleep(for: .milliseconds(1))
            }
        }
    }
}
