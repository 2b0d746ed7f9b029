import AllotConfig
import AllotCoordination
import AllotCoordinator
import AllotCore
import AllotTransport
import Foundation
import Testing

/// envoyproxy/ratelimit's own example configuration, read unchanged, and the rule walk.
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/envoy-ratelimit")
    static var example: String { directory.appendingPathComponent("example.yaml").path }
    static var load: String { directory.appendingPathComponent("load.yaml").path }
}

@Suite("Envoy rate-limit rules")
struct RateLimitRulesTests {
    typealias E = (key: String, value: String)

    @Test("envoyproxy/ratelimit's example config, unchanged: each descriptor gets the limit envoyproxy/ratelimit gives it")
    func exampleRules() throws {
        let rules = try RateLimitRulesFile.load([Fixtures.example])
        func m(_ entries: [E], domain: String = "rl") -> DescriptorRules.Match { rules.match(domain: domain, entries: entries) }
        let perMinute = { (n: Int64) in DescriptorRules.Limit(requestsPerUnit: n, unit: .minute) }
        #expect(m([("source_cluster", "proxy"), ("destination_cluster", "mock")]) == .limited(perMinute(1), shadow: false))
        #expect(m([("source_cluster", "proxy")]) == .noRule, "a rule without rate_limit at the descriptor's end")
        #expect(m([("source_cluster", "other"), ("destination_cluster", "mock")]) == .noRule)
        #expect(m([("foo", "anything")]) == .limited(perMinute(2), shadow: false))
        #expect(m([("foo", "x"), ("bar", "y")]) == .limited(perMinute(3), shadow: false))
        #expect(m([("foo", "x"), ("bar", "banned")]) == .limited(perMinute(0), shadow: false))
        #expect(m([("foo", "x"), ("baz", "z")]) == .limited(DescriptorRules.Limit(requestsPerUnit: 1, unit: .second), shadow: false))
        #expect(m([("foo", "x"), ("baz", "shady")]) == .limited(perMinute(1), shadow: true))
        #expect(m([("foo", "x"), ("bay", "q")]) == .unlimited)
        #expect(m([("qux", "q")]) == .unlimited)
        #expect(m([("foo", "x"), ("nope", "y")]) == .noRule)
        #expect(m([("foo", "x"), ("bar", "y"), ("deeper", "z")]) == .noRule)
        #expect(m([("foo", "x")], domain: "other") == .noRule)
        #expect(m([]) == .noRule)
    }

    @Test("budget ids: made only for a descriptor the rules limit so (an override where a rule is reached); canonical; hostile ids refused")
    func budgetIDs() throws {
        let rules = try RateLimitRulesFile.load([Fixtures.example])
        let l2 = DescriptorRules.Limit(requestsPerUnit: 2, unit: .minute)
        let odd: [E] = [("foo", "a|b=c%d é")]
        let id = DescriptorRules.budgetID(domain: "rl", entries: odd, limit: l2)
        #expect(rules.instantiate(id)?.kind == .rate(limit: 2, period: .seconds(60), burst: 2), "\(id)")
        #expect(!id.rawValue.dropFirst(DescriptorRules.prefix.count).contains(" "))
        // Terms the rules do not give to that descriptor (and no rule reached): refused.
        #expect(rules.instantiate(DescriptorRules.budgetID(domain: "rl", entries: [("nope", "x")], limit: l2)) == nil)
        // An override (the descriptor's own limit) where a rule is reached: made.
        let override = DescriptorRules.Limit(requestsPerUnit: 500, unit: .hour)
        #expect(rules.instantiate(DescriptorRules.budgetID(domain: "rl", entries: [("foo", "x")], limit: override))?.kind.ceiling == 500)
        for hostile in ["envoy:", "envoy:rl", "envoy:rl|foo=x", "envoy:rl|foo=x|0/minute", "envoy:rl|foo=x|-1/minute",
                        "envoy:rl|foo=x|2/fortnight", "envoy:rl|foo=x|99999999999999999999/minute", "envoy:rl|foo=%zz|2/minute",
                        "envoy:rl|foo=%41|2/minute", "envoy:rl|foo|2/minute", "envoy:rl|foo=x|2/minute|", "pro.tpm/consumer=a",
                        "envoy:rl|foo=" + String(repeating: "x", count: 600) + "|2/minute"] {
            #expect(rules.instantiate(BudgetID(hostile)) == nil, "\(hostile)")
        }
    }

    @Test("a file with a typo, a bad unit or count, or a rule twice is refused naming the field")
    func badFiles() {
        for (text, field) in [("domain: d\ndescriptors:\n  - key: a\n    rate_limt: {unit: second, requests_per_unit: 1}\n", "descriptors[0].rate_limt"),
                              ("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n", "descriptors[0].rate_limit.unit"),
                              ("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: -1}\n", "requests_per_unit"),
                              ("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 4294967296}\n", "requests_per_unit"),
                              ("domain: d\ndescriptors:\n  - key: a\n  - key: a\n", "descriptors[1]"),
                              ("domain: d\ndescriptors:\n  - value: a\n", "descriptors[0].key"),
                              ("descriptors: []\n", "domain"), ("domain: d\nextra: 1\n", "extra"), ("[", "YAML")] {
            #expect { _ = try RateLimitRulesFile.parse(text, file: "f.yaml") } throws: { ($0 as? AllotError)?.message.contains(field) == true }
        }
        var rules = DescriptorRules()
        #expect(throws: AllotError.self) {
            try rules.add(domain: "d", rules: [])
            try rules.add(domain: "d", rules: [])
        }
    }

    @Test("a coordinator reads the same files (envoy_ratelimit:), and then needs no budget or tier of its own")
    func coordinatorConfig() throws {
        let cfg = try CoordinatorConfig(yaml: "coordinator: {name: c1}\nenvoy_ratelimit: [\"\(Fixtures.example)\", \"\(Fixtures.load)\"]\n")
        #expect(Set(cfg.core.descriptors.domains.keys) == ["rl", "load"])
        #expect { _ = try CoordinatorConfig(yaml: "coordinator: {name: c1}\nenvoy_ratelimit: [/no/such/file.yaml]\n") } throws: {
            ($0 as? AllotError)?.message.contains("/no/such/file.yaml") == true
        }
        #expect(throws: AllotError.self) { _ = try CoordinatorConfig(yaml: "coordinator: {name: c1}\n") }
    }
}

@Suite("Envoy rate-limit rules: edges")
struct RateLimitRulesEdgeTests {
    @Test("scalars as written: value 1.10 stays 1.10, a date-like value is a string; week is a unit; replaces and quota_mode refused; an empty path list refused")
    func scalars() throws {
        let (_, rules) = try RateLimitRulesFile.parse("domain: d\ndescriptors:\n  - key: v\n    value: 1.10\n    rate_limit: {unit: week, requests_per_unit: 3}\n  - key: day\n    value: 2024-01-01\n    rate_limit: {unit: day, requests_per_unit: 1}\n")
        var r = DescriptorRules()
        try r.add(domain: "d", rules: rules)
        #expect(r.match(domain: "d", entries: [("v", "1.10")]) == .limited(DescriptorRules.Limit(requestsPerUnit: 3, unit: .week), shadow: false))
        #expect(r.match(domain: "d", entries: [("v", "1.1")]) == .noRule)
        #expect(r.match(domain: "d", entries: [("day", "2024-01-01")]) != .noRule)
        for key in ["replaces: [{name: x}]", "quota_mode: true"] {
            #expect(throws: AllotError.self) { _ = try RateLimitRulesFile.parse("domain: d\ndescriptors:\n  - key: a\n    \(key)\n") }
        }
        #expect(throws: AllotError.self) { _ = try RateLimitRulesFile.load([]) }
    }

    @Test("forged budget ids: override terms above 2^32-1, digest ids with terms the domain does not configure or a bad digest; a coordinator answers them unknown budget")
    func forged() throws {
        let rules = try RateLimitRulesFile.load([Fixtures.example])
        let digest = String(repeating: "ab", count: 32)
        #expect(rules.instantiate(BudgetID("envoy:rl|foo=x|4611686018427387904/second")) == nil)
        #expect(rules.instantiate(BudgetID("envoy:rl|foo=x|4294967296/second")) == nil)
        #expect(rules.instantiate(BudgetID("envoy:rl|foo=x|4294967295/second")) != nil, "an override Envoy can send (uint32)")
        #expect(rules.instantiate(BudgetID("envoy:rl|#\(digest)|2/minute"))?.kind.ceiling == 2, "terms the domain configures")
        for bad in ["envoy:rl|#\(digest)|7/minute", "envoy:rl|#\(digest.uppercased())|2/minute", "envoy:rl|#abc|2/minute",
                    "envoy:other|#\(digest)|2/minute"] {
            #expect(rules.instantiate(BudgetID(bad)) == nil, "\(bad)")
        }
        var settings = CoordinatorCore.Settings()
        settings.descriptors = rules
        let core = try CoordinatorCore(settings: settings, budgets: [], now: WallClock.now())
        let answers = core.machine { m in
            m.acquire([AcquireRequest(requestID: 1, node: "n", budget: "envoy:rl|foo=x|4294967296/second", want: 1),
                       AcquireRequest(requestID: 2, node: "n", budget: "envoy:rl|foo=x|2/minute", want: 1)], from: "n", now: WallClock.now()).0
        }
        #expect(answers.first == .unknownBudget(requestID: 1, budget: "envoy:rl|foo=x|4294967296/second"))
        if case .grant(let g) = answers.last { #expect(g.budget == "envoy:rl|foo=x|2/minute") } else { Issue.record("\(answers)") }
    }
}
