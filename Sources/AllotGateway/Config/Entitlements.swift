import AllotConfig
import AllotCore

/// What a tier may do, checked before any budget is touched.
public struct Entitlements: Hashable, Sendable {
    /// Models this tier may call; nil = every configured model.
    public var models: Set<String>?
    public var routes: Set<Route>
    /// Every route but `retrieve` when a tier lists none: stored responses live under the
    /// operator's upstream key, shared by every consumer, so fetching one by id is opt-in.
    public static let defaultRoutes = Set(Route.allCases).subtracting([.retrieve])
    /// Paths outside the route table this tier may reach, charged one request each.
    public var passThrough: [PassThrough] = []
    public var maxPromptBytes: Int64?
    public var maxTokens: Int64?
    public var maxChainDepth: Int?
    public var runaway: RunawayPolicy

    public init(models: Set<String>? = nil, routes: Set<Route> = Entitlements.defaultRoutes, maxPromptBytes: Int64? = nil,
                maxTokens: Int64? = nil, maxChainDepth: Int? = nil, runaway: RunawayPolicy = RunawayPolicy()) {
        self.models = models
        self.routes = routes
        self.maxPromptBytes = maxPromptBytes
        self.maxTokens = maxTokens
        self.maxChainDepth = maxChainDepth
        self.runaway = runaway
    }

    struct File: Decodable {
        struct Runaway: Decodable { var factor: Double?; var window: String?; var baseline: String?; var min_rate: Double?; var action: String? }
        var models: [String]?
        var routes: [String]?
        var passthrough: [String]?
        var max_prompt_bytes: Int64?
        var max_tokens: Int64?
        var max_chain_depth: Int?
        var runaway: Runaway?
        init() {}
    }

    init(_ f: File, field: String, knownModels: Set<String>) throws(AllotError) {
        self.init()
        if let m = f.models, !m.contains("*") {
            for name in m where !knownModels.contains(name) {
                throw AllotError(.invalidSettings, "\(field).models: '\(name)' is not in models (known: \(knownModels.sorted().joined(separator: ", ")))")
            }
            models = Set(m)
        }
        if let r = f.routes {
            var set = Set<Route>()
            for name in r {
                guard let route = Route(rawValue: name) else {
                    throw AllotError(.invalidSettings, "\(field).routes: unknown route '\(name)'; use \(Route.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                set.insert(route)
            }
            routes = set
        }
        for (i, text) in (f.passthrough ?? []).enumerated() {
            passThrough.append(try PassThrough(text, field: "\(field).passthrough[\(i)]"))
        }
        for (name, v) in [("max_prompt_bytes", f.max_prompt_bytes), ("max_tokens", f.max_tokens)] {
            if let v, v <= 0 { throw AllotError(.invalidSettings, "\(field).\(name) must be positive (got \(v))") }
        }
        maxPromptBytes = f.max_prompt_bytes
        maxTokens = f.max_tokens
        if let d = f.max_chain_depth, d < 0 { throw AllotError(.invalidSettings, "\(field).max_chain_depth must be 0 or more (got \(d))") }
        maxChainDepth = f.max_chain_depth
        if let r = f.runaway {
            let p = "\(field).runaway"
            if let v = r.factor { guard v > 1 else { throw AllotError(.invalidSettings, "\(p).factor must be above 1 (got \(v))") }; runaway.factor = v }
            if let v = r.window { runaway.window = try ConfigFields.duration(v, field: "\(p).window") }
            if let v = r.baseline { runaway.baseline = try ConfigFields.duration(v, field: "\(p).baseline") }
            if let v = r.min_rate { guard v > 0 else { throw AllotError(.invalidSettings, "\(p).min_rate must be positive (got \(v))") }; runaway.minRate = v }
            switch r.action ?? "flag" {
            case "flag": runaway.throttle = false
            case "throttle": runaway.throttle = true
            default: throw AllotError(.invalidSettings, "\(p).action must be flag or throttle (got '\(r.action ?? "")')")
            }
            guard runaway.window < runaway.baseline else {
                throw AllotError(.invalidSettings, "\(p).window (\(runaway.window)) must be shorter than \(p).baseline (\(runaway.baseline))")
            }
        }
    }
}

/// Runaway detection for one tier: a consumer whose request rate over `window` is above
/// `factor` × max(its own rate over `baseline`, `minRate`) is flagged; with `throttle`, its
/// requests are refused while the flag stands.
public struct RunawayPolicy: Hashable, Sendable {
    public var factor: Double = 5
    public var window: Duration = .seconds(10)
    public var baseline: Duration = .seconds(300)
    /// The baseline's floor, in requests per second: below `factor` × this nobody is flagged.
    public var minRate: Double = 2
    public var throttle = false
    public init() {}
}
