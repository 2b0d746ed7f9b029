import AllotCore
import Foundation
import AllotTransport
import Synchronization

/// Envoy's `ShouldRateLimit` answered from this node's leases (no round trip per request):
/// each descriptor of the request is matched against envoyproxy/ratelimit rules
/// (`DescriptorRules`); the limited ones are charged `hits_addend` (0: 1) on their Allot rate
/// budgets, all or nothing, waiting at most `wait` for a lease this node is asking for.
///
/// As envoyproxy/ratelimit answers: a descriptor no rule limits is OK (`current_limit`
/// unset); `unlimited: true` is OK; `requests_per_unit: 0` is always over the limit; a
/// `shadow_mode` rule is counted and reported (`shadowDenied`) but answered OK. Unlike it, a
/// request refused by one descriptor charges none of the others (they report OK).
public final class RateLimitCore: Sendable {
    public struct Settings: Sendable {
        /// The longest a request waits for a lease its node is asking for.
        public var wait: Duration = .milliseconds(20)
        public init() {}
    }

    public let rules: DescriptorRules
    public let enforcer: SharedEnforcer
    let settings: Settings
    let poke: @Sendable () -> Void
    let clock: @Sendable () -> Instant
    /// Decisions since start: OK, OVER_LIMIT, shadow refusals answered OK.
    public let counts = Mutex((ok: 0, overLimit: 0, shadowDenied: 0))

    public init(rules: DescriptorRules, enforcer: SharedEnforcer, settings: Settings = Settings(),
                poke: @escaping @Sendable () -> Void = {}, clock: @escaping @Sendable () -> Instant = { WallClock.now() }) {
        (self.rules, self.enforcer, self.settings, self.poke, self.clock) = (rules, enforcer, settings, poke, clock)
    }

    /// One descriptor as the request names it.
    public struct Descriptor: Sendable {
        public var entries: [(key: String, value: String)]
        /// The descriptor's own limit (`RateLimitOverride`).
        public var override: DescriptorRules.Limit?
        public init(entries: [(key: String, value: String)], override: DescriptorRules.Limit? = nil) {
            (self.entries, self.override) = (entries, override)
        }
    }

    /// One descriptor's answer.
    public struct Status: Sendable, Equatable {
        public var overLimit = false
        /// The limit that applied (nil: none — no rule, or `unlimited`).
        public var limit: DescriptorRules.Limit?
        /// What this node may still admit under it now (its slice; not the fleet's count).
        public var remaining: Int64 = 0
        /// Until the bucket would be full again at the limit's rate.
        public var untilReset: Duration = .zero
        public var shadow = false
    }

    public struct Answer: Sendable {
        public var overLimit: Bool { statuses.contains { $0.overLimit } }
        public var statuses: [Status]
    }

    public func decide(domain: String, descriptors: [Descriptor], hits: UInt32) async -> Answer {
        let cost = Cost(requests: Int64(max(1, hits)))
        var statuses = [Status](repeating: Status(), count: descriptors.count)
        var enforced: [(index: Int, handle: BudgetHandle)] = [], shadowed: [(index: Int, handle: BudgetHandle)] = []
        for (i, d) in descriptors.enumerated() {
            guard case .limited(let limit, let shadow) = rules.match(domain: domain, entries: d.entries, override: d.override) else { continue }
            statuses[i].limit = limit
            statuses[i].shadow = shadow
            guard let spec = DescriptorRules.spec(DescriptorRules.budgetID(domain: domain, entries: d.entries, limit: limit), limit) else {
                statuses[i].overLimit = !shadow // requests_per_unit: 0
                if shadow { counts.withLock { $0.shadowDenied += 1 } }
                continue
            }
            let h = enforcer.register(spec)
            if shadow { shadowed.append((i, h)) } else { enforced.append((i, h)) }
        }
        // All or nothing, in sets of at most 8 distinct budgets (a descriptor twice: charged twice).
        var pending = enforced
        while !pending.isEmpty && !statuses.contains(where: { $0.overLimit }) {
            var round: [(index: Int, handle: BudgetHandle)] = [], rest: [(index: Int, handle: BudgetHandle)] = []
            for e in pending {
                if round.count < BudgetSet.capacity && !round.contains(where: { $0.handle == e.handle }) { round.append(e) } else { rest.append(e) }
            }
            pending = rest
            if let refused = await charge(cost, round.map(\.handle)) {
                for e in round where e.handle == refused { statuses[e.index].overLimit = true }
            }
        }
        for e in shadowed where await charge(cost, [e.handle]) != nil {
            counts.withLock { $0.shadowDenied += 1 }
        }
        for (i, s) in statuses.enumerated() {
            guard let limit = s.limit, limit.requestsPerUnit > 0 else { continue }
            let id = DescriptorRules.budgetID(domain: domain, entries: descriptors[i].entries, limit: limit)
            let remaining = enforcer.withEnforcer { e in e.handle(for: id).map { e.status($0).spendable } } ?? 0
            statuses[i].remaining = max(0, remaining)
            let missing = max(0, limit.requestsPerUnit - statuses[i].remaining)
            statuses[i].untilReset = .nanoseconds(Int64(Double(limit.unit.duration.nanoseconds) * Double(missing) / Double(limit.requestsPerUnit)))
        }
        let over = statuses.contains { $0.overLimit }
        counts.withLock { if over { $0.overLimit += 1 } else { $0.ok += 1 } }
        return Answer(statuses: statuses)
    }

    /// Admits `cost` on every budget of `handles` or none; the budget that refused (after
    /// waiting up to `settings.wait` while its node asks for a lease).
    private func charge(_ cost: Cost, _ handles: [BudgetHandle]) async -> BudgetHandle? {
        guard let set = try? BudgetSet(handles) else { return handles.first }
        let deadline = clock() + settings.wait
        var idleRetries = 0
        while true {
            switch enforcer.admit(cost, on: set, now: clock()) {
            case .admitted: return nil
            case .denied(let h):
                poke()
                let status = enforcer.withEnforcer { $0.status(h) }
                let waiting = status.awaitingGrant || status.leaseID == 0
                guard clock() < deadline && (waiting || idleRetries < 3) else { return h }
                if !waiting { idleRetries += 1 }
                try? await Task.sleep(for: .milliseconds(1))
            }
        }
    }
}
