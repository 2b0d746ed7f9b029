/// Rate limits in envoyproxy/ratelimit's configuration model: per domain, a tree of descriptor
/// rules (`key`, optional `value`, optional `rate_limit`, nested rules). A request names a
/// domain and a descriptor — an ordered list of key/value entries — and gets the limit of the
/// rule its last entry reaches, walking the tree as envoyproxy/ratelimit does: at each level
/// the rule with that key and exactly that value, else one whose value ends in `*` and
/// prefixes it, else the rule with that key and no value (a distinct counter per value).
///
/// A limit becomes an Allot rate budget (`budgetID`, `spec`): `requests_per_unit` per unit, as
/// a bucket of that many that refills at that rate (no double burst at a window's edge, as a
/// fixed window allows). Coordinators make the budget the first time a node asks for its id,
/// as they make tier budgets; a node cannot make up terms of its own: the coordinator checks
/// the id against its own copy of the rules (a descriptor's own `limit` override included).
public struct DescriptorRules: Sendable, Hashable {
    public enum TimeUnit: String, Sendable, Hashable, CaseIterable {
        case second, minute, hour, day, week, month, year

        /// envoyproxy/ratelimit's lengths (a month is 30 days, a year 365).
        public var duration: Duration {
            switch self {
            case .second: .seconds(1)
            case .minute: .seconds(60)
            case .hour: .seconds(3_600)
            case .day: .seconds(86_400)
            case .week: .seconds(86_400 * 7)
            case .month: .seconds(86_400 * 30)
            case .year: .seconds(86_400 * 365)
            }
        }
    }

    public struct Limit: Sendable, Hashable {
        public var requestsPerUnit: Int64
        public var unit: TimeUnit
        public var name: String?
        public var unlimited: Bool

        public init(requestsPerUnit: Int64, unit: TimeUnit, name: String? = nil, unlimited: Bool = false) {
            (self.requestsPerUnit, self.unit, self.name, self.unlimited) = (requestsPerUnit, unit, name, unlimited)
        }
    }

    public struct Rule: Sendable, Hashable {
        public var key: String
        public var value: String?
        public var limit: Limit?
        public var shadow: Bool
        public var rules: [Rule]

        public init(key: String, value: String? = nil, limit: Limit? = nil, shadow: Bool = false, rules: [Rule] = []) {
            (self.key, self.value, self.limit, self.shadow, self.rules) = (key, value, limit, shadow, rules)
        }
    }

    /// What a descriptor gets.
    public enum Match: Sendable, Hashable {
        /// No rule's limit applies: OK, as envoyproxy/ratelimit answers.
        case noRule
        /// `unlimited: true`: OK, nothing counted.
        case unlimited
        /// A limit (`shadow`: counted and reported, never refused).
        case limited(Limit, shadow: Bool)
    }

    public private(set) var domains: [String: [Rule]] = [:]

    public init() {}

    /// Adds a domain's rules (one configuration file); a domain defined twice is refused.
    public mutating func add(domain: String, rules: [Rule]) throws(AllotError) {
        guard domains[domain] == nil else { throw AllotError(.invalidSettings, "domain '\(domain)' is configured twice") }
        domains[domain] = rules
    }

    public var isEmpty: Bool { domains.isEmpty }

    /// The limit for `entries` in `domain`; `override` (the descriptor's own `limit`) replaces
    /// the configured one, as envoyproxy/ratelimit does, when the descriptor matches a rule.
    public func match(domain: String, entries: [(key: String, value: String)], override: Limit? = nil) -> Match {
        guard var level = domains[domain], !entries.isEmpty else { return .noRule }
        for (i, e) in entries.enumerated() {
            let rule = level.first { $0.key == e.key && $0.value == e.value }
                ?? level.first { $0.key == e.key && ($0.value?.hasSuffix("*") ?? false) && e.value.hasPrefix(String($0.value!.dropLast())) }
                ?? level.first { $0.key == e.key && $0.value == nil }
            guard let rule else { return .noRule }
            if i == entries.count - 1 {
                // (envoyproxy/ratelimit: an override is never in shadow mode.)
                if let override, override.requestsPerUnit >= 0 { return .limited(override, shadow: false) }
                guard let limit = rule.limit else { return .noRule }
                return limit.unlimited ? .unlimited : .limited(limit, shadow: rule.shadow)
            }
            guard !rule.rules.isEmpty else { return .noRule }
            level = rule.rules
        }
        return .noRule
    }

    // MARK: budgets

    /// Ids of budgets made from these rules start with it.
    public static let prefix = "envoy:"

    /// The budget counting `entries` of `domain` under `limit`:
    /// `envoy:<domain>|<key>=<value>|…|<requests>/<unit>`, each part percent-encoded. The
    /// terms are in the id, so a changed limit or an override is another budget.
    public static func budgetID(domain: String, entries: [(key: String, value: String)], limit: Limit) -> BudgetID {
        var id = prefix + escape(domain)
        for e in entries { id += "|" + escape(e.key) + "=" + escape(e.value) }
        return BudgetID(id + "|\(limit.requestsPerUnit)/\(limit.unit.rawValue)")
    }

    /// The id of a descriptor whose `budgetID` is longer than a budget id may be
    /// (`TierCatalog.maxIDBytes`): its entries as `digest` (64 lowercase hex digits of their
    /// SHA-256, computed by the node) — `envoy:<domain>|#<digest>|<n>/<unit>`.
    public static func digestID(domain: String, digest: String, limit: Limit) -> BudgetID {
        BudgetID(prefix + escape(domain) + "|#" + digest + "|\(limit.requestsPerUnit)/\(limit.unit.rawValue)")
    }

    /// Every limit a domain's rules configure (what a digest id may carry).
    func configuredLimits(_ domain: String) -> [Limit] {
        var out: [Limit] = []
        var stack = domains[domain] ?? []
        while let r = stack.popLast() {
            if let l = r.limit, !l.unlimited { out.append(l) }
            stack += r.rules
        }
        return out
    }

    /// The budget behind `id` when these rules give that limit to that descriptor (nil
    /// otherwise). A node chooses a budget's terms only through a descriptor's override where
    /// a rule is reached (as Envoy sends it), at most 2³²−1 per unit; a digest id (a
    /// descriptor too long for an id) only with terms the domain configures.
    public func instantiate(_ id: BudgetID) -> BudgetSpec? {
        let raw = id.rawValue
        guard raw.hasPrefix(Self.prefix), raw.utf8.count <= TierCatalog.maxIDBytes else { return nil }
        let parts = raw.dropFirst(Self.prefix.count).split(separator: "|", omittingEmptySubsequences: false)
        guard parts.count >= 3, let domain = Self.unescape(parts[0]) else { return nil }
        if parts.count == 3, parts[1].hasPrefix("#") {
            let digest = parts[1].dropFirst()
            let terms = parts[2].split(separator: "/")
            guard digest.utf8.count == 64, digest.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }),
                  terms.count == 2, let n = Int64(terms[0]), n > 0, let unit = TimeUnit(rawValue: String(terms[1])),
                  configuredLimits(domain).contains(where: { $0.requestsPerUnit == n && $0.unit == unit }),
                  Self.digestID(domain: domain, digest: String(digest), limit: Limit(requestsPerUnit: n, unit: unit)) == id else { return nil }
            return Self.spec(id, Limit(requestsPerUnit: n, unit: unit))
        }
        var entries: [(key: String, value: String)] = []
        for p in parts.dropFirst().dropLast() {
            let kv = p.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2, let k = Self.unescape(kv[0]), let v = Self.unescape(kv[1]) else { return nil }
            entries.append((k, v))
        }
        let terms = parts.last!.split(separator: "/")
        guard terms.count == 2, let n = Int64(terms[0]), n > 0, n <= Int64(UInt32.max), let unit = TimeUnit(rawValue: String(terms[1])) else { return nil }
        let asked = Limit(requestsPerUnit: n, unit: unit)
        switch match(domain: domain, entries: entries) {
        case .limited(let l, _) where l.requestsPerUnit == n && l.unit == unit: break
        case .limited, .unlimited, .noRule:
            // An override's terms: the descriptor must reach a rule (as envoyproxy/ratelimit
            // applies an override only where a rule matches).
            guard case .limited = match(domain: domain, entries: entries, override: asked) else { return nil }
        }
        guard Self.budgetID(domain: domain, entries: entries, limit: asked) == id else { return nil } // canonical only
        return Self.spec(id, asked)
    }

    /// The rate budget of `limit` under `id`.
    public static func spec(_ id: BudgetID, _ limit: Limit) -> BudgetSpec? {
        guard limit.requestsPerUnit > 0 else { return nil }
        return try? BudgetSpec(id: id, unit: .requests,
                               kind: .rate(limit: limit.requestsPerUnit, period: limit.unit.duration, burst: limit.requestsPerUnit))
    }

    /// Percent-encodes `%`, `|`, `=`, and bytes outside printable ASCII.
    static func escape(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            if b > 0x20 && b < 0x7f && b != 0x25 && b != 0x7c && b != 0x3d {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                let hex = Array("0123456789ABCDEF")
                out += "%" + String(hex[Int(b >> 4)]) + String(hex[Int(b & 0xf)])
            }
        }
        return out
    }

    static func unescape(_ s: Substring) -> String? {
        var bytes: [UInt8] = []
        var it = s.utf8.makeIterator()
        while let b = it.next() {
            guard b == 0x25 else { bytes.append(b); continue }
            guard let h = it.next(), let l = it.next(), let hv = hexValue(h), let lv = hexValue(l) else { return nil }
            bytes.append(hv << 4 | lv)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x41...0x46: c - 0x41 + 10
        case 0x61...0x66: c - 0x61 + 10
        default: nil
        }
    }
}
