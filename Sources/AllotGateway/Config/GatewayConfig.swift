import AllotConfig
import AllotCore
import Foundation
import Yams

/// What `allot gateway` needs. It reads the same YAML file as the coordinator (so both agree
/// on tiers and budgets) and adds three sections of its own: `gateway`, `models` and each
/// tier's `entitlements`. Unknown keys are errors; messages name the field.
public struct GatewayConfig: Sendable {
    public var name = "gateway"
    public var listenHost = "127.0.0.1"
    public var listenPort = 8080
    /// Loopback by default: `/metrics`, `/healthz`, `/readyz` and the sidecar API.
    public var adminHost = "127.0.0.1"
    public var adminPort = 8081
    public var upstream = URL(string: "http://127.0.0.1:9000")!
    /// Name of the environment variable holding the upstream's API key (sent as Bearer).
    public var upstreamKeyEnv: String?
    /// One log line per request (`allot gateway --access-log`), with its request id.
    public var accessLog = false
    /// From sending the request to the response head.
    public var upstreamTimeout: Duration = .seconds(30)
    /// Longest silence while a response body streams.
    public var upstreamIdleTimeout: Duration = .seconds(30)
    public var maxBodyBytes = 1 << 20
    public var consumersFile = "consumers.yaml"
    public var auditDirectory: String? = "audit"
    public var auditMaxBytes = 64 << 20
    /// The audit chain's HMAC key (a 0600 file of at least 32 bytes; `allot audit keygen`).
    /// Unset: the chain is plain SHA-256 (finds accidents, not a rewrite).
    public var auditKeyFile: String?
    /// Where the consumer directory received from the coordinators is kept (nil: not kept),
    /// so a restart with no coordinator reachable still authenticates its keys.
    public var directoryCache: String?
    /// How often the audit head goes to the coordinator (kept in its ledger).
    public var auditReportInterval: Duration = .seconds(5)
    /// The coordinator, HOST:PORT (mutual TLS with `tls.dir`).
    public var coordinatorHost = "127.0.0.1"
    public var coordinatorPort = 7400
    /// A coordinator cluster: addresses to start from (`gateway.coordinator` with several
    /// comma-separated HOST:PORT); the node learns the rest from the coordinators.
    public var coordinatorSeeds: [String] { seeds.isEmpty ? ["\(coordinatorHost):\(coordinatorPort)"] : seeds }
    public var seeds: [String] = []
    /// How long a request may wait for a lease its node is already asking for (first use of
    /// a budget, or a refill in flight) before it is denied.
    public var admissionWait: Duration = .milliseconds(250)
    public var chainDepthHeader = "x-allot-chain-depth"
    /// Sidecar reservations not settled within this long are settled at their full amount.
    public var sidecarReservationTTL: Duration = .seconds(300)
    /// SHA-256 of the tokens that may call the sidecar (`Allot-Sidecar-Token` header); none:
    /// the sidecar endpoints are off (403). Several allow rotating a token without a gap.
    public var sidecarTokenHashes: [[UInt8]] = []
    /// A listener serving only `/metrics`, `/healthz` and `/readyz` (for Prometheus, without
    /// exposing the sidecar); nil: none (the admin listener serves them too).
    public var metricsAddress: (host: String, port: Int)?
    /// Clients of both listeners: the request head must arrive within `clientHeaderTimeout` of
    /// the connection (of the previous response, when kept alive: `clientIdleTimeout`), the
    /// body within `clientBodyTimeout` of the head.
    public var clientHeaderTimeout: Duration = .seconds(10)
    public var clientBodyTimeout: Duration = .seconds(60)
    public var clientIdleTimeout: Duration = .seconds(75)

    /// The coordinator's view of the same file: tiers (templates), explicit budgets, TLS.
    public var shared: DeploymentConfig
    public var models: [String: ModelPrice] = [:]
    public var entitlements: [String: Entitlements] = [:]
    /// Which (method, path) is forwarded as which route (`gateway.routes`); OpenAI's and
    /// Anthropic's paths unless the file lists its own. Deny by default either way.
    public var routes = RouteTable.standard

    public init(shared: DeploymentConfig) { self.shared = shared }

    public static func load(path: String) throws -> GatewayConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw AllotError(.invalidSettings, "cannot read the configuration file \(path)")
        }
        var cfg = try GatewayConfig(yaml: text)
        // Relative paths in the file are relative to the file.
        if !cfg.consumersFile.isEmpty { cfg.consumersFile = ConfigFields.resolve(cfg.consumersFile, relativeTo: path) }
        cfg.auditDirectory = cfg.auditDirectory.map { ConfigFields.resolve($0, relativeTo: path) }
        cfg.auditKeyFile = cfg.auditKeyFile.map { ConfigFields.resolve($0, relativeTo: path) }
        cfg.directoryCache = cfg.directoryCache.map { ConfigFields.resolve($0, relativeTo: path) }
        cfg.shared.tlsDirectory = ConfigFields.resolve(cfg.shared.tlsDirectory, relativeTo: path)
        return cfg
    }

    public init(yaml: String) throws(AllotError) {
        try self.init(shared: DeploymentConfig(yaml: yaml, requirePolicy: false))
        try Self.checkKeys(yaml)
        let raw: File
        do { raw = try YAMLDecoder().decode(File.self, from: yaml) } catch {
            throw AllotError(.invalidSettings, "the configuration is not valid YAML for allot: \(ConfigFields.describe(error))")
        }
        if let g = raw.gateway {
            if let v = g.name { name = v }
            if let v = g.listen { (listenHost, listenPort) = try ConfigFields.address(v, field: "gateway.listen") }
            if let v = g.admin { (adminHost, adminPort) = try ConfigFields.address(v, field: "gateway.admin") }
            if let v = g.upstream {
                guard let u = URL(string: v), u.scheme == "http" || u.scheme == "https", u.host != nil else {
                    throw AllotError(.invalidSettings, "gateway.upstream: '\(v)' is not an http(s) URL")
                }
                upstream = u
            }
            upstreamKeyEnv = g.upstream_key_env
            if let v = g.upstream_timeout { upstreamTimeout = try ConfigFields.duration(v, field: "gateway.upstream_timeout") }
            if let v = g.upstream_idle_timeout { upstreamIdleTimeout = try ConfigFields.duration(v, field: "gateway.upstream_idle_timeout") }
            if let v = g.max_body_bytes {
                guard v >= 1024 && v <= 64 << 20 else {
                    throw AllotError(.invalidSettings, "gateway.max_body_bytes must be between 1024 and 67108864 (got \(v))")
                }
                maxBodyBytes = v
            }
            if let v = g.consumers { consumersFile = v }
            if let v = g.audit_dir { auditDirectory = v.isEmpty ? nil : v }
            if let v = g.audit_key_file { auditKeyFile = v }
            if let v = g.directory_cache { directoryCache = v.isEmpty ? nil : v }
            if let v = g.audit_report_interval { auditReportInterval = try Self.timeout(v, field: "gateway.audit_report_interval") }
            if let v = g.audit_max_bytes {
                guard v >= 4096 else { throw AllotError(.invalidSettings, "gateway.audit_max_bytes must be at least 4096 (got \(v))") }
                auditMaxBytes = v
            }
            if let v = g.coordinator {
                let list = v.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                for (i, a) in list.enumerated() { _ = try ConfigFields.address(a, field: list.count > 1 ? "gateway.coordinator[\(i)]" : "gateway.coordinator") }
                (coordinatorHost, coordinatorPort) = try ConfigFields.address(list.first ?? v, field: "gateway.coordinator")
                seeds = list.count > 1 ? list : []
            }
            if let v = g.admission_wait { admissionWait = try ConfigFields.duration(v, field: "gateway.admission_wait") }
            if let v = g.chain_depth_header { chainDepthHeader = v.lowercased() }
            if let list = g.sidecar_tokens_sha256 {
                sidecarTokenHashes = try list.enumerated().map { i, hex throws(AllotError) in
                    guard let bytes = Hex.decode(hex), bytes.count == 32 else {
                        throw AllotError(.invalidSettings, "gateway.sidecar_tokens_sha256[\(i)] must be 64 hex digits (the SHA-256 of a token, as allot hash-key TOKEN prints it)")
                    }
                    return bytes
                }
            }
            if let v = g.metrics { metricsAddress = try ConfigFields.address(v, field: "gateway.metrics") }
            if let v = g.client_header_timeout { clientHeaderTimeout = try Self.timeout(v, field: "gateway.client_header_timeout") }
            if let v = g.client_body_timeout { clientBodyTimeout = try Self.timeout(v, field: "gateway.client_body_timeout") }
            if let v = g.client_idle_timeout { clientIdleTimeout = try Self.timeout(v, field: "gateway.client_idle_timeout") }
            if let v = g.sidecar_reservation_ttl {
                sidecarReservationTTL = try ConfigFields.duration(v, field: "gateway.sidecar_reservation_ttl")
            }
            if let list = g.routes {
                var entries: [RouteTable.Entry] = []
                for (i, r) in list.enumerated() {
                    let field = "gateway.routes[\(i)]"
                    guard let m = r.method, let p = r.path, let n = r.route else {
                        throw AllotError(.invalidSettings, "\(field) needs method, path and route")
                    }
                    let e = try RouteTable.Entry(method: m, path: p, route: n, field: field)
                    guard !entries.contains(where: { $0.method == e.method && $0.pattern == e.pattern }) else {
                        throw AllotError(.invalidSettings, "\(field): \(m) \(p) is listed twice")
                    }
                    entries.append(e)
                }
                routes = RouteTable(entries: entries)
            }
        }
        for (i, m) in (raw.models ?? []).enumerated() {
            let field = "models[\(i)]"
            guard let n = m.name, !n.isEmpty else { throw AllotError(.invalidSettings, "\(field).name is missing") }
            guard TierCatalog.acceptable(n) else {
                throw AllotError(.invalidSettings, "\(field).name must be 1 to \(TierCatalog.maxValueBytes) bytes of printable ASCII without ',', '=' or spaces (it becomes part of budget keys)")
            }
            guard models[n] == nil else { throw AllotError(.invalidSettings, "\(field).name: model '\(n)' is defined twice") }
            var price = try ModelPrice(name: n, inputUSDPerMTok: m.input_usd_per_mtok ?? 0, outputUSDPerMTok: m.output_usd_per_mtok ?? 0,
                                       maxOutputTokens: m.max_output_tokens ?? 4096,
                                       cachedInputUSDPerMTok: m.cached_input_usd_per_mtok,
                                       cacheWriteUSDPerMTok: m.cache_write_usd_per_mtok,
                                       cacheWriteHourUSDPerMTok: m.cache_write_1h_usd_per_mtok, field: field)
            if let list = m.apis {
                price.apis = []
                for a in list {
                    guard let api = ModelPrice.API(rawValue: a) else {
                        throw AllotError(.invalidSettings, "\(field).apis: unknown API '\(a)'; use openai or anthropic")
                    }
                    price.apis.insert(api)
                }
            }
            for (kind, tokens) in m.max_part_tokens ?? [:] {
                guard let part = ModelPrice.Part(rawValue: kind) else {
                    throw AllotError(.invalidSettings, "\(field).max_part_tokens: unknown part kind '\(kind)'; use image, audio or file")
                }
                guard tokens > 0 && tokens <= 10_000_000 else {
                    throw AllotError(.invalidSettings, "\(field).max_part_tokens.\(kind) must be between 1 and 10000000 (got \(tokens))")
                }
                price.maxPartTokens[part] = tokens
            }
            if let w = m.context_window_tokens {
                guard w > 0 && w <= 100_000_000 else {
                    throw AllotError(.invalidSettings, "\(field).context_window_tokens must be between 1 and 100000000 (got \(w))")
                }
                price.contextWindowTokens = w
            }
            models[n] = price
        }
        let tierNames = Set(shared.tiers.map(\.name))
        for (i, t) in (raw.tiers ?? []).enumerated() {
            guard let n = t.name, tierNames.contains(n) else { continue }
            entitlements[n] = try Entitlements(t.entitlements ?? .init(), field: "tiers[\(i)].entitlements",
                                               knownModels: Set(models.keys))
        }
        for t in shared.tiers where entitlements[t.name] == nil {
            entitlements[t.name] = try Entitlements(.init(), field: "tiers.\(t.name).entitlements", knownModels: Set(models.keys))
        }
        for t in shared.tiers where t.templates.count > BudgetSet.capacity {
            throw AllotError(.tooManyBudgets, "tiers.\(t.name): a request is charged to at most \(BudgetSet.capacity) budgets; the tier has \(t.templates.count) templates")
        }
    }

    /// The tier catalog both sides resolve budgets with.
    public var catalog: TierCatalog { get throws(AllotError) { try TierCatalog(shared.tiers) } }

    // MARK: the file's shape (only the gateway's sections; the rest is DeploymentConfig's and CoordinatorConfig's)

    struct File: Decodable {
        struct Gateway: Decodable {
            var name: String?; var listen: String?; var admin: String?; var upstream: String?
            var upstream_key_env: String?; var upstream_timeout: String?; var upstream_idle_timeout: String?
            var max_body_bytes: Int?; var consumers: String?; var audit_dir: String?; var audit_max_bytes: Int?; var audit_key_file: String?; var audit_report_interval: String?
            var directory_cache: String?
            var coordinator: String?; var admission_wait: String?; var chain_depth_header: String?
            var sidecar_reservation_ttl: String?; var routes: [RouteEntry]?
            var sidecar_tokens_sha256: [String]?; var metrics: String?
            var client_header_timeout: String?; var client_body_timeout: String?; var client_idle_timeout: String?
        }
        struct RouteEntry: Decodable { var method: String?; var path: String?; var route: String? }
        struct Model: Decodable {
            var name: String?; var input_usd_per_mtok: Double?; var output_usd_per_mtok: Double?; var max_output_tokens: Int64?
            var cached_input_usd_per_mtok: Double?; var apis: [String]?; var max_part_tokens: [String: Int64]?
            var context_window_tokens: Int64?; var cache_write_usd_per_mtok: Double?; var cache_write_1h_usd_per_mtok: Double?
        }
        struct Tier: Decodable { var name: String?; var entitlements: Entitlements.File? }
        var gateway: Gateway?
        var models: [Model]?
        var tiers: [Tier]?
    }

    /// A client timeout: at least 100 ms, at most an hour.
    static func timeout(_ v: String, field: String) throws(AllotError) -> Duration {
        let d = try ConfigFields.duration(v, field: field)
        guard d >= .milliseconds(100) && d <= .seconds(3600) else {
            throw AllotError(.invalidSettings, "\(field) must be between 100ms and 1h (got \(v))")
        }
        return d
    }

    static func checkKeys(_ yaml: String) throws(AllotError) {
        let known: [String: Set<String>] = [
            "gateway": ["name", "listen", "admin", "upstream", "upstream_key_env", "upstream_timeout", "upstream_idle_timeout",
                        "max_body_bytes", "consumers", "audit_dir", "audit_max_bytes", "audit_key_file", "audit_report_interval", "coordinator", "admission_wait", "directory_cache",
                        "chain_depth_header", "sidecar_reservation_ttl", "routes", "sidecar_tokens_sha256", "metrics",
                        "client_header_timeout", "client_body_timeout", "client_idle_timeout"],
            "routes[]": ["method", "path", "route"],
            "models[]": ["name", "input_usd_per_mtok", "output_usd_per_mtok", "max_output_tokens",
                     "cached_input_usd_per_mtok", "apis", "max_part_tokens", "context_window_tokens",
                     "cache_write_usd_per_mtok", "cache_write_1h_usd_per_mtok"],
            "entitlements": ["models", "routes", "passthrough", "max_prompt_bytes", "max_tokens", "max_chain_depth", "runaway"],
            "runaway": ["factor", "window", "baseline", "min_rate", "action"],
        ]
        guard let top = (try? Yams.load(yaml: yaml)) as? [String: Any] else { return } // DeploymentConfig reported it
        func check(_ value: Any?, _ section: String, _ path: String) throws(AllotError) {
            guard let value else { return }
            guard let map = value as? [String: Any] else { throw AllotError(.invalidSettings, "\(path) must be a mapping") }
            let allowed = known[section] ?? []
            for key in map.keys.sorted() where !allowed.contains(key) {
                throw AllotError(.invalidSettings, "\(path).\(key): unknown key; allowed here: \(allowed.sorted().joined(separator: ", "))")
            }
        }
        try check(top["gateway"], "gateway", "gateway")
        for (i, r) in (((top["gateway"] as? [String: Any])?["routes"]) as? [Any] ?? []).enumerated() {
            try check(r, "routes[]", "gateway.routes[\(i)]")
        }
        for (i, m) in (top["models"] as? [Any] ?? []).enumerated() { try check(m, "models[]", "models[\(i)]") }
        for (i, t) in (top["tiers"] as? [Any] ?? []).enumerated() {
            let e = (t as? [String: Any])?["entitlements"]
            try check(e, "entitlements", "tiers[\(i)].entitlements")
            try check((e as? [String: Any])?["runaway"], "runaway", "tiers[\(i)].entitlements.runaway")
        }
    }
}

/// A model's price, output cap, the API shapes it serves and what one non-text part may cost.
/// Prices are in US dollars per million tokens, which is exactly micro-dollars per token;
/// kept as thousandths of a micro-dollar so that cheap models (0.15 $/Mtok) are exact integers.
public struct ModelPrice: Hashable, Sendable {
    /// The API shapes a model is called through.
    public enum API: String, CaseIterable, Hashable, Sendable { case openai, anthropic }
    /// Non-text request parts, by what bounds their cost.
    public enum Part: String, CaseIterable, Hashable, Sendable { case image, audio, file }

    public var name: String
    /// Milli-micro-dollars (nano-dollars) per input, cached input and output token.
    public var inputNanoPerToken: Int64
    public var cachedInputNanoPerToken: Int64
    public var outputNanoPerToken: Int64
    /// Anthropic's prompt-cache writes (`cache_creation_input_tokens`): 5-minute and 1-hour.
    public var cacheWriteNanoPerToken: Int64
    public var cacheWriteHourNanoPerToken: Int64
    /// The output bound when a request names no `max_tokens`.
    public var maxOutputTokens: Int64
    public var apis: Set<API> = Set(API.allCases)
    /// The most input tokens one part of each kind may cost; a kind not listed is refused.
    public var maxPartTokens: [Part: Int64] = [:]
    /// Input a stored conversation may add (Responses `previous_response_id`/`conversation`);
    /// nil: such requests are refused.
    public var contextWindowTokens: Int64?

    public init(name: String, inputUSDPerMTok: Double, outputUSDPerMTok: Double, maxOutputTokens: Int64,
                cachedInputUSDPerMTok: Double? = nil, cacheWriteUSDPerMTok: Double? = nil,
                cacheWriteHourUSDPerMTok: Double? = nil, field: String = "model") throws(AllotError) {
        for (key, v) in [("input_usd_per_mtok", inputUSDPerMTok), ("output_usd_per_mtok", outputUSDPerMTok),
                         ("cached_input_usd_per_mtok", cachedInputUSDPerMTok ?? 0),
                         ("cache_write_usd_per_mtok", cacheWriteUSDPerMTok ?? 0),
                         ("cache_write_1h_usd_per_mtok", cacheWriteHourUSDPerMTok ?? 0)] where !(v >= 0 && v < 1e6) {
            throw AllotError(.invalidSettings, "\(field).\(key): prices must be between 0 and 1000000 USD per million tokens (got \(v))")
        }
        guard maxOutputTokens > 0 else {
            throw AllotError(.invalidSettings, "\(field).max_output_tokens must be positive (got \(maxOutputTokens))")
        }
        self.name = name
        inputNanoPerToken = Int64((inputUSDPerMTok * 1000).rounded())
        cachedInputNanoPerToken = Int64(((cachedInputUSDPerMTok ?? inputUSDPerMTok) * 1000).rounded())
        outputNanoPerToken = Int64((outputUSDPerMTok * 1000).rounded())
        cacheWriteNanoPerToken = Int64(((cacheWriteUSDPerMTok ?? inputUSDPerMTok) * 1000).rounded())
        cacheWriteHourNanoPerToken = Int64(((cacheWriteHourUSDPerMTok ?? cacheWriteUSDPerMTok ?? inputUSDPerMTok) * 1000).rounded())
        self.maxOutputTokens = maxOutputTokens
    }

    /// Micro-dollars for what an upstream reported, rounded up; saturates at Int64.max (a
    /// budget then refuses it) instead of wrapping. Input tokens read from the cache, and
    /// written to it, are priced at their own rates.
    public func microDollars(_ u: Usage) -> Int64 {
        let input = max(0, u.input)
        let cached = min(max(0, u.cached), input)
        let written = min(max(0, u.cacheWrite), input - cached)
        let hour = min(max(0, u.cacheWriteHour), written)
        return Self.rounded(Checked.sum(Checked.product(input - cached - written, inputNanoPerToken),
                                        Checked.product(cached, cachedInputNanoPerToken),
                                        Checked.product(written - hour, cacheWriteNanoPerToken),
                                        Checked.product(hour, cacheWriteHourNanoPerToken),
                                        Checked.product(max(0, u.output), outputNanoPerToken)))
    }

    public func microDollars(input: Int64, output: Int64, cached: Int64 = 0) -> Int64 {
        microDollars(Usage(input: input, output: output, cached: cached))
    }

    /// The most `input` and `output` tokens can cost, whatever the cache does with them: every
    /// input token at the dearest input rate.
    public func boundMicroDollars(input: Int64, output: Int64) -> Int64 {
        let dearest = max(inputNanoPerToken, cachedInputNanoPerToken, cacheWriteNanoPerToken, cacheWriteHourNanoPerToken)
        return Self.rounded(Checked.sum(Checked.product(max(0, input), dearest), Checked.product(max(0, output), outputNanoPerToken)))
    }

    private static func rounded(_ nano: Int64) -> Int64 { nano > .max - 999 ? .max : (nano + 999) / 1000 }
}

