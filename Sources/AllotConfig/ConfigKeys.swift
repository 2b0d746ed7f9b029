import AllotCore
import Yams

/// Unknown keys are errors, not silently ignored: a typo must not change a cap. The keys of
/// every section but the gateway's (`gateway`, `models`, `tiers[].entitlements`, which
/// `GatewayConfig` checks itself).
public enum ConfigKeys {
    static let known: [String: Set<String>] = [
        "": ["coordinator", "cluster", "ledger", "upstream", "tls", "lease", "limits", "budgets", "tiers", "gateway", "models",
             "deletions", "removed", "envoy_ratelimit"],
        "tiers[]": ["name", "templates", "entitlements", "shadow", "soft_limits"],
        "templates[]": ["name", "scope", "unit", "kind", "limit", "period", "burst", "allowance", "window",
                        "time_zone", "reset", "fail_mode", "static_allowance", "reach", "shadow", "soft_limits"],
        "coordinator": ["name", "listen", "admin", "admin_api", "advertise"],
        "cluster": ["seeds", "members", "protocol_period", "ping_timeout", "suspicion_timeout", "join_timeout", "indirect_probes", "quorum"],
        "tls": ["dir", "trust_domain"],
        "lease": ["ttl", "refresh_interval", "min_slice", "max_slice"],
        "limits": ["max_frame_bytes", "max_items_per_frame", "items_per_second", "handshake_timeout", "hello_timeout",
                   "idle_timeout", "max_connections", "max_connections_per_identity", "max_refused_frames",
                   "tier_budgets", "tier_budgets_per_tier", "tier_budgets_per_node"],
        "budgets[]": ["id", "unit", "kind", "limit", "period", "burst", "allowance", "window", "time_zone",
                      "reset", "fail_mode", "static_allowance", "reach", "shadow", "soft_limits"],
        "removed[]": ["template", "version"],
        "upstream": ["coordinators", "name", "tls_dir", "trust_domain", "refresh_interval"],
    ]

    public static func check(_ yaml: String) throws(AllotError) {
        let root: Any?
        do { root = try Yams.load(yaml: yaml) } catch {
            throw AllotError(.invalidSettings, "the configuration is not valid YAML: \(error)")
        }
        guard let top = root as? [String: Any] else {
            throw AllotError(.invalidSettings, "the configuration must be a YAML mapping with coordinator, tls, lease, limits and budgets")
        }
        try check(top, "", "")
        for section in ["coordinator", "cluster", "upstream", "tls", "lease", "limits"] {
            if let m = top[section] as? [String: Any] { try check(m, section, section) }
        }
        if let list = top["tiers"] as? [Any] {
            for (i, t) in list.enumerated() {
                let m = try mapping(t, "tiers[\(i)]")
                try check(m, "tiers[]", "tiers[\(i)]")
                for (j, x) in (m["templates"] as? [Any] ?? []).enumerated() {
                    try check(try mapping(x, "tiers[\(i)].templates[\(j)]"), "templates[]", "tiers[\(i)].templates[\(j)]")
                }
            }
        }
        for (i, b) in (top["budgets"] as? [Any] ?? []).enumerated() {
            try check(try mapping(b, "budgets[\(i)]"), "budgets[]", "budgets[\(i)]")
        }
        for (i, r) in (top["removed"] as? [Any] ?? []).enumerated() {
            try check(try mapping(r, "removed[\(i)]"), "removed[]", "removed[\(i)]")
        }
    }

    private static func mapping(_ value: Any, _ path: String) throws(AllotError) -> [String: Any] {
        guard let m = value as? [String: Any] else { throw AllotError(.invalidSettings, "\(path) must be a mapping") }
        return m
    }

    private static func check(_ map: [String: Any], _ section: String, _ path: String) throws(AllotError) {
        for key in map.keys.sorted() where !(known[section] ?? []).contains(key) {
            let allowed = (known[section] ?? []).sorted().joined(separator: ", ")
            throw AllotError(.invalidSettings, "\(path.isEmpty ? key : path + "." + key): unknown key; allowed here: \(allowed)")
        }
    }
}
