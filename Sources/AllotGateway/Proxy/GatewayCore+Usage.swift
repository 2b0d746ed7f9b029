import AllotCore
import AllotNode
import AllotWire
import Foundation

/// `GET /v1/allot/usage`: what a consumer has left, per budget it is charged to, read from the
/// coordinators' books (fleet-wide), not only this node's slices.
extension GatewayCore {
    /// One budget's line in the usage answer.
    public struct UsageLine: Hashable, Sendable {
        public var spec: BudgetSpec
        public var shadow: Bool
        /// Quotas: units spent this window, fleet-wide (reported consumed, and units on leases
        /// that ended unreturned). Nil for rate and concurrency budgets.
        public var used: Int64?
        /// Quotas: the allowance less `used` (units out on leases count as remaining until
        /// their nodes report them spent). Rate and concurrency budgets: what is free at the
        /// coordinator plus what the nodes holding leases last reported spendable (each as of
        /// its last acquire), at most the burst or limit. Without an answer from the
        /// coordinator: a quota's is nil (its books may hold spend this node cannot see), a
        /// rate or concurrency budget's is this node's own unspent part.
        public var remaining: Int64?
        /// When the budget is whole again: a quota's window end, a rate bucket's refill.
        public var reset: Instant?
        /// "coordinator" (its books, read now, at most a second old), "learning" (a coordinator
        /// that just took the budget over, still learning what nodes hold: a quota's numbers
        /// are not final and left out), "idle" (the coordinator holds none: not used since it
        /// took the budget, retired, or its ledger row still loading), or "unreachable" (not
        /// connected to the budget's coordinator, or no answer within a second).
        public var source: String
    }

    /// Every budget `entry` can be charged to (each entitled route, with and without each
    /// entitled model), each with its standing at its coordinator.
    public func usage(_ entry: ConsumerDirectory.Entry) async throws(GatewayError) -> [UsageLine] {
        let p = policy.withLock { $0 }
        try p.check(tier: entry.consumer.tier)
        try p.check(removalsOf: entry.consumer.tier)
        let (catalog, overrides, consumer) = (p.catalog, p.overrides, p.current(entry.consumer))
        let e = p.config.entitlements[entry.consumer.tier] ?? Entitlements()
        let models: [String?] = [nil] + (e.models ?? Set(p.config.models.keys)).sorted()
        let routes: [String?] = [nil] + e.routes.map(\.rawValue).sorted()
        var specs: [BudgetID: BudgetSpec] = [:]
        do {
            for r in routes {
                for m in models {
                    for s in try catalog.budgets(for: consumer, route: r, model: m) { specs[s.id] = overrides[s.id] ?? s }
                }
            }
        } catch {
            throw GatewayError(500, type: "server_error", code: "budget_configuration", error.message)
        }
        let ids = specs.keys.sorted()
        let answer = connected() ? await cachedLookup(entry.consumer.id, ids) : LeaseClient.Lookup()
        let now = self.now()
        let local = enforcer.withEnforcer { en in ids.map { en.handle(for: $0).map { en.status($0).spendable } ?? 0 } }
        return zip(ids, local).map { id, here in
            Self.line(specs[id]!, books: answer.books[id], here: here, shadow: p.config.shared.isShadow(id),
                      answered: answer.answered.contains(id), now: now)
        }
    }

    /// The coordinators' answer for `consumer`'s budgets, reused for a second (a consumer
    /// polling its usage in a loop costs its coordinators about one lookup a second).
    func cachedLookup(_ consumer: String, _ ids: [BudgetID]) async -> LeaseClient.Lookup {
        let key = consumer + "|" + ids.map(\.rawValue).joined(separator: ",")
        if let hit = usageCache.withLock({ $0[key] }), self.now() - hit.at < .seconds(1) { return hit.answer }
        let answer = await lookup(ids)
        let now = self.now() // stamped when it arrived
        usageCache.withLock { c in
            c = c.filter { now - $0.value.at < .seconds(1) }
            c[key] = (now, answer)
        }
        return answer
    }

    /// One budget's line from the coordinator's books (`books`) and this node's unspent `here`.
    /// `answered`: its coordinator answered (without `books`: it holds none).
    static func line(_ spec: BudgetSpec, books: Allot_V1_BudgetStatus?, here: Int64, shadow: Bool, answered: Bool, now: Instant) -> UsageLine {
        let source = books.map { $0.learning ? "learning" : "coordinator" } ?? (answered ? "idle" : "unreachable")
        var line = UsageLine(spec: spec, shadow: shadow, used: nil, remaining: nil, reset: nil, source: source)
        switch spec.kind {
        case .quota(let allowance, let window):
            line.reset = window.window(containing: now).end
            if let b = books, !b.learning {
                let used = Checked.sum(max(0, b.consumed), max(0, b.expiredSpent))
                line.used = used
                line.remaining = max(0, allowance - min(used, allowance))
            }
        case .rate(let limit, let period, let burst):
            let remaining = min(burst, books.map(Self.fleetFree) ?? (source == "idle" ? burst : max(0, here)))
            line.remaining = remaining
            // Back to a full bucket at the budget's rate (rounded up: a reset is never early).
            let missing = Double(burst - remaining)
            let ns = (missing * Double(period.nanoseconds) / Double(limit)).rounded(.up)
            line.reset = now + .nanoseconds(Int64(min(ns, 1e17)))
        case .concurrency(let limit):
            line.remaining = min(limit, books.map(Self.fleetFree) ?? (source == "idle" ? limit : max(0, here)))
        }
        return line
    }

    /// Free at the coordinator plus what the nodes holding leases last reported spendable.
    static func fleetFree(_ b: Allot_V1_BudgetStatus) -> Int64 { Checked.sum(max(0, b.pool), max(0, b.heldAvailable)) }

    /// The usage answer's JSON object.
    public static func usageJSON(_ entry: ConsumerDirectory.Entry, _ lines: [UsageLine], now: Instant) -> [String: Any] {
        let budgets: [[String: Any]] = lines.map { l in
            var o: [String: Any] = ["budget": l.spec.id.rawValue, "unit": l.spec.unit.rawValue, "kind": l.spec.kind.name,
                                    "source": l.source, "shadow": l.shadow]
            switch l.spec.kind {
            case .quota(let allowance, let window):
                o["limit"] = allowance
                o["window"] = window.description
            case .rate(let limit, let period, let burst):
                o["limit"] = limit
                o["period_seconds"] = max(1, period.wholeSeconds)
                o["burst"] = burst
            case .concurrency(let limit):
                o["limit"] = limit
            }
            o["remaining"] = l.remaining.map { $0 as Any } ?? NSNull()
            if let u = l.used { o["used"] = u }
            if let r = l.reset {
                o["reset_at"] = rfc3339(r)
                o["reset_seconds"] = max(0, (r - now).wholeSeconds)
            }
            return o
        }
        return ["object": "allot.usage", "consumer": entry.consumer.id, "tier": entry.consumer.tier, "budgets": budgets]
    }
}
