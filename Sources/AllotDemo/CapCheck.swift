import AllotGateway
import AllotCore
import AllotSimulator

extension BudgetChecker {
    /// Replays what gateways did for `consumers` against `spec`'s exact definition: each
    /// admission at its own time, charged what it finally cost (its settle), in flight until
    /// its settle. Used by the demo's summary and the fleet tests.
    /// `changes`: the budget's limit changed at these instants (`change(to:at:)`).
    public static func replay(_ events: [GatewayEvent], consumers: Set<String>, spec: BudgetSpec,
                              changes: [(at: Instant, spec: BudgetSpec)] = []) -> BudgetChecker {
        let mine = events.filter { consumers.contains($0.consumer) }
        var settles: [String: GatewayEvent] = [:]
        for e in mine where e.kind == .settle { settles["\(e.node)#\(e.id)"] = e }
        let admits = mine.filter { $0.kind == .admit }.sorted { $0.time < $1.time }
        let epoch = admits.first?.time ?? .zero
        var checker = BudgetChecker(spec: spec, epoch: epoch)
        var pending = changes.sorted { $0.at < $1.at }[...]
        for a in admits {
            while let c = pending.first, c.at <= a.time {
                checker.change(to: c.spec, at: max(0, c.at.nanoseconds - epoch.nanoseconds))
                pending = pending.dropFirst()
            }
            let settle = settles["\(a.node)#\(a.id)"]
            let cost = settle?.cost ?? a.cost ?? Cost()
            let end = (settle?.time ?? .distantFuture).nanoseconds - epoch.nanoseconds
            checker.admit(spec.amount(for: cost), at: a.time.nanoseconds - epoch.nanoseconds, end: end)
        }
        return checker
    }
}
