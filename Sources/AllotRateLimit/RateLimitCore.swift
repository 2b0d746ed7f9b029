import AllotCore
import AllotTransport
import Crypto
import Foundation
import Synchronization

/// Envoy's `ShouldRateLimit` answered from this node's leases (no round trip per request):
/// each descriptor of the request is matched against envoyproxy/ratelimit rules
/// (`DescriptorRules`); the limited ones are charged `hits_addend` (0: 1) on their Allot rate
/// budgets, all or nothing, waiting at most `wait` for a lease this node is asking for (not at
/// all while no coordinator is connected).
///
/// As envoyproxy/ratelimit answers: a descriptor no rule limits is OK (`current_limit`
/// unset); `unlimited: true` is OK; `requests_per_unit: 0` is always over the limit; a
/// `shadow_mode` rule is counted and reported (`shadowDenied`) but answered OK. Unlike it, a
/// request refused by one descriptor charges none of the others (shadow ones included), and
/// `hits_addend` above a limit is over it at once.
public final class RateLimitCore: Sendable {
    public struct Settings: Sendable {
        /// The longest a request waits for a lease its node is asking for (below Envoy's
        /// default 20 ms timeout, so a refusal reaches Envoy as an answer).
        public var wait: Duration = .milliseconds(10)
        /// The most budgets this node keeps (one per distinct limited descriptor: values a
        /// client picks, such as addresses, make new ones); past it a new descriptor is over
        /// the limit (`budgetsRefused`).
        public var maxBudgets = 10_000
        /// Adds the draft-03 `x-ratelimit-*` headers to the answer.
        public var responseHeaders = true
        public init() {}
    }

    public struct Counts: Sendable, Equatable {
        public var ok = 0, overLimit = 0, shadowDenied = 0, budgetsRefused = 0
    }

    public let rules: DescriptorRules
    public let enforcer: SharedEnforcer
    public let settings: Settings
    let poke: @Sendable () -> Void
    let connected: @Sendable () -> Bool
    let clock: @Sendable () -> Instant
    /// Decisions since start.
    public let counts = Mutex(Counts())

    public init(rules: DescriptorRules, enforcer: SharedEnforcer, settings: Settings = Settings(),
                poke: @escaping @Sendable () -> Void = {}, connected: @escaping @Sendable () -> Bool = { true },
                clock: @escaping @Sendable () -> Instant = { WallClock.now() }) {
        (self.rules, self.enforcer, self.settings, self.poke, self.connected, self.clock) = (rules, enforcer, settings, poke, connected, clock)
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
        /// Until the limit's rate has refilled this request's hits (fleet-wide, at the limit).
        public var untilReset: Duration = .zero
        public var shadow = false
    }

    public struct Answer: Sendable {
        public var overLimit: Bool { statuses.contains { $0.overLimit } }
        public var statuses: [Status]
    }

    /// The budget id of a descriptor under `limit` (a digest of its entries when too long).
    public static func budgetID(domain: String, entries: [(key: String, value: String)], limit: DescriptorRules.Limit) -> BudgetID {
        let id = DescriptorRules.budgetID(domain: domain, entries: entries, limit: limit)
        guard id.rawValue.utf8.count > TierCatalog.maxIDBytes else { return id }
        let digest = SHA256.hash(data: Data(id.rawValue.utf8)).map { String(format: "%02x", $0) }.joined()
        return DescriptorRules.digestID(domain: domain, digest: digest, limit: limit)
    }

    public func decide(domain: String, descriptors: [Descriptor], hits: UInt32) async -> Answer {
        let n = Int64(max(1, hits))
        let cost = Cost(requests: n)
        var statuses = [Status](repeating: Status(), count: descriptors.count)
        var enforced: [(index: Int, handle: BudgetHandle)] = [], shadowed: [(index: Int, handle: BudgetHandle)] = []
        var ids = [BudgetID?](repeating: nil, count: descriptors.count)
        for (i, d) in descriptors.enumerated() {
            guard case .limited(let limit, let shadow) = rules.match(domain: domain, entries: d.entries, override: d.override) else { continue }
            statuses[i].limit = limit
            statuses[i].shadow = shadow
            let id = Self.budgetID(domain: domain, entries: d.entries, limit: limit)
            // requests_per_unit 0, hits above the limit, or no room for another budget: over
            // the limit at once (nothing to wait for).
            guard limit.requestsPerUnit >= n, let spec = DescriptorRules.spec(id, limit), let h = handle(spec) else {
                if shadow { counts.withLock { $0.shadowDenied += 1 } } else { statuses[i].overLimit = true }
                continue
            }
            ids[i] = id
            if shadow { shadowed.append((i, h)) } else { enforced.append((i, h)) }
        }
        // All or nothing, in sets of at most 8 distinct budgets (a descriptor twice: charged
        // twice): each set reserved; a refusal gives back what the sets before it reserved.
        var held: [Reservation] = []
        var pending = statuses.contains(where: { $0.overLimit }) ? [] : enforced
        while !pending.isEmpty {
            var round: [(index: Int, handle: BudgetHandle)] = [], rest: [(index: Int, handle: BudgetHandle)] = []
            for e in pending {
                if round.count < BudgetSet.capacity && !round.contains(where: { $0.handle == e.handle }) { round.append(e) } else { rest.append(e) }
            }
            pending = rest
            switch await reserve(cost, round.map(\.handle)) {
            case .success(let r): held.append(r)
            case .failure(let refused):
                for e in round where e.handle == refused.handle { statuses[e.index].overLimit = true }
                pending = []
            }
        }
        let refused = statuses.contains { $0.overLimit }
        for r in held { enforcer.settle(r, actual: refused ? Cost(requests: 0) : cost, now: clock()) }
        if !refused {
            for e in shadowed {
                switch await reserve(cost, [e.handle]) {
                case .success(let r): enforcer.settle(r, actual: cost, now: clock())
                case .failure: counts.withLock { $0.shadowDenied += 1 }
                }
            }
        }
        for (i, s) in statuses.enumerated() {
            guard let limit = s.limit, limit.requestsPerUnit > 0 else { continue }
            let remaining = ids[i].flatMap { id in enforcer.withEnforcer { e in e.handle(for: id).map { e.status($0).spendable } } } ?? 0
            statuses[i].remaining = max(0, remaining)
            statuses[i].untilReset = .nanoseconds(Int64(Double(limit.unit.duration.nanoseconds) * Double(min(n, limit.requestsPerUnit)) / Double(limit.requestsPerUnit)))
        }
        counts.withLock { if refused { $0.overLimit += 1 } else { $0.ok += 1 } }
        return Answer(statuses: statuses)
    }

    /// The slice of `spec` (registered now if new and there is room for it).
    private func handle(_ spec: BudgetSpec) -> BudgetHandle? {
        let h = enforcer.withEnforcer { e -> BudgetHandle? in
            if let h = e.handle(for: spec.id) { return h }
            guard e.budgetCount < settings.maxBudgets else { return nil }
            return e.register(spec)
        }
        if h == nil { counts.withLock { $0.budgetsRefused += 1 } }
        return h
    }

    struct Refused: Error { var handle: BudgetHandle }

    /// Reserves `cost` on every budget of `handles` or none; the budget that refused (after
    /// waiting up to `settings.wait` while its node asks for a lease and a coordinator is
    /// connected).
    private func reserve(_ cost: Cost, _ handles: [BudgetHandle]) async -> Result<Reservation, Refused> {
        guard let set = try? BudgetSet(handles) else { return .failure(Refused(handle: handles[0])) }
        switch await enforcer.reserve(cost, on: set, deadline: clock() + settings.wait, clock: clock, poke: poke, mayWait: connected) {
        case .admitted(let r, _): return .success(r)
        case .refused(let h, _, _): return .failure(Refused(handle: h))
        }
    }
}
