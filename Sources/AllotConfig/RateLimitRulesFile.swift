import AllotCore
import Foundation
import Yams

/// envoyproxy/ratelimit's configuration files, read unchanged (`domain`, nested `descriptors`
/// with `key`/`value`, `rate_limit: {unit, requests_per_unit, unlimited, name}`,
/// `shadow_mode`), into `DescriptorRules`. Keys envoyproxy/ratelimit knows and Allot ignores
/// (`detailed_metric`, `value_to_metric`, `replaces`, `quota_mode`) are accepted; any other is
/// refused with the field named, as a typo must not change a limit.
public enum RateLimitRulesFile {
    static let descriptorKeys: Set<String> = ["key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric",
                                              "value_to_metric", "quota_mode"]
    static let limitKeys: Set<String> = ["unit", "requests_per_unit", "unlimited", "name", "replaces"]

    /// One file's domain and rules; errors name the file's field (`descriptors[1].rate_limit.unit`).
    public static func parse(_ text: String, file: String = "") throws(AllotError) -> (domain: String, rules: [DescriptorRules.Rule]) {
        let root: Any?
        do { root = try Yams.load(yaml: text) } catch {
            throw AllotError(.invalidSettings, "\(file): not valid YAML: \(error)")
        }
        guard let top = root as? [String: Any] else { throw AllotError(.invalidSettings, "\(file): a mapping with domain and descriptors") }
        for k in top.keys.sorted() where k != "domain" && k != "descriptors" {
            throw AllotError(.invalidSettings, "\(file): \(k): unknown key; allowed here: descriptors, domain")
        }
        guard let domain = top["domain"] as? String, !domain.isEmpty else {
            throw AllotError(.invalidSettings, "\(file): domain: a non-empty name is required")
        }
        return (domain, try rules(top["descriptors"], path: "descriptors", file: file))
    }

    static func rules(_ value: Any?, path: String, file: String) throws(AllotError) -> [DescriptorRules.Rule] {
        guard let value else { return [] }
        guard let list = value as? [Any] else { throw AllotError(.invalidSettings, "\(file): \(path): a list of descriptors") }
        var out: [DescriptorRules.Rule] = []
        var seen = Set<String>()
        for (i, item) in list.enumerated() {
            let at = "\(path)[\(i)]"
            guard let m = item as? [String: Any] else { throw AllotError(.invalidSettings, "\(file): \(at): a mapping") }
            for k in m.keys.sorted() where !descriptorKeys.contains(k) {
                throw AllotError(.invalidSettings, "\(file): \(at).\(k): unknown key; allowed here: \(descriptorKeys.sorted().joined(separator: ", "))")
            }
            guard let key = scalar(m["key"]), !key.isEmpty else { throw AllotError(.invalidSettings, "\(file): \(at).key: required") }
            let value = scalar(m["value"])
            guard seen.insert(key + "\u{0}" + (value ?? "\u{1}")).inserted else {
                throw AllotError(.invalidSettings, "\(file): \(at): key \(key)\(value.map { " value \($0)" } ?? "") is configured twice at this level")
            }
            var rule = DescriptorRules.Rule(key: key, value: value)
            if let l = m["rate_limit"] { rule.limit = try limit(l, path: at + ".rate_limit", file: file) }
            if let s = m["shadow_mode"] {
                guard let b = s as? Bool else { throw AllotError(.invalidSettings, "\(file): \(at).shadow_mode: true or false") }
                rule.shadow = b
            }
            rule.rules = try rules(m["descriptors"], path: at + ".descriptors", file: file)
            out.append(rule)
        }
        return out
    }

    static func limit(_ value: Any, path: String, file: String) throws(AllotError) -> DescriptorRules.Limit {
        guard let m = value as? [String: Any] else { throw AllotError(.invalidSettings, "\(file): \(path): a mapping") }
        for k in m.keys.sorted() where !limitKeys.contains(k) {
            throw AllotError(.invalidSettings, "\(file): \(path).\(k): unknown key; allowed here: \(limitKeys.sorted().joined(separator: ", "))")
        }
        let name = scalar(m["name"])
        if let u = m["unlimited"] {
            guard let b = u as? Bool else { throw AllotError(.invalidSettings, "\(file): \(path).unlimited: true or false") }
            if b { return DescriptorRules.Limit(requestsPerUnit: 0, unit: .second, name: name, unlimited: true) }
        }
        guard let unitText = scalar(m["unit"]), let unit = DescriptorRules.TimeUnit(rawValue: unitText.lowercased()) else {
            throw AllotError(.invalidSettings, "\(file): \(path).unit: one of \(DescriptorRules.TimeUnit.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let n = m["requests_per_unit"] as? Int, n >= 0, n <= Int(UInt32.max) else {
            throw AllotError(.invalidSettings, "\(file): \(path).requests_per_unit: a whole number from 0 to \(UInt32.max)")
        }
        return DescriptorRules.Limit(requestsPerUnit: Int64(n), unit: unit, name: name)
    }

    static func scalar(_ v: Any?) -> String? {
        switch v {
        case let s as String: s
        case let i as Int: String(i)
        case let b as Bool: String(b)
        case let d as Double: String(d)
        default: nil
        }
    }

    /// Every `.yaml`/`.yml` file of each path (a file, or a directory, as envoyproxy/ratelimit's
    /// `RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config`), one domain per file.
    public static func load(_ paths: [String]) throws(AllotError) -> DescriptorRules {
        var rules = DescriptorRules()
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw AllotError(.invalidSettings, "\(path): no such file or directory (rate-limit rules)")
            }
            var files = [path]
            if isDirectory.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
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
