import AllotCore
import AllotTransport
import Foundation
import Synchronization

extension CoordinatorCore {
    /// Reads `budget`'s ledger row for its current window (again, backing off, until it is
    /// read or no longer wanted), then hands it to the machine.
    func load(_ budget: BudgetID) {
        guard let ledger else { return }
        Task {
            var backoff = Duration.milliseconds(50)
            while let window = machine({ $0.loadWindow(budget) }) {
                if let row = try? await ledger.store.load(budget, windowStart: window) {
                    return machine { $0.loaded(budget, row: row, now: WallClock.now()) }
                }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(2))
            }
        }
    }

    /// Records `budget`'s making in the ledger with every other claim waiting (one
    /// transaction per batch: a node making thousands of budgets costs a few writes, not one
    /// each), backing off while the ledger does not answer, then tells the machine which are
    /// new. Stops asking for a budget once the machine no longer waits for it.
    func claim(_ budget: BudgetID) {
        guard let ledger, claims.enqueue(budget) else { return }
        let member = settings.member?.name ?? settings.name, kept = settings.allocator.leaseTTL
        Task {
            var backoff = Duration.milliseconds(50)
            while let batch = claims.next(LedgerSchema.claimBatch) {
                let wanted = batch.filter { b in machine { $0.isClaiming(b) } }
                if wanted.isEmpty { continue }
                do {
                    let fresh = try await ledger.store.claim(wanted, member: member, now: WallClock.now(), kept: kept)
                    machine { m in for b in wanted { m.claimed(b, fresh: fresh.contains(b), now: WallClock.now()) } }
                    backoff = .milliseconds(50)
                } catch {
                    claims.putBack(wanted)
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(2))
                }
            }
        }
    }
}

/// Claims waiting for the ledger, and whether a task is sending them.
final class ClaimQueue: Sendable {
    private let state = Mutex<(waiting: [BudgetID], sending: Bool)>(([], false))

    /// Queues `budget`; true when the caller must start the sending task.
    func enqueue(_ budget: BudgetID) -> Bool {
        state.withLock { s in
            s.waiting.append(budget)
            defer { s.sending = true }
            return !s.sending
        }
    }

    /// Up to `limit` waiting claims; nil (the task stops) when none wait.
    func next(_ limit: Int) -> [BudgetID]? {
        state.withLock { s in
            guard !s.waiting.isEmpty else { s.sending = false; return nil }
            let batch = Array(s.waiting.prefix(limit))
            s.waiting.removeFirst(batch.count)
            return batch
        }
    }

    func putBack(_ budgets: [BudgetID]) { state.withLock { $0.waiting.insert(contentsOf: budgets, at: 0) } }
}
