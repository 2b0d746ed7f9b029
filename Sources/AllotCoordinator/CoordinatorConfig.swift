import AllotConfig
import AllotCore
import AllotTransport
import Foundation

/// Everything `allot coordinator` needs, from one YAML file (flags override it): the shared
/// sections (`DeploymentConfig`) and the coordinator's own (`coordinator`, `cluster`,
/// `ledger`, `upstream`, `limits`). Errors name the field that is wrong.
public struct CoordinatorConfig: Sendable {
    public var name = "coordinator"
    public var listenHost = "127.0.0.1"
    public var listenPort = 7400
    public var adminHost = "127.0.0.1"
    public var adminPort = 7401
    /// `tls`, `lease`, `budgets`, `tiers` (the lease settings are copied into `core.allocator`).
    public var shared = DeploymentConfig()
    public var tlsDirectory: String {
        get { shared.tlsDirectory }
        set { shared.tlsDirectory = newValue }
    }
    public var trustDomain: String? {
        get { shared.trustDomain }
        set { shared.trustDomain = newValue }
    }
    public var budgets: [BudgetSpec] {
        get { shared.budgets }
        set { shared.budgets = newValue }
    }
    public var tiers: [Tier] {
        get { shared.tiers }
        set { shared.tiers = newValue }
    }
    public var core = CoordinatorCore.Settings()
    /// The admin API (`coordinator.admin_api`: HTTPS, mutual TLS, admin certificates; off when nil).
    public var adminAPIHost: String?
    public var adminAPIPort = 0
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

    /// Quota budgets kept here, explicit or in tier templates (what a ledger is for). A
    /// region's global quotas are recorded by the global cluster's ledger instead.
    public var hasQuotas: Bool {
        shared.hasQuotas { upstream == nil || $0 == .regional }
    }

    public init() {}

    /// A coordinator of the deployment `shared` describes, with the default settings otherwise.
    public init(shared: DeploymentConfig) {
        self.shared = shared
        core.allocator = shared.allocator
        core.tiers = shared.tiers
        core.softLimits = shared.softLimits
    }

    /// Parses and validates a YAML document (see docs/operations.md for a full example).
    public init(yaml: String) throws(AllotError) {
        let raw: File = try ConfigFields.decode(File.self, yaml)
        // A coordinator serving only Envoy's rate-limit rules needs no budget or tier.
        let shared = try DeploymentConfig(yaml: yaml, requirePolicy: raw.envoy_ratelimit == nil)
        self.init(shared: shared)
        // The first `allot config apply` is diffed against it ("" if it cannot be written back).
        core.policy = (try? PolicyDocument(file: yaml).yaml) ?? ""
        if let c = raw.coordinator {
            if let n = c.name { name = n }
            if let l = c.listen { (listenHost, listenPort) = try ConfigFields.address(l, field: "coordinator.listen") }
            if let a = c.admin { (adminHost, adminPort) = try ConfigFields.address(a, field: "coordinator.admin") }
            if let a = c.admin_api {
                let (h, p) = try ConfigFields.address(a, field: "coordinator.admin_api")
                (adminAPIHost, adminAPIPort) = (h, p)
            }
            if let a = c.advertise {
                _ = try ConfigFields.address(a, field: "coordinator.advertise")
                advertise = a
            }
        }
        // envoyproxy/ratelimit's rule files (`allot ratelimit-service` nodes ask for their budgets).
        if let paths = raw.envoy_ratelimit { core.descriptors = try RateLimitRulesFile.load(paths) }
        if let c = raw.cluster {
            var cs = ClusterService.Settings()
            cs.seeds = c.seeds ?? []
            for (i, seed) in cs.seeds.enumerated() { _ = try ConfigFields.address(seed, field: "cluster.seeds[\(i)]") }
            if let v = c.protocol_period { cs.membership.protocolPeriod = try ConfigFields.duration(v, field: "cluster.protocol_period") }
            if let v = c.ping_timeout { cs.membership.pingTimeout = try ConfigFields.duration(v, field: "cluster.ping_timeout") }
            if let v = c.suspicion_timeout { cs.membership.suspicionTimeout = try ConfigFields.duration(v, field: "cluster.suspicion_timeout") }
            if let v = c.join_timeout { cs.joinTimeout = try ConfigFields.duration(v, field: "cluster.join_timeout") }
            if let v = c.indirect_probes {
                guard (0...16).contains(v) else { throw AllotError(.invalidSettings, "cluster.indirect_probes must be between 0 and 16 (got \(v))") }
                cs.membership.indirectProbes = v
            }
            cs.members = c.members ?? cs.seeds
            for (i, m) in cs.members.enumerated() { _ = try ConfigFields.address(m, field: "cluster.members[\(i)]") }
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
        core.name = name
        if let u = raw.upstream {
            var up = UpstreamConfig(coordinators: u.coordinators ?? [], name: u.name)
            guard !up.coordinators.isEmpty else {
                throw AllotError(.invalidSettings, "upstream.coordinators: name at least one coordinator of the global cluster (HOST:PORT)")
            }
            for (i, a) in up.coordinators.enumerated() { _ = try ConfigFields.address(a, field: "upstream.coordinators[\(i)]") }
            up.tlsDirectory = u.tls_dir
            up.trustDomain = u.trust_domain
            if let v = u.refresh_interval { up.refreshInterval = try ConfigFields.duration(v, field: "upstream.refresh_interval") }
            upstream = up
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
                let d = try ConfigFields.duration(v, field: "limits.\(key)")
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
    }

    public static func load(path: String) throws -> CoordinatorConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw AllotError(.invalidSettings, "cannot read the configuration file \(path)")
        }
        var cfg = try CoordinatorConfig(yaml: text)
        cfg.tlsDirectory = ConfigFields.resolve(cfg.tlsDirectory, relativeTo: path)
        if let d = cfg.upstream?.tlsDirectory { cfg.upstream?.tlsDirectory = ConfigFields.resolve(d, relativeTo: path) }
        if case .sqlite(let p) = cfg.ledger { cfg.ledger = .sqlite(path: ConfigFields.resolve(p, relativeTo: path)) }
        // The embedded default: quota budgets are durable in a SQLite file beside the
        // configuration, with no setup (`ledger: none` turns it off).
        if !cfg.ledgerSet && cfg.hasQuotas {
            cfg.ledger = .sqlite(path: ConfigFields.resolve(defaultLedgerFile, relativeTo: path))
        }
        return cfg
    }

    // MARK: the file's shape

    struct File: Decodable {
        struct Coordinator: Decodable { var name: String?; var listen: String?; var admin: String?; var admin_api: String?; var advertise: String? }
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
        struct Limits: Decodable {
            var max_frame_bytes: Int?; var max_items_per_frame: Int?; var items_per_second: Int64?
            var handshake_timeout: String?; var hello_timeout: String?; var idle_timeout: String?
            var max_connections: Int?; var max_connections_per_identity: Int?; var max_refused_frames: Int?
            var tier_budgets: Int?; var tier_budgets_per_tier: Int?; var tier_budgets_per_node: Int?
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
        var limits: Limits?
        var envoy_ratelimit: [String]?
    }
}
