import AllotCore
import Foundation
import Yams

/// envoyproxy/ratelimit's configuration files, read unchanged (`domain`, nested `descriptors`
/// with `key`/`value`, `rate_limit: {unit, requests_per_unit, unlimited, name}`,
/// `shadow_mode`), into `DescriptorRules`. Scalars are taken as written (`value: 1.10` is
/// "1.10", `value: 2024-01-01` a string). `detailed_metric` and `value_to_metric` (metrics
/// only) are accepted; `replaces` and `quota_mode`, which would change decisions Allot does
/// not make that way, are refused, as is any other key, naming the field.
public enum RateLimitRulesFile {
    static let descriptorKeys: Set<String> = ["key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric", "value_to_metric"]
    static let limitKeys: Set<String> = ["unit", "requests_per_unit", "unlimited", "name"]

    /// One file's domain and rules; errors name the file's field (`descriptors[1].rate_limit.unit`).
    public static func parse(_ text: String, file: String = "") throws(AllotError) -> (domain: String, rules: [DescriptorRules.Rule]) {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw AllotError(.invalidSettings, "\(file): not valid YAML: \(error)")
        }
        guard let top = root?.mapping else { throw AllotError(.invalidSettings, "\(file): a mapping with domain and descriptors") }
        try check(top, ["domain", "descriptors"], path: "", file: file)
        guard let domain = top["domain"]?.scalar?.string, !domain.isEmpty else {
            throw AllotError(.invalidSettings, "\(file): domain: a non-empty name is required")
        }
        return (domain, try rules(top["descriptors"], path: "descriptors", file: file))
    }

    static func check(_ m: Node.Mapping, _ allowed: Set<String>, path: String, file: String) throws(AllotError) {
        for k in m.keys {
            guard let name = k.scalar?.string, allowed.contains(name) else {
                let at = path.isEmpty ? (k.scalar?.string ?? "?") : path + "." + (k.scalar?.string ?? "?")
                throw AllotError(.invalidSettings, "\(file): \(at): unknown key; allowed here: \(allowed.sorted().joined(separator: ", "))")
            }
        }
    }

    static func bool(_ n: Node?, _ path: String, _ file: String) throws(AllotError) -> Bool? {
        guard let n else { return nil }
        guard let s = n.scalar?.string, let b = ["true": true, "false": false][s.lowercased()] else {
            throw AllotError(.invalidSettings, "\(file): \(path): true or false")
        }
        return b
    }

    static func rules(_ node: Node?, path: String, file: String) throws(AllotError) -> [DescriptorRules.Rule] {
        guard let node else { return [] }
        guard let list = node.sequence else { throw AllotError(.invalidSettings, "\(file): \(path): a list of descriptors") }
        var out: [DescriptorRules.Rule] = []
        var seen = Set<String>()
        for (i, item) in list.enumerated() {
            let at = "\(path)[\(i)]"
            guard let m = item.mapping else { throw AllotError(.invalidSettings, "\(file): \(at): a mapping") }
            try check(m, descriptorKeys, path: at, file: file)
            guard let key = m["key"]?.scalar?.string, !key.isEmpty else { throw AllotError(.invalidSettings, "\(file): \(at).key: required") }
            let value = m["value"]?.scalar?.string
            guard seen.insert(key + "\u{0}" + (value ?? "\u{1}")).inserted else {
                throw AllotError(.invalidSettings, "\(file): \(at): key \(key)\(value.map { " value \($0)" } ?? "") is configured twice at this level")
            }
            var rule = DescriptorRules.Rule(key: key, value: value)
            if let l = m["rate_limit"] { rule.limit = try limit(l, path: at + ".rate_limit", file: file) }
            rule.shadow = try bool(m["shadow_mode"], at + ".shadow_mode", file) ?? false
            rule.rules = try rules(m["descriptors"], path: at + ".descriptors", file: file)
            out.append(rule)
        }
        return out
    }

    static func limit(_ node: Node, path: String, file: String) throws(AllotError) -> DescriptorRules.Limit {
        guard let m = node.mapping else { throw AllotError(.invalidSettings, "\(file): \(path): a mapping") }
        try check(m, limitKeys, path: path, file: file)
        let name = m["name"]?.scalar?.string
        if try bool(m["unlimited"], path + ".unlimited", file) == true {
            return DescriptorRules.Limit(requestsPerUnit: 0, unit: .second, name: name, unlimited: true)
        }
        guard let unitText = m["unit"]?.scalar?.string, let unit = DescriptorRules.TimeUnit(rawValue: unitText.lowercased()) else {
            throw AllotError(.invalidSettings, "\(file): \(path).unit: one of \(DescriptorRules.TimeUnit.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let text = m["requests_per_unit"]?.scalar?.string, let n = UInt32(text) else {
            throw AllotError(.invalidSettings, "\(file): \(path).requests_per_unit: a whole number from 0 to \(UInt32.max)")
        }
        return DescriptorRules.Limit(requestsPerUnit: Int64(n), unit: unit, name: name)
    }

    /// Every `.yaml`/`.yml` file of each path (a file, or a directory, as envoyproxy/ratelimit's
    /// `RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config`), one domain per file. No path, or a
    /// directory that cannot be listed, is an error (no rules would limit nothing).
    public static func load(_ paths: [String]) throws(AllotError) -> DescriptorRules {
        guard !paths.isEmpty else { throw AllotError(.invalidSettings, "name at least one rate-limit rules file or directory") }
        var rules = DescriptorRules()
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw AllotError(.invalidSettings, "\(path): no such file or directory (rate-limit rules)")
            }
            var files = [path]
            if isDirectory.boolValue {
                let names: [String]
                do { names = try FileManager.default.contentsOfDirectory(atPath: path) } catch {
                    throw AllotError(.invalidSettings, "\(path): cannot be listed: \(error)")
                }
                files = names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted().map { path + "/" + $0 }
            }
            for f in files {
                guard let data = FileManager.default.contents(atPath: f) else { throw AllotError(.invalidSettings, "\(f): cannot be read") }
                let (domain, r) = try parse(String(decoding: data, as: UTF8.self), file: f)
                try rules.add(domain: domain, rules: r)
            }
        }
        return rules
    }
}
