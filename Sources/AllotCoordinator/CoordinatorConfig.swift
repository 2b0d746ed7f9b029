import AllotCore
import AllotTransport
import Foundation
import Yams

/// Everything `allot coordinator` needs, from one YAML file (flags override it).
/// Errors name the field that is wrong (`budgets[2].burst: ...`).
public struct CoordinatorConfig: Sendable {
    public var name = "coordinator"
    public var listenHost = "127.0.0.1"
    public var listenPort = 7400
    public var adminHost = "127.0.0.1"
    public var adminPort = 7401
    public var tlsDirectory = "certs"
    /// Overrides `<tls.dir>/trust-domain` when set.
    public var trustDomain: String?
    public var core = CoordinatorCore.Settings()
    public var budgets: [BudgetSpec] = []
    /// Budgets created on first use from ids `tier.template/key`.
    public var tiers: [Tier] = []
    /// Where peers and nodes reach this coordinator (`coordinator.advertise`; default: listen).
    public var advertise: String?
    /// Cluster mode when set (`cluster.seeds`).
    public var cluster: ClusterService.Settings?
    /// `cluster.quorum`: default, a majority of `cluster.members` (the seeds when not given).
    public var quorum = 0
    /// `ledger:` — sqlite:PATH, postgres://USER@HOST:PORT/DB or none. A file loaded by
    /// `load(path:)` with quota budgets and no `ledger:` gets `sqlite:allot-ledger.db` beside it.
    public var ledger = LedgerLocation.none
    /// Whether the file said `ledger:` at all.
    public var ledgerSet = false
    public static let defaultLedgerFile = "allot-ledger.db"
    /// `upstream:` — this cluster is a region: its `reach: global` budgets are leased from
    /// the global cluster at these addresses (as node `name`, with a node certificate).
    public var upstream: UpstreamConfig?

    public struct UpstreamConfig: Sendable, Hashable {
        public var coordinators: [String]
        /// The node identity towards the global cluster (`node-NAME.pem` in the TLS directory);
        /// default: the coordinator's name.
        public var name: String?
        /// Default: `tls.dir` (one CA for every level).
        public var tlsDirectory: String?
        public var trustDomain: String?
        /// How often the region refreshes each global budget (longer than the leaves').
        public var refreshInterval: Duration = .seconds(2)
        public init(coordinators: [String], name: String? = nil) {
            self.coordinators = coordinators
            self.name = name
        }
    }

    /// Fault injection on the link to the global cluster (`--upstream-latency-ms`,
    /// `--upstream-faults`; rigs and tests only): SIGUSR1 cuts it, SIGUSR2 heals it.
    public var upstreamFaults: FaultyLink.Settings?

    /// Quota budgets kept here, explicit or in tier templates (what a ledger is for). A
    /// region's global quotas are recorded by the global cluster's ledger instead.
    public var hasQuotas: Bool {
        func local(_ kind: BudgetKind, _ reach: Reach) -> Bool { kind.isQuota && (upstream == nil || reach == .regional) }
        return budgets.contains { local($0.kind, $0.reach) } || tiers.contains { $0.templates.contains { local($0.kind, $0.reach) } }
    }

    public init() {}

    /// Parses and validates a YAML document (see docs/operations.md for a full example).
    public init(yaml: String) throws(AllotError) {
        try Self.checkKeys(yaml)
        let raw: File
        do {
            raw = try YAMLDecoder().decode(File.self, from: yaml)
        } catch {
            throw AllotError(.invalidSettings, "the configuration is not valid YAML for allot: \(Self.describe(error))")
        }
        self.init()
        if let c = raw.coordinator {
            if let n = c.name { name = n }
            if let l = c.listen { (listenHost, listenPort) = try Self.address(l, field: "coordinator.listen") }
            if let a = c.admin { (adminHost, adminPort) = try Self.address(a, field: "coordinator.admin") }
            if let a = c.advertise {
                _ = try Self.address(a, field: "coordinator.advertise")
                advertise = a
            }
        }
        if let c = raw.cluster {
            var cs = ClusterService.Settings()
            cs.seeds = c.seeds ?? []
            for (i, seed) in cs.seeds.enumerated() { _ = try Self.address(seed, field: "cluster.seeds[\(i)]") }
            if let v = c.protocol_period { cs.membership.protocolPeriod = try Self.duration(v, field: "cluster.protocol_period") }
            if let v = c.ping_timeout { cs.membership.pingTimeout = try Self.duration(v, field: "cluster.ping_timeout") }
            if let v = c.suspicion_timeout { cs.membership.suspicionTimeout = try Self.duration(v, field: "cluster.suspicion_timeout") }
            if let v = c.join_timeout { cs.joinTimeout = try Self.duration(v, field: "cluster.join_timeout") }
            if let v = c.indirect_probes {
                guard (0...16).contains(v) else { throw AllotError(.invalidSettings, "cluster.indirect_probes must be between 0 and 16 (got \(v))") }
                cs.membership.indirectProbes = v
            }
            cs.members = c.members ?? cs.seeds
            for (i, m) in cs.members.enumerated() { _ = try Self.address(m, field: "cluster.members[\(i)]") }
            // The quorum is a majority of every coordinator there is, never of the seeds alone:
            // then no partition leaves two sides that both grant.
            let members = Set(cs.members).count
            quorum = members / 2 + 1
            if let q = c.quorum {
                guard q > members / 2 && q <= max(1, members) else {
                    throw AllotError(.invalidSettings, "cluster.quorum must be a majority of cluster.members (\(members) coordinators): between \(members / 2 + 1) and \(members); got \(q)")
                }
                quorum = q
            }
            guard cs.membership.pingTimeout < cs.membership.protocolPeriod else {
                throw AllotError(.invalidSettings, "cluster.ping_timeout must be shorter than cluster.protocol_period")
            }
            cluster = cs
        }
        if let l = raw.ledger {
            do { ledger = try LedgerLocation(parsing: l) } catch { throw AllotError(.invalidSettings, error.description) }
            ledgerSet = true
        }
        if let t = raw.tls?.dir { tlsDirectory = t }
        if let d = raw.tls?.trust_domain { trustDomain = d }
        core.name = name
        if let u = raw.upstream {
            var up = UpstreamConfig(coordinators: u.coordinators ?? [], name: u.name)
            guard !up.coordinators.isEmpty else {
                throw AllotError(.invalidSettings, "upstream.coordinators: name at least one coordinator of the global cluster (HOST:PORT)")
            }
            for (i, a) in up.coordinators.enumerated() { _ = try Self.address(a, field: "upstream.coordinators[\(i)]") }
            up.tlsDirectory = u.tls_dir
            up.trustDomain = u.trust_domain
            if let v = u.refresh_interval { up.refreshInterval = try Self.duration(v, field: "upstream.refresh_interval") }
            upstream = up
        }
        if let l = raw.lease {
            if let v = l.ttl { core.allocator.leaseTTL = try Self.duration(v, field: "lease.ttl") }
            if let v = l.refresh_interval { core.allocator.refreshInterval = try Self.duration(v, field: "lease.refresh_interval") }
            if let v = l.min_slice { core.allocator.minSlice = v }
            if let v = l.max_slice { core.allocator.maxSlice = v }
        }
        if let l = raw.limits {
            if let v = l.max_frame_bytes {
                guard v >= 1024 && v <= 16 << 20 else {
                    throw AllotError(.invalidSettings, "limits.max_frame_bytes must be between 1024 and 16777216 (got \(v))")
                }
                core.maxFrameBytes = v
            }
            if let v = l.max_items_per_frame {
                guard v >= 1 && v <= 1 << 16 else {
                    throw AllotError(.invalidSettings, "limits.max_items_per_frame must be between 1 and 65536 (got \(v))")
                }
                core.session.maxItemsPerFrame = v
            }
            if let v = l.items_per_second {
                guard v > 0 else { throw AllotError(.invalidSettings, "limits.items_per_second must be positive (got \(v))") }
                core.session.itemsPerSecond = v
            }
            func positive(_ v: Int?, _ key: String, max: Int = 10_000_000) throws(AllotError) -> Int? {
                guard let v else { return nil }
                guard v >= 1 && v <= max else { throw AllotError(.invalidSettings, "limits.\(key) must be between 1 and \(max) (got \(v))") }
                return v
            }
            func timeout(_ v: String?, _ key: String) throws(AllotError) -> Duration? {
                guard let v else { return nil }
                let d = try Self.duration(v, field: "limits.\(key)")
                guard d >= .milliseconds(100) && d <= .seconds(3600) else {
                    throw AllotError(.invalidSettings, "limits.\(key) must be between 100ms and 1h (got \(v))")
                }
                return d
            }
            if let v = try timeout(l.handshake_timeout, "handshake_timeout") { core.listener.handshakeTimeout = v }
            if let v = try timeout(l.hello_timeout, "hello_timeout") { core.listener.helloTimeout = v }
            if let v = try timeout(l.idle_timeout, "idle_timeout") { core.listener.idleTimeout = v }
            if let v = try positive(l.max_connections, "max_connections", max: 1_000_000) { core.listener.maxConnections = v }
            if let v = try positive(l.max_connections_per_identity, "max_connections_per_identity", max: 1_000) { core.listener.maxConnectionsPerIdentity = v }
            if let v = try positive(l.max_refused_frames, "max_refused_frames", max: 100_000) { core.session.maxRefusals = v }
            if let v = try positive(l.tier_budgets, "tier_budgets") { core.tierLimits.total = v }
            if let v = try positive(l.tier_budgets_per_tier, "tier_budgets_per_tier") { core.tierLimits.perTier = v }
            if let v = try positive(l.tier_budgets_per_node, "tier_budgets_per_node") { core.tierLimits.perNode = v }
        }
        try core.allocator.validate()
        var seen = Set<String>()
        for (i, b) in (raw.budgets ?? []).enumerated() {
            let spec = try Self.budget(b, field: "budgets[\(i)]")
            guard seen.insert(spec.id.rawValue).inserted else {
                throw AllotError(.duplicateBudget, "budgets[\(i)].id: '\(spec.id)' is defined twice")
            }
            budgets.append(spec)
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
                let spec = try Self.budget(asBudget, field: field)
                let scope = try (b.scope ?? []).map { d throws(AllotError) in try Dimension(parsing: d) }
                templates.append(try BudgetTemplate(name: spec.id.rawValue, unit: spec.unit, kind: spec.kind,
                                                    scope: scope, failMode: spec.failMode, reach: spec.reach))
            }
            tiers.append(try Tier(name: name, templates: templates))
        }
        _ = try TierCatalog(tiers)
        core.tiers = tiers
        guard !budgets.isEmpty || !tiers.isEmpty else {
            throw AllotError(.invalidSettings, "budgets: the configuration defines no budget and no tier; add at least one")
        }
    }

    public static func load(path: String) throws -> CoordinatorConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw AllotError(.invalidSettings, "cannot read the configuration file \(path)")
        }
        var cfg = try CoordinatorConfig(yaml: text)
        cfg.tlsDirectory = resolve(cfg.tlsDirectory, relativeTo: path)
        if let d = cfg.upstream?.tlsDirectory { cfg.upstream?.tlsDirectory = resolve(d, relativeTo: path) }
        if case .sqlite(let p) = cfg.ledger { cfg.ledger = .sqlite(path: resolve(p, relativeTo: path)) }
        // The embedded default: quota budgets are durable in a SQLite file beside the
        // configuration, with no setup (`ledger: none` turns it off).
        if !cfg.ledgerSet && cfg.hasQuotas {
            cfg.ledger = .sqlite(path: resolve(defaultLedgerFile, relativeTo: path))
        }
        return cfg
    }

    /// A relative path in a configuration file is relative to the file, not to the working directory.
    public static func resolve(_ p: String, relativeTo file: String) -> String {
        p.hasPrefix("/") ? p : URL(fileURLWithPath: file).deletingLastPathComponent().appendingPathComponent(p).path
    }

    // MARK: the file's shape

    struct File: Decodable {
        struct Coordinator: Decodable { var name: String?; var listen: String?; var admin: String?; var advertise: String? }
        struct Cluster: Decodable {
            var seeds: [String]?
            var protocol_period: String?
            var ping_timeout: String?
            var suspicion_timeout: String?
            var join_timeout: String?
            var indirect_probes: Int?
            var quorum: Int?
            var members: [String]?
        }
        struct TLS: Decodable { var dir: String?; var trust_domain: String? }
        struct Lease: Decodable { var ttl: String?; var refresh_interval: String?; var min_slice: Int64?; var max_slice: Int64? }
        struct Limits: Decodable {
            var max_frame_bytes: Int?; var max_items_per_frame: Int?; var items_per_second: Int64?
            var handshake_timeout: String?; var hello_timeout: String?; var idle_timeout: String?
            var max_connections: Int?; var max_connections_per_identity: Int?; var max_refused_frames: Int?
            var tier_budgets: Int?; var tier_budgets_per_tier: Int?; var tier_budgets_per_node: Int?
        }
        struct Budget: Decodable {
            var id: String?
            var name: String?
            var scope: [String]?
            var unit: String?
            var kind: String?
            var limit: Int64?
            var period: String?
            var burst: Int64?
            var allowance: Int64?
            var window: String?
            var time_zone: String?
            var reset: String?
            var fail_mode: String?
            var static_allowance: Int64?
            var reach: String?
        }
        struct Upstream: Decodable {
            var coordinators: [String]?
            var name: String?
            var tls_dir: String?
            var trust_domain: String?
            var refresh_interval: String?
        }
        var coordinator: Coordinator?
        var cluster: Cluster?
        var ledger: String?
        var upstream: Upstream?
        var tls: TLS?
        var lease: Lease?
        var limits: Limits?
        var budgets: [Budget]?
        var tiers: [TierEntry]?

        /// A tier's templates have the shape of budgets, with `name` and `scope` instead of `id`
        /// (`checkKeys` keeps each list to its own keys).
        struct TierEntry: Decodable { var name: String?; var templates: [Budget]? }
    }

    /// Unknown keys are errors, not silently ignored: a typo must not change a cap.
    public static func checkKeys(_ yaml: String) throws(AllotError) {
        let known: [String: Set<String>] = [
            // `gateway`, `models` and `tiers[].entitlements` belong to the gateway, which reads
            // the same file and checks those sections itself (GatewayConfig).
            "": ["coordinator", "cluster", "ledger", "upstream", "tls", "lease", "limits", "budgets", "tiers", "gateway", "models"],
            "tiers[]": ["name", "templates", "entitlements"],
            "templates[]": ["name", "scope", "unit", "kind", "limit", "period", "burst", "allowance", "window",
                            "time_zone", "reset", "fail_mode", "static_allowance", "reach"],
            "coordinator": ["name", "listen", "admin", "advertise"],
            "cluster": ["seeds", "members", "protocol_period", "ping_timeout", "suspicion_timeout", "join_timeout", "indirect_probes", "quorum"],
            "tls": ["dir", "trust_domain"],
            "lease": ["ttl", "refresh_interval", "min_slice", "max_slice"],
            "limits": ["max_frame_bytes", "max_items_per_frame", "items_per_second", "handshake_timeout", "hello_timeout",
                       "idle_timeout", "max_connections", "max_connections_per_identity", "max_refused_frames",
                       "tier_budgets", "tier_budgets_per_tier", "tier_budgets_per_node"],
            "budgets[]": ["id", "unit", "kind", "limit", "period", "burst", "allowance", "window", "time_zone",
                          "reset", "fail_mode", "static_allowance", "reach"],
            "upstream": ["coordinators", "name", "tls_dir", "trust_domain", "refresh_interval"],
        ]
        let root: Any?
        do { root = try Yams.load(yaml: yaml) } catch {
            throw AllotError(.invalidSettings, "the configuration is not valid YAML: \(error)")
        }
        guard let top = root as? [String: Any] else {
            throw AllotError(.invalidSettings, "the configuration must be a YAML mapping with coordinator, tls, lease, limits and budgets")
        }
        func check(_ map: [String: Any], _ section: String, _ path: String) throws(AllotError) {
            for key in map.keys.sorted() where !(known[section] ?? []).contains(key) {
                let allowed = (known[section] ?? []).sorted().joined(separator: ", ")
                throw AllotError(.invalidSettings, "\(path.isEmpty ? key : path + "." + key): unknown key; allowed here: \(allowed)")
            }
        }
        try check(top, "", "")
        for section in ["coordinator", "cluster", "upstream", "tls", "lease", "limits"] {
            if let m = top[section] as? [String: Any] { try check(m, section, section) }
        }
        if let list = top["tiers"] as? [Any] {
            for (i, t) in list.enumerated() {
                guard let m = t as? [String: Any] else { throw AllotError(.invalidSettings, "tiers[\(i)] must be a mapping") }
                try check(m, "tiers[]", "tiers[\(i)]")
                for (j, x) in (m["templates"] as? [Any] ?? []).enumerated() {
                    guard let tm = x as? [String: Any] else {
                        throw AllotError(.invalidSettings, "tiers[\(i)].templates[\(j)] must be a mapping")
                    }
                    try check(tm, "templates[]", "tiers[\(i)].templates[\(j)]")
                }
            }
        }
        if let list = top["budgets"] as? [Any] {
            for (i, b) in list.enumerated() {
                guard let m = b as? [String: Any] else {
                    throw AllotError(.invalidSettings, "budgets[\(i)] must be a mapping")
                }
                try check(m, "budgets[]", "budgets[\(i)]")
            }
        }
    }

    static func budget(_ b: File.Budget, field: String) throws(AllotError) -> BudgetSpec {
        guard let id = b.id, !id.isEmpty else { throw AllotError(.invalidSettings, "\(field).id is missing") }
        let unit = try Unit(parsing: b.unit ?? "requests")
        let kind: BudgetKind
        switch b.kind ?? "" {
        case "rate":
            guard let limit = b.limit else { throw AllotError(.invalidLimit, "\(field).limit is missing for a rate budget") }
            kind = .rate(limit: limit, period: try duration(b.period ?? "1s", field: "\(field).period"), burst: b.burst ?? limit)
        case "quota":
            guard let allowance = b.allowance else { throw AllotError(.invalidLimit, "\(field).allowance is missing for a quota budget") }
            guard let period = CalendarWindow.Period(rawValue: b.window ?? "day") else {
                throw AllotError(.invalidSettings, "\(field).window must be minute, hour, day or month (got \(b.window ?? ""))")
            }
            kind = .quota(allowance: allowance, window: try CalendarWindow(period, timeZone: b.time_zone ?? "UTC",
                                                                           resetMinute: try resetMinute(b.reset ?? "00:00", field: "\(field).reset")))
        case "concurrency":
            guard let limit = b.limit else { throw AllotError(.invalidLimit, "\(field).limit is missing for a concurrency budget") }
            kind = .concurrency(limit: limit)
        default:
            throw AllotError(.unknownKind, "\(field).kind must be rate, quota or concurrency (got '\(b.kind ?? "")')")
        }
        let failMode: FailMode
        switch b.fail_mode ?? "closed" {
        case "closed": failMode = .closed
        case "open": failMode = .open
        case "static": failMode = .static(allowancePerTTL: b.static_allowance ?? 0)
        default: throw AllotError(.invalidSettings, "\(field).fail_mode must be closed, open or static (got '\(b.fail_mode ?? "")')")
        }
        guard let reach = Reach(rawValue: b.reach ?? "regional") else {
            throw AllotError(.invalidSettings, "\(field).reach must be regional or global (got '\(b.reach ?? "")')")
        }
        do {
            return try BudgetSpec(id: BudgetID(id), unit: unit, kind: kind, failMode: failMode, reach: reach)
        } catch {
            throw AllotError(error.code, "\(field): \(error.message)")
        }
    }

    /// `250ms`, `10s`, `5m`, `1h`, `1d`.
    public static func duration(_ s: String, field: String) throws(AllotError) -> Duration {
        let units: [(String, Int64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000),
                                        ("h", 3_600_000_000_000), ("d", 86_400_000_000_000)]
        for (suffix, ns) in units where s.hasSuffix(suffix) {
            if let v = Int64(s.dropLast(suffix.count)), v > 0 { return .nanoseconds(v * ns) }
        }
        throw AllotError(.invalidDuration, "\(field): '\(s)' is not a positive duration such as 250ms, 10s, 5m, 1h or 1d")
    }

    public static func address(_ s: String, field: String) throws(AllotError) -> (String, Int) {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port) else {
            throw AllotError(.invalidSettings, "\(field): '\(s)' is not HOST:PORT")
        }
        return (String(s[..<colon]), port)
    }

    static func resetMinute(_ s: String, field: String) throws(AllotError) -> Int {
        let p = s.split(separator: ":")
        guard p.count == 2, let h = Int(p[0]), let m = Int(p[1]), (0..<24).contains(h), (0..<60).contains(m) else {
            throw AllotError(.nonexistentWindow, "\(field): '\(s)' is not a time of day HH:MM")
        }
        return h * 60 + m
    }

    public static func describe(_ error: any Error) -> String {
        if let d = error as? DecodingError {
            switch d {
            case .typeMismatch(_, let c), .valueNotFound(_, let c), .keyNotFound(_, let c), .dataCorrupted(let c):
                let path = c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
                return "\(path): \(c.debugDescription)"
            @unknown default: return "\(d)"
            }
        }
        return "\(error)"
    }
}
