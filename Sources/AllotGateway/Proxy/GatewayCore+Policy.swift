import AllotConfig
import AllotCore
import Foundation

/// The policy — budgets, tiers (templates, entitlements, shadow, soft limits) and models —
/// as coordinators send it (`allot config apply`): a gateway starts with its file's and takes
/// each newer version it receives, without a restart, keeping the newest on disk beside its
/// directory cache (`<gateway.directory_cache>.policy`), so a restart with no coordinator
/// reachable still has it. Listeners, TLS, the upstream and lease settings stay the file's.
extension GatewayCore {
    struct Policy: Sendable {
        /// 0: the file's.
        var version: UInt64 = 0
        var yaml = ""
        var config: GatewayConfig
        var catalog: TierCatalog
        var overrides: [BudgetID: BudgetSpec]
        var tiers: Set<String>
        /// Per tier, the first template removed under `deletions: refuse`
        /// (docs/operations.md, "Deleting a budget").
        var removed: [String: (template: String, version: Int64)] = [:]

        init(config: GatewayConfig, version: UInt64 = 0, yaml: String = "") throws(AllotError) {
            (self.config, self.version, self.yaml) = (config, version, yaml)
            catalog = try config.catalog
            overrides = Dictionary(config.shared.budgets.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            tiers = Set(config.shared.tiers.map(\.name))
            if config.shared.deletions == .refuse {
                for (t, v) in config.shared.removedTemplates.sorted(by: { $0.key > $1.key }) {
                    removed[String(t.prefix { $0 != "." })] = (t, v)
                }
            }
        }

        /// Under `deletions: refuse`, a consumer of a tier one of whose templates was removed
        /// is refused with 403 naming the template and the version that removed it (its
        /// requests were charged to it: without it they would pass unbounded by it).
        func check(removalsOf tier: String) throws(GatewayError) {
            guard let (t, v) = removed[tier] else { return }
            throw GatewayError(403, type: "permission_error", code: "budget_removed",
                               "budget template \(t) was removed in configuration version \(v) (deletions: refuse; restore it, or apply a version with deletions: allow)",
                               budget: t)
        }

        /// `consumer` without overrides of templates its tier no longer has (removed under
        /// `deletions: allow`: its requests are no longer charged to them).
        func current(_ consumer: Consumer) -> Consumer {
            guard !consumer.overrides.isEmpty, let tier = catalog.tiers[consumer.tier] else { return consumer }
            var c = consumer
            c.overrides = c.overrides.filter { name, _ in tier.templates.contains { $0.name == name } }
            return c
        }

        /// A consumer of a tier the policy in force no longer has is refused with 403 naming
        /// the version (its budgets are gone: nothing would bound its requests).
        func check(tier: String) throws(GatewayError) {
            guard version > 0, !tiers.contains(tier) else { return }
            throw GatewayError(403, type: "permission_error", code: "tier_removed",
                               "tier \(tier) is not in configuration version \(version) (removed; see allot config history)",
                               budget: "config.v\(version)")
        }
    }

    /// The policy version in force (0: the file's).
    public var policyVersion: UInt64 { policy.withLock { $0.version } }

    /// A policy from a coordinator (or the cache), as YAML: applied when newer than the one in
    /// force (under the lock of the check: pushes of two coordinators may cross). Its budgets,
    /// tiers, shadow and soft limits, models and entitlements replace the file's. Requests
    /// resolve their budgets again; a directory consumer of a tier it adds is served. True
    /// when applied; an error (nothing applied) for a document this gateway cannot take.
    @discardableResult
    public func apply(policy yaml: String, version: UInt64) throws(AllotError) -> Bool {
        guard version > policyVersion else { return false } // (parse only what is new)
        let incoming = try GatewayConfig(yaml: yaml)
        // A policy without `models` leaves the file's (a coordinator's file may have none).
        let hasModels = yaml.hasPrefix("models:") || yaml.contains("\nmodels:")
        let tiers = Set(incoming.shared.tiers.map(\.name))
        return try policy.withLock { p throws(AllotError) -> Bool in
            // Under this lock: a resolve that read the old policy cannot keep its answer, and
            // two versions crossing are applied in their order.
            guard version > p.version else { return false }
            var next = p.config
            next.shared.budgets = incoming.shared.budgets
            next.shared.tiers = incoming.shared.tiers
            next.shared.shadowBudgets = incoming.shared.shadowBudgets
            next.shared.shadowTemplates = incoming.shared.shadowTemplates
            next.shared.softLimits = incoming.shared.softLimits
            (next.shared.deletions, next.shared.removedTemplates) = (incoming.shared.deletions, incoming.shared.removedTemplates)
            if hasModels { next.models = incoming.models }
            next.entitlements = incoming.entitlements
            p = try Policy(config: next, version: version, yaml: yaml)
            resolved.withLock { $0 = (version, [:]) }
            sources.withLock { s in
                (s.tiers, s.everyTier) = (tiers, true)
                let merged = s.merged
                consumers.withLock { $0 = merged }
            }
            metrics.policy(version: version)
            return true
        }
    }

    /// Where the policy is kept on disk: beside the directory cache (none without one).
    static func policyCache(_ directoryCache: String?) -> String? { directoryCache.map { $0 + ".policy" } }

    struct CachedPolicy: Codable {
        var version: UInt64
        var document: String
    }

    /// Writes the policy in force to `path` (as `saveDirectory` does: whole, then renamed).
    public func savePolicy(to path: String) throws {
        try savingPolicy.withLock { savedVersion in
            let (version, yaml) = policy.withLock { ($0.version, $0.yaml) }
            guard version > savedVersion else { return }
            try Self.replace(path, with: try JSONEncoder().encode(CachedPolicy(version: version, document: yaml)), tag: version,
                             field: "gateway.directory_cache (policy)")
            savedVersion = version
        }
    }

    /// Reads a policy saved by `savePolicy` (nil when there is no file).
    public static func loadPolicy(from path: String) throws(AllotError) -> (version: UInt64, yaml: String)? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path), let c = try? JSONDecoder().decode(CachedPolicy.self, from: data) else {
            throw AllotError(.invalidSettings, "\(path) is not a policy saved by allot")
        }
        return (c.version, c.document)
    }
}
