import AllotCore
import AllotTransport
import Foundation

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

    /// Records `budget`'s making in the ledger (again, backing off, until the ledger answers
    /// or the machine no longer waits for it), then tells the machine whether it is new.
    func claim(_ budget: BudgetID) {
        guard let ledger else { return }
        let member = settings.member?.name ?? settings.name
        Task {
            var backoff = Duration.milliseconds(50)
            while machine({ $0.isClaiming(budget) }) {
                if let fresh = try? await ledger.store.claim(budget, member: member, now: WallClock.now(), kept: settings.allocator.leaseTTL) {
                    return machine { $0.claimed(budget, fresh: fresh, now: WallClock.now()) }
                }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(2))
            }
        }
    }
}
