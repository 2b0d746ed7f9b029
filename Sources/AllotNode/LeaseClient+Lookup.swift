import AllotCore
import AllotTransport
import AllotWire
import Foundation
import Synchronization

/// Reading budgets' books at their coordinators (a gateway's `GET /v1/allot/usage`): one
/// `status_request` naming the budgets per owning coordinator, answered by a `status_response`
/// that echoes its `query_id`. Nothing here touches leases.
extension LeaseClient {
    /// What the coordinators answered: the books they hold, and every budget whose coordinator
    /// answered (one in `answered` but not in `books` has no books there: never asked for
    /// since that coordinator took it, or retired).
    public struct Lookup: Sendable {
        public var books: [BudgetID: Allot_V1_BudgetStatus] = [:]
        public var answered: Set<BudgetID> = []
        public init() {}
    }

    /// The coordinators' books for `budgets`, asked of each budget's owner at once and waited
    /// for at most `timeout`. A budget whose coordinator is not connected or did not answer in
    /// time is in neither part of the answer.
    public func lookup(_ budgets: [BudgetID], timeout: Duration = .seconds(1)) async -> Lookup {
        var byAddress: [String: (connection: any LeaseConnection, budgets: [String])] = [:]
        for b in Set(budgets) {
            guard let (address, connection) = connection(for: b) else { continue }
            byAddress[address, default: (connection, [])].budgets.append(b.rawValue)
        }
        let chunk = max(1, settings.maxItemsPerFrame)
        var asks: [(any LeaseConnection, [String])] = []
        for (connection, names) in byAddress.values {
            let sorted = names.sorted()
            for start in stride(from: 0, to: sorted.count, by: chunk) {
                asks.append((connection, Array(sorted[start..<min(start + chunk, sorted.count)])))
            }
        }
        let lookups = self.lookups
        return await withTaskGroup(of: ([String], Allot_V1_StatusResponse?).self) { group in
            for (connection, names) in asks {
                group.addTask {
                    let answer = await lookups.ask(timeout: timeout) { id in
                        var f = Allot_V1_Frame()
                        f.statusRequest.budgets = names
                        f.statusRequest.queryID = id
                        connection.send([f])
                    }
                    return (names, answer)
                }
            }
            var out = Lookup()
            for await (names, response) in group {
                guard let response else { continue }
                let asked = Set(names)
                out.answered.formUnion(names.map { BudgetID($0) })
                // Only what was asked of it: a confused coordinator cannot add budgets.
                for b in response.budgets where asked.contains(b.budget) { out.books[BudgetID(b.budget)] = b }
            }
            return out
        }
    }

    /// A gateway's consumer directory: the version it holds, and what to do with a newer one.
    struct DirectoryHook: Sendable {
        let have: @Sendable () -> UInt64
        let receive: @Sendable (UInt64, Data) -> Void
    }

    /// Asks each coordinator, after hello, for the consumer directory when it holds a newer
    /// version than `have`; `receive` gets each one sent (asked for, or pushed on a change).
    public func onDirectory(have: @escaping @Sendable () -> UInt64, receive: @escaping @Sendable (UInt64, Data) -> Void) {
        directoryHook.withLock { $0 = DirectoryHook(have: have, receive: receive) }
    }

    /// Asks each coordinator, after hello, for the policy (budgets, tiers, models as YAML) when
    /// it holds a newer version than `have`; `receive` gets each one sent.
    public func onConfig(have: @escaping @Sendable () -> UInt64, receive: @escaping @Sendable (UInt64, Data) -> Void) {
        configHook.withLock { $0 = DirectoryHook(have: have, receive: receive) }
    }

    /// The frames that ask for a newer directory and policy (none without the hooks).
    func directoryWish() -> [Allot_V1_Frame] {
        var out: [Allot_V1_Frame] = []
        let hooks = [(directoryHook.withLock { $0 }, false), (configHook.withLock { $0 }, true)]
        for (hook, config) in hooks {
            guard let hook else { continue }
            var f = Allot_V1_Frame()
            f.directoryRequest.have = hook.have()
            f.directoryRequest.config = config
            out.append(f)
        }
        return out
    }

    /// Lookups waiting for their answer, by query id.
    final class Lookups: Sendable {
        private let state = Mutex<(next: UInt64, waiting: [UInt64: CheckedContinuation<Allot_V1_StatusResponse?, Never>])>((1, [:]))

        /// Sends with a fresh query id and waits for its answer, or nil after `timeout`.
        func ask(timeout: Duration, send: @Sendable @escaping (UInt64) -> Void) async -> Allot_V1_StatusResponse? {
            let id = state.withLock { s in
                defer { s.next &+= 1 }
                return s.next
            }
            return await withCheckedContinuation { c in
                state.withLock { $0.waiting[id] = c }
                send(id)
                Task { [weak self] in
                    try? await Task.sleep(for: timeout)
                    self?.finish(id, nil)
                }
            }
        }

        /// An answer arrived (an unknown or late query id is dropped).
        func answer(_ r: Allot_V1_StatusResponse) { finish(r.queryID, r) }

        private func finish(_ id: UInt64, _ r: Allot_V1_StatusResponse?) {
            state.withLock { $0.waiting.removeValue(forKey: id) }?.resume(returning: r)
        }
    }
}
