import AllotCore
import AllotNode
import AllotTransport
import AllotWire
import Foundation
import Synchronization

/// The gateway's decisions, whatever speaks HTTP in front of it: who is calling, what they may
/// do, which budgets a request is charged to, reserve (waiting briefly for a lease the node is
/// already asking for), settle, and the audit record and metrics of each request.
public final class GatewayCore: Sendable {
    /// The file's configuration, with the policy in force (`GatewayCore+Policy`).
    public var config: GatewayConfig { policy.withLock { $0.config } }
    /// The file's configuration as read at start: its listeners, upstream, routes and limits
    /// (a policy version changes none of them; read on every request without a lock).
    public let fileConfig: GatewayConfig
    /// The models (prices) in force.
    public var models: [String: ModelPrice] { policy.withLock { $0.config.models } }
    public let enforcer: SharedEnforcer
    public let metrics: GatewayMetrics
    public let audit: AuditLog?
    /// Who holds which key: the consumers file merged with the ledger's directory
    /// (`sources`; GatewayCore+Directory.swift).
    let consumers: Mutex<ConsumerDirectory>
    let sources: Mutex<DirectorySources>
    /// The directory version last written to `gateway.directory_cache` (one save at a time).
    let saving = Mutex<UInt64>(0)
    /// The policy version last written beside it.
    let savingPolicy = Mutex<UInt64>(0)
    /// The policy in force: the file's, or the newest version a coordinator sent.
    let policy: Mutex<Policy>
    /// Reads budgets' books at their coordinators (`GET /v1/allot/usage`; GatewayCore+Usage).
    let lookup: @Sendable ([BudgetID]) async -> LeaseClient.Lookup
    /// The last lookup per consumer, kept a second (GatewayCore+Usage).
    let usageCache = Mutex<[String: (at: Instant, answer: LeaseClient.Lookup)]>([:])
    /// Asks the lease client to poll now (a refill may turn a denial into an admission).
    private let poke: @Sendable () -> Void
    /// Whether the node has a connection to its coordinator (a denial without a lease is a
    /// 503 only when it has none).
    let connected: @Sendable () -> Bool
    private let clock: @Sendable () -> Instant
    /// Budgets resolved per consumer, tier, route and model, under the policy version they
    /// were resolved with (a new policy empties it; `GatewayCore+Policy`).
    let resolved = Mutex<(version: UInt64, map: [String: Resolved])>((0, [:]))
    private let observer: GatewayEvent.Observer?
    private let nextAdmission = Atomic<UInt64>(1)
    private let runaway = Mutex(RunawayDetector())

    struct Resolved: Sendable {
        var specs: [BudgetSpec]
        var handles: [BudgetHandle]
        /// The budgets not in shadow mode (all of them when none is), and those that are.
        var enforced: BudgetSet
        var shadowSet: BudgetSet
        var shadow: Set<BudgetHandle>
    }

    public init(config: GatewayConfig, consumers: ConsumerDirectory, enforcer: SharedEnforcer, audit: AuditLog?,
                metrics: GatewayMetrics = GatewayMetrics(), poke: @escaping @Sendable () -> Void = {},
                connected: @escaping @Sendable () -> Bool = { true }, observer: GatewayEvent.Observer? = nil,
                lookup: @escaping @Sendable ([BudgetID]) async -> LeaseClient.Lookup = { _ in LeaseClient.Lookup() },
                clock: @escaping @Sendable () -> Instant = { WallClock.now() }) throws(AllotError) {
        self.observer = observer
        policy = Mutex(try Policy(config: config))
        fileConfig = config
        self.enforcer = enforcer
        node = enforcer.withEnforcer { $0.settings.node.rawValue }
        self.metrics = metrics
        self.audit = audit
        self.consumers = Mutex(consumers)
        sources = Mutex(DirectorySources(file: consumers, tiers: Set(config.shared.tiers.map(\.name))))
        self.poke = poke
        self.connected = connected
        self.lookup = lookup
        self.clock = clock
    }

    /// This node's name (as in its certificate), for audit records and events.
    public let node: String
    public func now() -> Instant { clock() }

    /// Replaces the consumers file's part (a reload); the ledger's directory stays; budgets
    /// already resolved stay.
    public func reload(consumers directory: ConsumerDirectory) {
        sources.withLock { s in
            s.file = directory
            let merged = s.merged
            consumers.withLock { $0 = merged }
        }
    }

    // MARK: identity

    /// `Authorization: Bearer <key>` → the key's consumer, or 401.
    public func authenticate(authorization: String?) throws(GatewayError) -> ConsumerDirectory.Entry {
        guard let header = authorization, header.lowercased().hasPrefix("bearer "),
              case let key = header.dropFirst(7).trimmingCharacters(in: .whitespaces), !key.isEmpty else {
            metrics.request(consumer: "-", tier: "-", model: nil, decision: "unauthenticated")
            throw GatewayError(401, type: "invalid_request_error", code: "missing_api_key",
                               "no API key: send Authorization: Bearer <key>")
        }
        guard let entry = consumers.withLock({ $0.lookup(key: key) }), entry.expires.map({ clock() < $0 }) ?? true else {
            metrics.request(consumer: "-", tier: "-", model: nil, decision: "unauthenticated")
            throw GatewayError(401, type: "invalid_request_error", code: "invalid_api_key", "the API key is not known to this gateway")
        }
        return entry
    }

    public func consumer(id: String) -> ConsumerDirectory.Entry? { consumers.withLock { $0.lookup(consumer: id) } }

    public func entitlements(for entry: ConsumerDirectory.Entry) -> Entitlements {
        policy.withLock { $0.config.entitlements[entry.consumer.tier] } ?? Entitlements()
    }

    /// Route and chain-depth entitlements (the body's are checked by `RequestPlan`).
    public func checkEntitlements(_ entry: ConsumerDirectory.Entry, route: Route, chainDepth: String?) throws(GatewayError) {
        let e = entitlements(for: entry)
        let tier = entry.consumer.tier
        guard e.routes.contains(route) else {
            throw GatewayError(403, type: "permission_error", code: "route_not_entitled",
                               "tier \(tier) is not entitled to the \(route.rawValue) route (entitlement routes: \(e.routes.map(\.rawValue).sorted().joined(separator: ", ")))",
                               budget: "entitlement.routes")
        }
        if let raw = chainDepth {
            guard let depth = Int(raw.trimmingCharacters(in: .whitespaces)), depth >= 0 else {
                throw .badRequest("invalid_chain_depth", "\(fileConfig.chainDepthHeader) must be a non-negative integer (got '\(raw)')")
            }
            if let max = entry.maxChainDepth ?? e.maxChainDepth, depth > max {
                throw GatewayError(429, type: "requests", code: "chain_depth_exceeded",
                                   "agent chain depth \(depth) is above \(entry.consumer.id)'s limit of \(max) (\(fileConfig.chainDepthHeader))",
                                   budget: "entitlement.max_chain_depth")
            }
        }
    }

    // MARK: budgets

    func resolve(_ entry: ConsumerDirectory.Entry, route: Route, model: String?) throws(GatewayError) -> Resolved {
        let key = "\(entry.consumer.id)|\(entry.consumer.tier)|\(route.rawValue)|\(model ?? "")"
        if let r = resolved.withLock({ $0.map[key] }) { return r }
        let p = policy.withLock { $0 }
        try p.check(tier: entry.consumer.tier)
        try p.check(removalsOf: entry.consumer.tier)
        let specs: [BudgetSpec]
        do {
            specs = try p.catalog.budgets(for: p.current(entry.consumer), route: route.rawValue, model: model).map { p.overrides[$0.id] ?? $0 }
        } catch {
            throw GatewayError(500, type: "server_error", code: "budget_configuration", error.message)
        }
        let handles = specs.map { enforcer.register($0) }
        let shadow = Set(zip(specs, handles).filter { p.config.shared.isShadow($0.0.id) }.map(\.1))
        let enforced: BudgetSet, shadowSet: BudgetSet
        do {
            enforced = try BudgetSet(shadow.isEmpty ? handles : handles.filter { !shadow.contains($0) })
            shadowSet = try BudgetSet(handles.filter { shadow.contains($0) })
        } catch {
            throw GatewayError(500, type: "server_error", code: "budget_configuration", error.message)
        }
        let r = Resolved(specs: specs, handles: handles, enforced: enforced, shadowSet: shadowSet, shadow: shadow)
        // Kept only if no newer policy came meanwhile.
        resolved.withLock { if $0.version == p.version { $0.map[key] = r } }
        return r
    }

    /// The enforced budgets' standing (shadow budgets stay out of the response headers).
    func standings(_ r: Resolved) -> [BudgetStanding] {
        enforcer.withEnforcer { e in
            zip(r.specs, r.handles).compactMap { spec, h in // one array on the admit path, no filtered copy
                r.shadow.contains(h) ? nil : BudgetStanding(spec: spec, remaining: e.status(h).spendable)
            }
        }
    }

    // MARK: admission

    /// Reserves the plan's upper bound on every budget of the request, all or nothing
    /// (`reserve`: waiting up to `admission_wait` for a refill); a denial that stands is a 429
    /// naming the budget (503 when the node has no lease for it and no connection to the
    /// coordinator, and the budget fails closed).
    public func admit(_ entry: ConsumerDirectory.Entry, plan: RequestPlan) async -> Result<Admission, GatewayError> {
        let started = clock()
        let tier = entry.consumer.tier
        let policy = entitlements(for: entry).runaway
        let (isRunaway, raised) = runaway.withLock { $0.record(entry.consumer.id, policy: policy, now: started) }
        if raised { metrics.runaway(consumer: entry.consumer.id, tier: tier) }
        if isRunaway && policy.throttle {
            let e = GatewayError(429, type: "requests", code: "runaway_throttled",
                                 "\(entry.consumer.id)'s request rate is above \(policy.factor)× its own baseline; throttled by the runaway policy",
                                 budget: "runaway/consumer=\(entry.consumer.id)", retryAfter: Int(policy.window.wholeSeconds))
            record(entry, plan: plan, decision: "deny", error: e, runaway: true, started: started)
            return .failure(e)
        }
        let r: Resolved
        do { r = try resolve(entry, route: plan.route, model: plan.model) } catch {
            record(entry, plan: plan, decision: "reject", error: error, runaway: isRunaway, started: started)
            return .failure(error)
        }
        let cost = plan.reserveCost
        // Shadow mode (docs/gateway.md): the enforced budgets decide first, alone, then the
        // shadow ones as they would if enforced; a shadow refusal is reported, not applied.
        var wouldDeny: String?
        for (spec, h) in zip(r.specs, r.handles) {
            do { try spec.check(cost: cost) } catch {
                if r.shadow.contains(h) { wouldDeny = wouldDeny ?? spec.id.rawValue; continue }
                let e = GatewayError(400, type: "invalid_request_error", code: "request_exceeds_budget",
                                     "\(error.message); lower max_tokens or the prompt", budget: spec.id.rawValue)
                record(entry, plan: plan, decision: "reject", error: e, runaway: isRunaway, started: started)
                return .failure(e)
            }
        }
        let deadline = started + fileConfig.admissionWait
        var held: Reservation?, now = started
        if r.enforced.count > 0 {
            switch await reserve(cost, on: r.enforced, r, deadline: deadline) {
            case .admitted(let reservation, let at): (held, now) = (reservation, at)
            case .refused(let spec, let status, let at):
                let e = denial(spec, reachable: status.leaseID != 0 || connected(), amount: spec.amount(for: cost), now: at)
                metrics.denied(budget: spec.id, tier: tier, after: at - started)
                record(entry, plan: plan, decision: "deny", error: e, runaway: isRunaway, started: started)
                return .failure(e)
            }
        }
        var shadowHeld: Reservation?
        if r.shadowSet.count > 0 && wouldDeny == nil {
            switch await reserve(cost, on: r.shadowSet, r, deadline: deadline) {
            case .admitted(let reservation, let at): (shadowHeld, now) = (reservation, at)
            case .refused(let spec, _, let at): (wouldDeny, now) = (spec.id.rawValue, at) // charged nothing, as refused
            }
        }
        if let wouldDeny { metrics.wouldDeny(budget: wouldDeny, tier: tier) }
        metrics.request(consumer: entry.consumer.id, tier: tier, model: plan.model, decision: "admit")
        metrics.admission(now - started)
        metrics.inflight(1)
        let id = nextAdmission.wrappingAdd(1, ordering: .relaxed).oldValue
        observer?(GatewayEvent(kind: .admit, id: id, node: node, consumer: entry.consumer.id, tier: entry.consumer.tier,
                               time: now, cost: cost, budget: wouldDeny))
        return .success(Admission(core: self, id: id, entry: entry, plan: plan, reservations: (held, shadowHeld),
                                  standings: standings(r), runaway: isRunaway, started: started, wouldDeny: wouldDeny))
    }

    enum Reserved {
        case admitted(Reservation, at: Instant)
        /// The budget whose denial stands, and its slice then.
        case refused(BudgetSpec, Enforcer.SliceStatus, at: Instant)
    }

    /// Reserves `cost` on `set`, all or nothing, waiting up to `deadline` for a lease being
    /// asked for (`SharedEnforcer.reserve(_:on:deadline:…)`).
    private func reserve(_ cost: Cost, on set: BudgetSet, _ r: Resolved, deadline: Instant) async -> Reserved {
        switch await enforcer.reserve(cost, on: set, deadline: deadline, clock: clock, poke: poke) {
        case .admitted(let reservation, let at): return .admitted(reservation, at: at)
        case .refused(let h, let status, let at): return .refused(r.specs[r.handles.firstIndex(of: h) ?? 0], status, at: at)
        }
    }

    func denial(_ spec: BudgetSpec, reachable: Bool, amount: Int64, now: Instant) -> GatewayError {
        let standing = BudgetStanding(spec: spec, remaining: 0)
        let retry = Int(standing.secondsUntil(amount, now: now))
        guard reachable || spec.failMode != .closed else {
            return GatewayError(503, type: "server_error", code: "budget_unavailable",
                                "budget \(spec.id) has no lease on this node (coordinator unreachable?) and fails closed; retry shortly",
                                budget: spec.id.rawValue, retryAfter: 1)
        }
        let tokens = spec.unit != .requests && spec.unit != .microDollars
        switch spec.kind {
        case .rate:
            return GatewayError(429, type: tokens ? "tokens" : "requests", code: "rate_limit_exceeded",
                                "rate limit reached on budget \(spec.id) (\(spec.kind)); retry after \(retry)s",
                                budget: spec.id.rawValue, retryAfter: retry)
        case .quota:
            return GatewayError(429, type: tokens ? "tokens" : "requests", code: "insufficient_quota",
                                "quota exhausted on budget \(spec.id) (\(spec.kind)); it resets in \(retry)s",
                                budget: spec.id.rawValue, retryAfter: retry)
        case .concurrency:
            return GatewayError(429, type: "requests", code: "concurrency_limit_exceeded",
                                "too many requests in flight on budget \(spec.id) (\(spec.kind))",
                                budget: spec.id.rawValue, retryAfter: retry)
        }
    }

    /// Headers for a denial: the remaining-budget set plus `Retry-After`.
    public func headers(for entry: ConsumerDirectory.Entry, plan: RequestPlan, error: GatewayError) -> [(String, String)] {
        var out: [(String, String)] = []
        if error.status == 429 || error.status == 503, let r = try? resolve(entry, route: plan.route, model: plan.model) {
            out = RateLimitHeaders.make(standings(r), now: clock(), anthropic: plan.route.isAnthropic)
        }
        if let s = error.retryAfterSeconds { out.append(("Retry-After", "\(s)")) }
        return out
    }

    // MARK: settlement

    /// How a forwarded request ended.
    public enum Outcome: Sendable {
        /// The upstream reported usage: charge exactly that.
        case usage(Usage, status: Int)
        /// No response at all (refused, timed out before the head): refund everything.
        case upstreamFailed(status: Int)
        /// An error response without usage: one request, no tokens.
        case upstreamError(status: Int)
        /// The response started but its usage never came (stream cut, client gone, body
        /// unreadable): charge the full reservation, the only safe bound.
        case incomplete(status: Int?)
    }

    func settle(_ a: Admission, outcome: Outcome) {
        let plan = a.plan
        let actual: Cost, status: Int?, settlement: String
        var input: Int64 = 0, output: Int64 = 0, cached: Int64 = 0, cacheWrite: Int64 = 0
        switch outcome {
        case .usage(let u, let s):
            input = u.input; output = u.output; cached = u.cached; cacheWrite = u.cacheWrite; status = s; settlement = "usage"
            // Charged in full, above the bound too: the upstream spent it (debt on the slice).
            actual = Cost(requests: 1, tokens: Checked.sum(input, output), inputTokens: input, outputTokens: output,
                          microDollars: plan.model.flatMap { models[$0] }?.microDollars(u) ?? 0)
        case .upstreamFailed(let s):
            status = s; settlement = "refund"
            actual = Cost(requests: 0)
        case .upstreamError(let s):
            status = s; settlement = "error"
            actual = Cost(requests: 1)
        case .incomplete(let s):
            input = plan.inputBound; output = plan.outputBound; status = s; settlement = "bound"
            actual = plan.reserveCost
        }
        let now = clock()
        // Observed before the permit is back, so an observer never sees two holders at once.
        observer?(GatewayEvent(kind: .settle, id: a.id, node: node, consumer: a.entry.consumer.id, tier: a.entry.consumer.tier,
                               time: now, cost: actual, budget: nil))
        if let r = a.reservations.enforced { enforcer.settle(r, actual: actual, now: now) }
        if let r = a.reservations.shadow { enforcer.settle(r, actual: actual, now: now) }
        metrics.inflight(-1)
        let entry = a.entry
        metrics.settled(consumer: entry.consumer.id, tier: entry.consumer.tier, model: plan.model,
                        input: input, output: output, reserved: Checked.sum(plan.inputBound, plan.outputBound))
        appendAudit(AuditRecord(time: Self.rfc3339(now), node: node, consumer: entry.consumer.id, keyID: entry.keyID,
                                tier: entry.consumer.tier, route: plan.route.rawValue, model: plan.model,
                                reserved: Checked.sum(plan.inputBound, plan.outputBound), inputTokens: input, outputTokens: output,
                                costMicroDollars: actual.microDollars, upstreamStatus: status,
                                latencyMs: (now - a.started).nanoseconds / 1_000_000, decision: "admit", budget: nil,
                                runaway: a.runaway, settlement: settlement,
                                overBound: Checked.sum(input, output) > Checked.sum(plan.inputBound, plan.outputBound) ? true : nil,
                                cachedTokens: cached > 0 ? cached : nil, cacheWriteTokens: cacheWrite > 0 ? cacheWrite : nil,
                                wouldDeny: a.wouldDeny))
    }

    /// Audits and counts a request refused before or at admission.
    public func record(_ entry: ConsumerDirectory.Entry, plan: RequestPlan?, route: Route? = nil, decision: String,
                       error: GatewayError, runaway: Bool = false, started: Instant? = nil) {
        let now = clock()
        metrics.request(consumer: entry.consumer.id, tier: entry.consumer.tier, model: plan?.model, decision: decision)
        observer?(GatewayEvent(kind: decision == "deny" ? .deny : .reject, id: 0, node: node, consumer: entry.consumer.id,
                               tier: entry.consumer.tier, time: now, cost: nil, budget: error.budget ?? error.code))
        appendAudit(AuditRecord(time: Self.rfc3339(now), node: node, consumer: entry.consumer.id, keyID: entry.keyID,
                                tier: entry.consumer.tier, route: (plan?.route ?? route ?? .other).rawValue, model: plan?.model,
                                reserved: 0, inputTokens: 0, outputTokens: 0, costMicroDollars: 0, upstreamStatus: nil,
                                latencyMs: ((now - (started ?? now)).nanoseconds) / 1_000_000, decision: decision,
                                budget: error.budget ?? error.code, runaway: runaway, settlement: nil))
    }

    private func appendAudit(_ r: AuditRecord) {
        guard let audit else { return }
        do { try audit.append(r) } catch {
            FileHandle.standardError.write(Data("allot gateway: cannot write the audit trail: \(error)\n".utf8))
        }
    }

    static func rfc3339(_ t: Instant) -> String {
        let date = Date(timeIntervalSince1970: t.seconds)
        return date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }
}
