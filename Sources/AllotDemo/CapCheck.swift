import AllotGateway
import AllotCore
import AllotSimulator

extension BudgetChecker {
    /// Replays what gateways did for `consumers` against `spec`'s exact definition: each
    /// admission at its own time, charged what it finally cost (its settle), in flight until
    /// its settle. Used by the demo's summary and the fleet tests.
    public static func replay(_ events: [GatewayEvent], consumers: Set<String>, spec: BudgetSpec) -> BudgetChecker {
        let mine = events.filter { consumers.contains($0.consumer) }
        var settles: [String: GatewayEvent] = [:]
        for e in mine where e.kind == .settle { settles["\(e.node)#\(e.id)"] = e }
        let admits = mine.filter { $0.kind == .admit }.sorted { $0.time < $1.time }
        let epoch = admits.first?.time ?? .zero
        var checker = BudgetChecker(spec: spec, epoch: epoch)
        for a in admits {
            let settle = settles["\(a.node)#\(a.id)"]
            let cost = settle?.cost ?? a.cost ?? Cost()
            let end = (settle?.time ?? .distantFuture).nanoseconds - epoch.nanoseconds
            checker.admit(spec.amount(for: cost), at: a.time.nanoseconds - epoch.nanoseconds, end: end)
        }
        return checker
    }
}
