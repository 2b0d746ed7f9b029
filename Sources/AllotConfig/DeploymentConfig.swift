import AllotCore
import Foundation
import Yams

/// The deployment file's shared sections — `tls`, `lease`, `budgets`, `tiers` — which the
/// coordinator and the gateway read from the same file. Each reads its own sections itself
/// (`CoordinatorConfig`, `GatewayConfig`); every key of the file is checked here
/// (`ConfigKeys.check`), so a typo anywhere is refused by whichever process reads it.
/// Errors name the field that is wrong (`budgets[2].burst: ...`).
public struct DeploymentConfig: Sendable {
    public var tlsDirectory = "certs"
    /// Overrides `<tls.dir>/trust-domain` when set.
    public var trustDomain: String?
    /// `lease:` — TTL, refresh interval, slice bounds.
    public var allocator = AllocatorSettings()
    public var budgets: [BudgetSpec] = []
    /// Budgets created on first use from ids `tier.template/key`.
    public var tiers: [Tier] = []
    /// Shadow mode (`shadow: true` on a budget, a template or a whole tier): the explicit
    /// budgets and the `tier.template`s whose denials a gateway reports instead of applying
    /// (docs/gateway.md, "Shadow mode"). Coordinators lease them as any other budget.
    public var shadowBudgets: Set<BudgetID> = []
    public var shadowTemplates: Set<String> = []
    /// Soft limits (`soft_limits: [80, 95]` on a budget, a template or a whole tier): by
    /// explicit budget id, and by `tier.template`. Coordinators report each percent crossed,
    /// once per window (docs/operations.md, "Soft limits").
    public var softLimits = SoftLimitTable()
    /// What a request does when a budget template it was charged was removed (`deletions:`).
    public var deletions = DeletionMode.refuse
    /// Templates (`tier.template`) removed and not restored, with the version that removed
    /// them (`removed:`, written by `allot config apply`; docs/operations.md, "Deleting").
    public var removedTemplates: [String: Int64] = [:]

    /// `deletions: refuse` (the default): a consumer of a tier one of whose templates was
    /// removed is refused with 403 naming the template and the version, until the template is
    /// restored or a version says `allow`; `allow`: its requests are no longer charged to it.
    public enum DeletionMode: String, Sendable, Hashable { case refuse, allow }

    public init() {}

    /// Parses and validates the shared sections of a YAML document (and every key of it).
    /// `requirePolicy`: a file with no budget and no tier is an error (a gateway's may have
    /// none: it receives the policy from the coordinators).
    public init(yaml: String, requirePolicy: Bool = true) throws(AllotError) {
        try ConfigKeys.check(yaml)
        let raw: File = try ConfigFields.decode(File.self, yaml)
        self.init()
        if let t = raw.tls?.dir { tlsDirectory = t }
        if let d = raw.tls?.trust_domain { trustDomain = d }
        if let l = raw.lease {
            if let v = l.ttl { allocator.leaseTTL = try ConfigFields.duration(v, field: "lease.ttl") }
            if let v = l.refresh_interval { allocator.refreshInterval = try ConfigFields.duration(v, field: "lease.refresh_interval") }
            if let v = l.min_slice { allocator.minSlice = v }
            if let v = l.max_slice { allocator.maxSlice = v }
        }
        try allocator.validate()
        var seen = Set<String>()
        for (i, b) in (raw.budgets ?? []).enumerated() {
            let spec = try ConfigFields.budget(b, field: "budgets[\(i)]")
            guard seen.insert(spec.id.rawValue).inserted else {
                throw AllotError(.duplicateBudget, "budgets[\(i)].id: '\(spec.id)' is defined twice")
            }
            budgets.append(spec)
            if b.shadow == true { shadowBudgets.insert(spec.id) }
            softLimits.explicit[spec.id] = try ConfigFields.softLimits(b.soft_limits, kind: spec.kind, field: "budgets[\(i)]") ?? []
        }
        for (i, t) in (raw.tiers ?? []).enumerated() {
            guard let name = t.name, !name.isEmpty, !name.contains("."), !name.contains("/") else {
                throw AllotError(.invalidSettings, "tiers[\(i)].name is missing or contains '.' or '/'")
            }
            var templates: [BudgetTemplate] = []
            for (j, b) in (t.templates ?? []).enumerated() {
                let field = "tiers[\(i)].templates[\(j)]"
                var asBudget = b
                asBudget.id = b.name
                let spec = try ConfigFields.budget(asBudget, field: field)
                let scope = try (b.scope ?? []).map { d throws(AllotError) in try Dimension(parsing: d) }
                templates.append(try BudgetTemplate(name: spec.id.rawValue, unit: spec.unit, kind: spec.kind,
                                                    scope: scope, failMode: spec.failMode, reach: spec.reach))
                if b.shadow ?? t.shadow ?? false { shadowTemplates.insert("\(name).\(spec.id.rawValue)") }
                // A tier's list applies to its rate and quota templates (a template's own wins).
                let tierList = spec.kind.isConcurrency ? nil : t.soft_limits
                if let list = try ConfigFields.softLimits(b.soft_limits ?? tierList, kind: spec.kind,
                                                          field: b.soft_limits != nil ? field : "tiers[\(i)]") {
                    softLimits.templates["\(name).\(spec.id.rawValue)"] = list
                }
            }
            tiers.append(try Tier(name: name, templates: templates))
        }
        _ = try TierCatalog(tiers)
        if let d = raw.deletions {
            guard let mode = DeletionMode(rawValue: d) else {
                throw AllotError(.invalidSettings, "deletions: '\(d)' is not refuse or allow")
            }
            deletions = mode
        }
        for (i, r) in (raw.removed ?? []).enumerated() {
            guard let t = r.template, let dot = t.firstIndex(of: "."), dot != t.startIndex, t.index(after: dot) != t.endIndex,
                  !t.contains("/") else {
                throw AllotError(.invalidSettings, "removed[\(i)].template: name a template as tier.template")
            }
            guard let v = r.version, v > 0 else { throw AllotError(.invalidSettings, "removed[\(i)].version: a version number above 0") }
            // A template in force again (restored in an exported file) is not removed.
            let parts = t.split(separator: ".", maxSplits: 1).map(String.init)
            if tiers.contains(where: { $0.name == parts[0] && $0.templates.contains { $0.name == parts[1] } }) { continue }
            removedTemplates[t] = v
        }
        guard !requirePolicy || !budgets.isEmpty || !tiers.isEmpty else {
            throw AllotError(.invalidSettings, "budgets: the configuration defines no budget and no tier; add at least one")
        }
    }

    /// Whether a gateway only reports this budget's denials. An explicit budget says so
    /// itself (it wins over its template); another is made from `tier.template/key`.
    public func isShadow(_ id: BudgetID) -> Bool {
        if budgets.contains(where: { $0.id == id }) { return shadowBudgets.contains(id) }
        guard !shadowTemplates.isEmpty, let slash = id.rawValue.firstIndex(of: "/") else { return false }
        return shadowTemplates.contains(String(id.rawValue[..<slash]))
    }

    /// Quota budgets, explicit or in tier templates, that `included` keeps.
    public func hasQuotas(where included: (Reach) -> Bool = { _ in true }) -> Bool {
        budgets.contains { $0.kind.isQuota && included($0.reach) }
            || tiers.contains { $0.templates.contains { $0.kind.isQuota && included($0.reach) } }
    }

    // MARK: the shared sections' shape

    struct File: Decodable {
        struct TLS: Decodable { var dir: String?; var trust_domain: String? }
        struct Lease: Decodable { var ttl: String?; var refresh_interval: String?; var min_slice: Int64?; var max_slice: Int64? }
        /// A tier's templates have the shape of budgets, with `name` and `scope` instead of `id`
        /// (`ConfigKeys` keeps each list to its own keys).
        struct TierEntry: Decodable { var name: String?; var templates: [ConfigFields.Budget]?; var shadow: Bool?; var soft_limits: [Int]? }
        var tls: TLS?
        var lease: Lease?
        struct Removed: Decodable { var template: String?; var version: Int64? }
        var budgets: [ConfigFields.Budget]?
        var tiers: [TierEntry]?
        var deletions: String?
        var removed: [Removed]?
    }
}
