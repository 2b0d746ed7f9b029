import AllotCore

/// The routes the gateway knows; a budget template scoped to `route` is keyed by these names,
/// and a tier's `routes` entitlement lists them.
public enum Route: String, CaseIterable, Hashable, Sendable {
    /// OpenAI Chat Completions, Completions, Embeddings, Responses; Anthropic Messages.
    case chat, completions, embeddings, responses, messages
    /// Model listing and retrieval, and stored responses fetched by id: no tokens spent.
    case models, retrieve
    /// A (method, path prefix) a tier lists under `passthrough`: charged one request.
    case other

    /// Routes whose bodies name a model and spend tokens.
    public var isModelRoute: Bool {
        switch self {
        case .chat, .completions, .embeddings, .responses, .messages: true
        case .models, .retrieve, .other: false
        }
    }

    /// The API shape of the route's bodies, errors and headers.
    public var isAnthropic: Bool { self == .messages }
}

/// Which (method, canonical path) goes to which route. Deny by default: a request that
/// matches no entry (and no `passthrough` pair of its tier) is refused, never forwarded.
public struct RouteTable: Hashable, Sendable {
    public struct Entry: Hashable, Sendable {
        public var method: String
        /// Segments; `*` matches one id segment (`[A-Za-z0-9._:-]`, not `.` or `..`).
        public var pattern: [String]
        public var route: Route

        public init(method: String, pattern: [String], route: Route) {
            self.method = method
            self.pattern = pattern
            self.route = route
        }

        /// One entry of `gateway.routes` (`{method: POST, path: /v1/chat/completions, route: chat}`):
        /// the path canonical, `*` only as a whole segment, the route one that spends tokens or
        /// none (`other` is what a tier's `passthrough` gives, not a table entry).
        public init(method: String, path: String, route name: String, field: String) throws(AllotError) {
            guard RouteTable.methods.contains(method) else {
                throw AllotError(.invalidSettings, "\(field).method: '\(method)' is not one of \(RouteTable.methods.joined(separator: ", "))")
            }
            guard let route = Route(rawValue: name), route != .other else {
                let known = Route.allCases.filter { $0 != .other }.map(\.rawValue).joined(separator: ", ")
                throw AllotError(.invalidSettings, "\(field).route: unknown route '\(name)'; use one of \(known)")
            }
            // `*` stands for one id segment; the rest must be a canonical path.
            let probe = path.split(separator: "/", omittingEmptySubsequences: false).map { $0 == "*" ? "id" : $0 }.joined(separator: "/")
            guard RouteTable.canonicalSegments(Substring(probe)) != nil,
                  !path.split(separator: "/").contains(where: { $0.contains("*") && $0 != "*" }) else {
                throw AllotError(.invalidSettings, "\(field).path: '\(path)' is not a canonical path ('/'-separated segments of [A-Za-z0-9._:~-], '*' for one id segment)")
            }
            self.init(method: method, pattern: path.dropFirst().split(separator: "/").map(String.init), route: route)
        }
    }

    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    static let methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]

    /// OpenAI's and Anthropic's paths.
    public static let standard = RouteTable(entries: [
        Entry(method: "POST", pattern: ["v1", "chat", "completions"], route: .chat),
        Entry(method: "POST", pattern: ["v1", "completions"], route: .completions),
        Entry(method: "POST", pattern: ["v1", "embeddings"], route: .embeddings),
        Entry(method: "POST", pattern: ["v1", "responses"], route: .responses),
        Entry(method: "POST", pattern: ["v1", "messages"], route: .messages),
        Entry(method: "GET", pattern: ["v1", "models"], route: .models),
        Entry(method: "GET", pattern: ["v1", "models", "*"], route: .models),
        Entry(method: "GET", pattern: ["v1", "responses", "*"], route: .retrieve),
        Entry(method: "GET", pattern: ["v1", "responses", "*", "input_items"], route: .retrieve),
    ])

    /// A path is canonical when it is `/`-separated non-empty segments of `[A-Za-z0-9._:~-]`,
    /// none of them `.` or `..`: no empty segment (`//`, a trailing `/`), no `;` parameters,
    /// no percent-encoding (an encoded `/` or `.` would mean one thing here and another
    /// upstream). Returns the segments, or nil.
    public static func canonicalSegments(_ path: Substring) -> [Substring]? {
        guard path.first == "/", path.count > 1, path.utf8.count <= 2048 else { return nil }
        let segments = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        for s in segments {
            guard !s.isEmpty, s != ".", s != ".." else { return nil }
            for b in s.utf8 {
                switch b {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                     UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"),
                     UInt8(ascii: ":"), UInt8(ascii: "~"):
                    continue
                default: return nil
                }
            }
        }
        return segments
    }

    public enum Match: Equatable, Sendable {
        case route(Route)
        /// Not canonical, or a table path in the wrong case: 400.
        case nonCanonical
        /// Canonical but in no entry: refused unless the tier passes it through.
        case unknown
    }

    /// Looks a request up by method and raw request target (path and query as sent).
    public func match(method: String, target: String) -> Match {
        let path = target.prefix { $0 != "?" && $0 != "#" }
        guard let segments = Self.canonicalSegments(path) else { return .nonCanonical }
        var caseOnly = false
        for e in entries where e.pattern.count == segments.count {
            var exact = true, folded = true
            for (p, s) in zip(e.pattern, segments) where p != "*" {
                if p != s { exact = false }
                if p != s.lowercased() { folded = false }
            }
            if exact && e.method == method { return .route(e.route) }
            if folded && !exact { caseOnly = true }
        }
        // `/V1/chat/completions` is the chat route spelled differently: refused as such.
        return caseOnly ? .nonCanonical : .unknown
    }
}

/// A (method, path prefix) pair a tier may pass through to the upstream (`passthrough:
/// ["GET /v1/files"]`), charged one request on the `other` route.
public struct PassThrough: Hashable, Sendable {
    public var method: String
    public var prefix: String

    public init(_ text: String, field: String) throws(AllotError) {
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2, RouteTable.methods.contains(String(parts[0])),
              let segments = RouteTable.canonicalSegments(parts[1]), !segments.isEmpty else {
            throw AllotError(.invalidSettings, "\(field): '\(text)' is not 'METHOD /canonical/path/prefix' (e.g. 'GET /v1/files')")
        }
        method = String(parts[0])
        prefix = String(parts[1])
    }

    /// The prefix covers the path whole segments at a time (`/v1/files` covers `/v1/files/f1`,
    /// not `/v1/filesystem`).
    public func covers(method m: String, path: Substring) -> Bool {
        m == method && path.hasPrefix(prefix) && (path.count == prefix.count || path.dropFirst(prefix.count).first == "/")
    }
}
