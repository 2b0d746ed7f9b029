import AllotCore
import AllotTransport
import Logging
import Synchronization

/// Group commit in front of a `LedgerStore`: changes submitted while a write is under way
/// wait for the next one, and go in together (one transaction for many grants). Changes to
/// the same budget and window are merged into one row update.
///
/// `submit`'s completion gets, per change, whether its grants were accepted under the cap,
/// or nil when the write failed (the outcome is then unknown: the caller takes its grants
/// back — an over-count in the ledger is safe, a grant without a record is not). After a
/// failure the writer waits (50 ms doubling to 2 s) before the next attempt and reports
/// itself unhealthy until a write succeeds.
public final class LedgerWriter: Sendable {
    public typealias Completion = @Sendable (_ accepted: [Bool]?) -> Void

    public struct Stats: Sendable, Hashable {
        public var commits: Int64 = 0
        public var changes: Int64 = 0
        public var failures: Int64 = 0
        public var healthy = true
        public var lastError = ""
    }

    private struct Pending: Sendable {
        var changes: [LedgerChange]
        var completion: Completion
    }

    private struct State: Sendable {
        var queue: [Pending] = []
        var running = false
        var stats = Stats()
    }

    public let store: any LedgerStore
    private let logger: Logger
    private let state = Mutex(State())

    public init(store: any LedgerStore, logger: Logger = Logger(label: "allot.ledger")) {
        self.store = store
        self.logger = logger
    }

    public var stats: Stats { state.withLock { $0.stats } }
    public var isHealthy: Bool { state.withLock { $0.stats.healthy } }

    public func submit(_ changes: [LedgerChange], completion: @escaping Completion = { _ in }) {
        guard !changes.isEmpty else {
            completion([])
            return
        }
        let start = state.withLock { s -> Bool in
            s.queue.append(Pending(changes: changes, completion: completion))
            defer { s.running = true }
            return !s.running
        }
        if start { Task { await self.drain() } }
    }

    /// Waits until everything submitted so far has been written or has failed.
    public func flush() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let idle = state.withLock { s -> Bool in
                if !s.running { return true }
                s.queue.append(Pending(changes: [], completion: { _ in c.resume() }))
                return false
            }
            if idle { c.resume() }
        }
    }

    private func drain() async {
        var backoff = Duration.milliseconds(50)
        while true {
            let batch = state.withLock { s -> [Pending] in
                defer { s.queue = [] }
                if s.queue.isEmpty { s.running = false }
                return s.queue
            }
            if batch.isEmpty { return }
            // Merge by row; remember where each pending change went.
            var merged: [LedgerChange] = []
            var index: [String: Int] = [:]
            var place: [[Int]] = []
            for p in batch {
                place.append(p.changes.map { c in
                    let key = "\(c.budget.rawValue)\u{0}\(c.windowStart.nanoseconds)"
                    if let i = index[key] {
                        merged[i].delta += c.delta
                        merged[i].allowance = c.allowance
                        return i
                    }
                    index[key] = merged.count
                    merged.append(c)
                    return merged.count - 1
                })
            }
            do {
                let accepted = merged.isEmpty ? [] : try await store.apply(merged, now: WallClock.now())
                state.withLock { s in
                    s.stats.commits += merged.isEmpty ? 0 : 1
                    s.stats.changes += Int64(merged.count)
                    s.stats.healthy = true
                }
                backoff = .milliseconds(50)
                for (p, places) in zip(batch, place) { p.completion(places.map { accepted[$0] }) }
            } catch {
                state.withLock { s in
                    s.stats.failures += 1
                    s.stats.healthy = false
                    s.stats.lastError = "\(error)"
                }
                logger.error("ledger write failed; grants taken back, retrying", metadata: ["allot.error": "\(error)"])
                for p in batch { p.completion(p.changes.isEmpty ? [] : nil) }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(2))
            }
        }
    }
}
