/// A budget template in a tier: "every consumer of this tier gets 60,000 tokens per minute",
/// keyed by the dimensions in `scope` (e.g. `[.consumer]`, or `[.team]` for a shared team budget).
public struct BudgetTemplate: Hashable, Sendable {
    public var name: String
    public var unit: Unit
    public var kind: BudgetKind
    public var scope: [Dimension]
    public var failMode: FailMode
    public var reach: Reach

    public init(name: String, unit: Unit, kind: BudgetKind, scope: [Dimension],
                failMode: FailMode = .closed, reach: Reach = .regional) throws(AllotError) {
        try kind.validate(field: "template \(name)")
        if reach == .global && kind.isRate {
            throw AllotError(.invalidSettings, "template \(name): a rate budget cannot be global yet (regions sub-lease quotas and concurrency); make it regional, or a global quota per minute")
        }
        self.reach = reach
        self.name = name
        self.unit = unit
        self.kind = kind
        self.scope = scope.sorted()
        self.failMode = failMode
    }
}

/// A plan (free, pro, partner, internal, agent, ...): a named set of budget templates.
public struct Tier: Hashable, Sendable {
    public var name: String
    public var templates: [BudgetTemplate]

    public init(name: String, templates: [BudgetTemplate]) throws(AllotError) {
        var seen = Set<String>()
        for t in templates where !seen.insert(t.name).inserted {
            throw AllotError(.duplicateBudget, "tier \(name) defines template '\(t.name)' twice")
        }
        self.name = name
        self.templates = templates
    }
}

/// Who is calling: a consumer belongs to a team, a tenant and one tier, and may override
/// any of its tier's templates.
public struct Consumer: Hashable, Sendable {
    public var id: String
    public var team: String?
    public var tenant: String?
    public var tier: String
    /// Template name → the kind that replaces the tier's for this consumer.
    public var overrides: [String: BudgetKind]

    public init(id: String, team: String? = nil, tenant: String? = nil, tier: String,
                overrides: [String: BudgetKind] = [:]) {
        self.id = id
        self.team = team
        self.tenant = tenant
        self.tier = tier
        self.overrides = overrides
    }
}

/// All tiers of a deployment; resolves which budgets a request is charged to.
public struct TierCatalog: Sendable {
    public private(set) var tiers: [String: Tier]

    public init(_ tiers: [Tier]) throws(AllotError) {
        var map: [String: Tier] = [:]
        for t in tiers {
            if map[t.name] != nil { throw AllotError(.duplicateBudget, "tier '\(t.name)' is defined twice") }
            map[t.name] = t
        }
        self.tiers = map
    }

    /// The budget behind an id of the form `tier.template/key` (e.g. `pro.tpm/consumer=alice`),
    /// as a coordinator creates it the first time a node asks for it; nil when the tier or
    /// template is unknown or the key does not match the template's scope.
    public func instantiate(_ id: BudgetID) -> BudgetSpec? {
        let raw = id.rawValue
        guard raw.utf8.count <= Self.maxIDBytes, let slash = raw.firstIndex(of: "/") else { return nil }
        let name = raw[..<slash], keyText = raw[raw.index(after: slash)...]
        guard let dot = name.firstIndex(of: "."), let tier = tiers[String(name[..<dot])],
              let template = tier.templates.first(where: { $0.name == name[name.index(after: dot)...] }) else { return nil }
        var values: [Dimension: String] = [:]
        if keyText != "*" {
            for part in keyText.split(separator: ",") {
                let kv = part.split(separator: "=", maxSplits: 1)
                guard kv.count == 2, let d = Dimension(rawValue: String(kv[0])), Self.acceptable(kv[1]), values[d] == nil else { return nil }
                values[d] = String(kv[1])
            }
        }
        guard Set(values.keys) == Set(template.scope) else { return nil }
        let key = BudgetKey(values)
        guard key.description == String(keyText) || (keyText == "*" && values.isEmpty) else { return nil }
        return try? BudgetSpec(id: id, key: key, unit: template.unit, kind: template.kind, failMode: template.failMode,
                                reach: template.reach)
    }

    /// Longest id of a budget made from a template, and longest value of one key dimension.
    public static let maxIDBytes = 512
    public static let maxValueBytes = 128

    /// A key value a budget can be made for: 1 to `maxValueBytes` bytes of printable ASCII
    /// other than `,` `=` and space (consumer ids, model and route names). Anything else from
    /// a node is refused, not made into a budget.
    public static func acceptable(_ v: some StringProtocol) -> Bool {
        !v.isEmpty && v.utf8.count <= maxValueBytes && v.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && $0 != 0x2c && $0 != 0x3d }
    }

    /// The budgets a request by `consumer` to `route` and `model` is charged to, all at once.
    /// A template scoped to a dimension the request lacks (no model, say) is skipped.
    public func budgets(for consumer: Consumer, route: String? = nil, model: String? = nil) throws(AllotError) -> [BudgetSpec] {
        guard let tier = tiers[consumer.tier] else {
            let known = tiers.keys.sorted().joined(separator: ", ")
            throw AllotError(.unknownTier, "consumer \(consumer.id) names tier '\(consumer.tier)', which is not configured (known: \(known))")
        }
        for name in consumer.overrides.keys where !tier.templates.contains(where: { $0.name == name }) {
            throw AllotError(.unknownTemplate, "consumer \(consumer.id) overrides '\(name)', which tier \(tier.name) does not define")
        }
        let values: [Dimension: String?] = [
            .tenant: consumer.tenant, .team: consumer.team, .consumer: consumer.id,
            .route: route, .model: model,
        ]
        var out: [BudgetSpec] = []
        for t in tier.templates {
            var keyValues: [Dimension: String] = [:]
            var complete = true
            for d in t.scope {
                if let v = values[d] ?? nil { keyValues[d] = v } else { complete = false }
            }
            guard complete else { continue }
            let key = BudgetKey(keyValues)
            let kind = consumer.overrides[t.name] ?? t.kind
            out.append(try BudgetSpec(id: BudgetID(template: "\(tier.name).\(t.name)", key: key), key: key,
                                      unit: t.unit, kind: kind, failMode: t.failMode))
        }
        return out
    }
}
