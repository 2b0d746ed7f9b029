import AllotCoordination
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

    /// Records that this coordinator made `budget` in the ledger, with every other claim
    /// waiting (one transaction per batch: a node making thousands of budgets costs a few
    /// writes, not one each), then gives the machine each answer. A batch the ledger fails is
    /// answered `.madeBy("")` (learned, as without a ledger): never retried, never blocking.
    func claim(_ budget: BudgetID, generation: UInt64) {
        guard let ledger, claims.enqueue((budget, generation)) else { return }
        let member = settings.member?.name ?? settings.name, kept = settings.allocator.leaseTTL
        Task {
            while let batch = claims.next(LedgerSchema.claimBatch) {
                var wanted: [BudgetID: UInt64] = [:]
                for (b, g) in batch where machine({ $0.isClaiming(b, generation: g) }) { wanted[b] = g }
                if wanted.isEmpty { continue }
                let answers = (try? await ledger.store.claim(Array(wanted.keys), member: member, now: WallClock.now(), kept: kept)) ?? [:]
                machine { m in
                    for (b, g) in wanted { m.claimed(b, generation: g, answers[b] ?? .madeBy(""), now: WallClock.now()) }
                }
            }
        }
    }
}

/// Claims waiting for the ledger, and whether a task is sending them.
final class ClaimQueue: Sendable {
    typealias Claim = (budget: BudgetID, generation: UInt64)
    private let state = Mutex<(waiting: [Claim], sending: Bool)>(([], false))

    /// Queues a claim; true when the caller must start the sending task.
    func enqueue(_ claim: Claim) -> Bool {
        state.withLock { s in
            s.waiting.append(claim)
            defer { s.sending = true }
            return !s.sending
        }
    }

    /// Up to `limit` waiting claims; nil (the task stops) when none wait.
    func next(_ limit: Int) -> [Claim]? {
        state.withLock { s in
            guard !s.waiting.isEmpty else { s.sending = false; return nil }
            let batch = Array(s.waiting.prefix(limit))
            s.waiting.removeFirst(batch.count)
            return batch
        }
    }
}
