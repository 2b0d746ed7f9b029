import AllotConfig
import AllotCoordination
import AllotCore

extension CoordinatorCore {
    /// Puts a new policy in force between events (`CoordinatorMachine.reconfigure`): lowered
    /// terms are pushed to the nodes holding leases, durable quotas added are loaded from the
    /// ledger. Nothing changes when it throws.
    public func reconfigure(_ d: DeploymentConfig, now: Instant) throws(AllotError) -> CoordinatorMachine.Reconfigured {
        let result = run { m -> (Result<CoordinatorMachine.Reconfigured, AllotError>, [CoordinatorMachine.Action]) in
            do throws(AllotError) {
                let (r, actions) = try m.reconfigure(budgets: d.budgets, tiers: d.tiers, softLimits: d.softLimits, now: now)
                return (.success(r), actions)
            } catch {
                return (.failure(error), [])
            }
        }
        return try result.get()
    }
}
