import AllotCore
import Foundation
import Yams

/// The deployment's policy as the ledger keeps it (`allot config apply`): the `budgets`,
/// `tiers` (templates, entitlements, shadow, soft limits) and `models` sections of a
/// configuration file, as one canonical YAML document (keys sorted, lists in the file's
/// order). Two files that say the same thing are the same document; a diff shows only what
/// changed. Everything else in a file (listeners, TLS, lease settings, the cluster) stays in
/// each process's own file.
public struct PolicyDocument: Sendable, Equatable {
    public static let sections = ["budgets", "tiers", "models", "deletions", "removed"]
    /// The sections whose items `summary` names.
    static let itemSections = ["budgets", "tiers", "models"]
    /// The most a document may take (it travels in one frame).
    public static let maxBytes = 512 * 1024

    public let yaml: String

    /// The policy sections of a configuration file, checked as a coordinator reads them:
    /// unknown keys and bad values are refused with the field named (`budgets[2].burst: …`).
    public init(file text: String) throws(AllotError) {
        try ConfigKeys.check(text)
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw AllotError(.invalidSettings, "the configuration is not valid YAML: \(error)")
        }
        let pairs = root?.mapping?.filter { Self.sections.contains($0.key.string ?? "") }.map { ($0.key, $0.value) } ?? []
        let yaml: String
        do { yaml = try Yams.serialize(node: Self.block(.mapping(Node.Mapping(pairs))), width: -1, sortKeys: true) } catch {
            throw AllotError(.invalidSettings, "the configuration cannot be written back as YAML: \(error)")
        }
        guard yaml.utf8.count <= Self.maxBytes else {
            throw AllotError(.invalidSettings, "budgets, tiers and models take \(yaml.utf8.count) bytes; at most \(Self.maxBytes)")
        }
        _ = try DeploymentConfig(yaml: yaml)
        self.yaml = yaml
    }

    private init(canonical yaml: String) { self.yaml = yaml }

    /// This document as version `version`, following `old`: its `removed` list written by the
    /// coordinator (what a file says there is replaced), so every gateway decides a removal
    /// the same way whichever versions it saw. Under `deletions: refuse` it lists each
    /// template of a tier still in force that `old` had or listed and this one does not, with
    /// the version that removed it; a template restored leaves the list. Under `allow` the
    /// list is empty: the removals are accepted (their requests are no longer charged to them).
    /// A removed tier is not listed: its consumers are refused whole (`tier_removed`).
    public func recordingRemovals(from old: String, version: Int64) throws(AllotError) -> PolicyDocument {
        let now = try deployment()
        var removed: [String: Int64] = [:]
        if now.deletions == .refuse, !old.isEmpty, let before = try? DeploymentConfig(yaml: old) {
            let tiersNow = Dictionary(now.tiers.map { ($0.name, Set($0.templates.map(\.name))) }) { a, _ in a }
            func gone(_ template: String) -> Bool {
                let p = template.split(separator: ".", maxSplits: 1).map(String.init)
                return p.count == 2 && tiersNow[p[0]].map { !$0.contains(p[1]) } == true
            }
            for (t, v) in before.removedTemplates where gone(t) { removed[t] = v }
            for tier in before.tiers {
                // A shadow template never refused anything: removing it refuses nothing either.
                for tpl in tier.templates where gone("\(tier.name).\(tpl.name)") && !tpl.name.contains("/")
                    && !before.shadowTemplates.contains("\(tier.name).\(tpl.name)") {
                    removed["\(tier.name).\(tpl.name)"] = removed["\(tier.name).\(tpl.name)"] ?? version
                }
            }
        }
        guard var root = ((try? Yams.compose(yaml: yaml)) ?? nil)?.mapping else { return self }
        root["removed"] = nil
        if !removed.isEmpty {
            root["removed"] = .sequence(Node.Sequence(removed.sorted { $0.key < $1.key }.map { t, v in
                .mapping(Node.Mapping([(Node("template"), Node(t, .implicit, .doubleQuoted)), (Node("version"), Node(String(v)))]))
            }))
        }
        let text: String
        do { text = try Yams.serialize(node: Self.block(.mapping(root)), width: -1, sortKeys: true) } catch {
            throw AllotError(.invalidSettings, "the configuration cannot be written back as YAML: \(error)")
        }
        guard text.utf8.count <= Self.maxBytes else {
            throw AllotError(.invalidSettings, "budgets, tiers, models and removals take \(text.utf8.count) bytes; at most \(Self.maxBytes)")
        }
        _ = try DeploymentConfig(yaml: text)
        return PolicyDocument(canonical: text)
    }

    /// `node` in block style with its mappings' keys sorted; scalars exactly as written (a
    /// round trip through typed values would turn `id: 007` into `7`, or a tier `no` into false).
    static func block(_ node: Node) -> Node {
        switch node {
        case .mapping(let m):
            let pairs = m.map { (block($0.key), block($0.value)) }.sorted { ($0.0.string ?? "") < ($1.0.string ?? "") }
            return .mapping(Node.Mapping(pairs, m.tag, .block))
        case .sequence(let s):
            return .sequence(Node.Sequence(s.map(block), s.tag, .block))
        default:
            return node
        }
    }

    /// The shared sections it defines (budgets, tiers, shadow and soft limits).
    public func deployment() throws(AllotError) -> DeploymentConfig { try DeploymentConfig(yaml: yaml) }

    /// Refuses a change a budget cannot take in place: another kind, unit, period, calendar
    /// window or reach under the same budget id or tier template. Nodes would go on enforcing
    /// the old definition with the new terms (a rate per hour refilled every minute); such a
    /// budget needs a new name (remove the old one in the same version).
    public func checkInPlace(from old: String) throws(AllotError) {
        guard !old.isEmpty, let before = try? DeploymentConfig(yaml: old) else { return }
        let now = try deployment()
        func shape(_ kind: BudgetKind) -> String {
            switch kind {
            case .rate(_, let p, _): "a rate per \(p)"
            case .quota(_, let w): "a quota per \(w)"
            case .concurrency: "a concurrency limit"
            }
        }
        func compare(_ field: String, _ name: String, _ a: (AllotCore.Unit, BudgetKind, Reach), _ b: (AllotCore.Unit, BudgetKind, Reach)) throws(AllotError) {
            guard a.0 != b.0 || shape(a.1) != shape(b.1) || a.2 != b.2 else { return }
            throw AllotError(.invalidSettings, "\(field): \(name) was \(shape(a.1)) of \(a.0.rawValue) (\(a.2.rawValue)), now \(shape(b.1)) of \(b.0.rawValue) (\(b.2.rawValue)); kind, unit, period, window and reach cannot change in place: give it a new name (a template renamed is the old one deleted: apply with deletions: allow, or its tier is refused)")
        }
        let oldBudgets = Dictionary(before.budgets.map { ($0.id, $0) }) { a, _ in a }
        for (i, b) in now.budgets.enumerated() {
            if let o = oldBudgets[b.id] { try compare("budgets[\(i)]", "budget \(b.id)", (o.unit, o.kind, o.reach), (b.unit, b.kind, b.reach)) }
        }
        let oldTiers = Dictionary(before.tiers.map { ($0.name, $0) }) { a, _ in a }
        for (i, t) in now.tiers.enumerated() {
            for (j, tpl) in t.templates.enumerated() {
                guard let o = oldTiers[t.name]?.templates.first(where: { $0.name == tpl.name }) else { continue }
                try compare("tiers[\(i)].templates[\(j)]", "\(t.name).\(tpl.name)", (o.unit, o.kind, o.reach), (tpl.unit, tpl.kind, tpl.reach))
            }
        }
    }

    // MARK: what changed

    /// A line diff from `old` to this document (`-`/`+` lines, with the unchanged line before
    /// each change for context). Bounded: a changed middle section too large to compare line by line
    /// sides (over 4 million line pairs) is shown as removed and added whole.
    public func diff(from old: String) -> String {
        let a = old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let b = yaml.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var prefix = 0
        while prefix < a.count && prefix < b.count && a[prefix] == b[prefix] { prefix += 1 }
        var suffix = 0
        while suffix < a.count - prefix && suffix < b.count - prefix && a[a.count - 1 - suffix] == b[b.count - 1 - suffix] { suffix += 1 }
        let x = Array(a[prefix..<(a.count - suffix)]), y = Array(b[prefix..<(b.count - suffix)])
        var out: [String] = []
        if prefix > 0 && !(x.isEmpty && y.isEmpty) { out.append("  " + a[prefix - 1]) }
        if x.count * y.count > 4_000_000 {
            out += x.map { "- " + $0 } + y.map { "+ " + $0 }
        } else {
            // Longest common subsequence of the middles.
            var l = [[Int32]](repeating: [Int32](repeating: 0, count: y.count + 1), count: x.count + 1)
            for i in stride(from: x.count - 1, through: 0, by: -1) {
                for j in stride(from: y.count - 1, through: 0, by: -1) {
                    l[i][j] = x[i] == y[j] ? l[i + 1][j + 1] + 1 : max(l[i + 1][j], l[i][j + 1])
                }
            }
            var i = 0, j = 0
            while i < x.count || j < y.count {
                if i < x.count && j < y.count && x[i] == y[j] {
                    out.append("  " + x[i]); i += 1; j += 1
                } else if j < y.count && (i == x.count || l[i][j + 1] >= l[i + 1][j]) {
                    out.append("+ " + y[j]); j += 1
                } else {
                    out.append("- " + x[i]); i += 1
                }
            }
        }
        return out.joined(separator: "\n")
    }

    /// One line naming what changed from `old` (nil: no previous version): budgets by id,
    /// tiers and models by name, `+` added, `-` removed, `~` changed.
    public func summary(from old: String?) -> String {
        guard let old else { return "first version: " + Self.items(yaml).keys.sorted().joined(separator: ", ") }
        let before = Self.items(old), after = Self.items(yaml)
        var parts: [String] = []
        for k in Set(before.keys).union(after.keys).sorted() {
            switch (before[k], after[k]) {
            case (nil, .some): parts.append("+" + k)
            case (.some, nil): parts.append("-" + k)
            case (let x?, let y?) where x != y: parts.append("~" + k)
            default: break
            }
        }
        return parts.isEmpty ? "no change" : parts.joined(separator: ", ")
    }

    /// Each budget, tier and model as `section name` → its canonical YAML; `deletions` and
    /// `removed` whole.
    static func items(_ yaml: String) -> [String: String] {
        guard let top = (try? Yams.compose(yaml: yaml)) ?? nil else { return [:] }
        var out: [String: String] = [:]
        for section in sections {
            guard let node = top[section] else { continue }
            guard itemSections.contains(section), let list = node.sequence else {
                out[section] = (try? Yams.serialize(node: block(node), width: -1, sortKeys: true)) ?? ""
                continue
            }
            for (i, item) in list.enumerated() {
                let name = (item["id"] ?? item["name"])?.string ?? "#\(i)"
                out["\(section) \(name)"] = (try? Yams.serialize(node: block(item), width: -1, sortKeys: true)) ?? ""
            }
        }
        return out
    }
}
