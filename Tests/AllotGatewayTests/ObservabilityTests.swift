import AllotDemo
@testable import AllotGateway
import Foundation
import Testing

/// The Grafana dashboard and the Prometheus alert rules under cluster/observability/ name only
/// metrics a live deployment exports, and their PromQL parses (`promtool check rules`, from
/// Debian's prometheus package, which scripts/test.sh installs).
@Suite("Dashboard and alert rules", .serialized)
struct ObservabilityTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("cluster/observability")

    /// Metric names (`allot_…`) an expression or file uses, histogram series folded to their family.
    static func names(in text: String) -> Set<String> {
        let regex = /allot_[a-z0-9_]+/
        return Set(text.matches(of: regex).map { m -> String in
            var n = String(m.output)
            for suffix in ["_bucket", "_sum", "_count"] where n.hasSuffix(suffix) { n = String(n.dropLast(suffix.count)) }
            return n
        }.filter { !$0.hasPrefix("allot_dashboard") })
    }

    /// The families a scrape has (`# TYPE name kind` lines).
    static func families(_ scrape: String) -> Set<String> {
        Set(scrape.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("# TYPE ") else { return nil }
            return line.split(separator: " ").dropFirst(2).first.map(String.init)
        })
    }

    @Test("real time: every metric the dashboard and the alert rules name is in a live scrape of a coordinator (with a ledger) and a gateway after traffic (admits, a denial, a soft limit crossed, an upstream charging above the bound); promtool accepts the rules and the dashboard's queries")
    func dashboardAndRules() async throws {
        let dashboard = try String(contentsOf: Self.directory.appendingPathComponent("allot-dashboard.json"), encoding: .utf8)
        let rules = try String(contentsOf: Self.directory.appendingPathComponent("allot-alerts.yaml"), encoding: .utf8)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(dashboard.utf8)) as? [String: Any])
        let exprs = ((json["panels"] as? [[String: Any]]) ?? []).flatMap { ($0["targets"] as? [[String: Any]]) ?? [] }.compactMap { $0["expr"] as? String }
        #expect(exprs.count >= 10)
        let used = Self.names(in: exprs.joined(separator: "\n") + "\n" + rules)
        #expect(used.count >= 12, "\(used.sorted())")

        // A fleet with a ledger; the free tier's requests/min with a 1 % soft limit.
        setenv(FixtureTests.keyEnv, "sk-operator-key", 1)
        let upstream = FixtureUpstream()
        let port = try await upstream.start()
        let yaml = testConfigYAML.replacingOccurrences(of: "{name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 5, period: 1m, burst: 5}",
                                                       with: "{name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 5, period: 1m, burst: 5, soft_limits: [1]}")
        #expect(yaml != testConfigYAML)
        let (config, consumers) = try testConfig(yaml: yaml) { c in
            c.upstream = URL(string: "http://127.0.0.1:\(port)")!
            c.upstreamKeyEnv = FixtureTests.keyEnv
            c.models["large"]!.maxPartTokens = [.image: 1_600]
        }
        let ledger = FileManager.default.temporaryDirectory.appendingPathComponent("allot-obs-\(UUID().uuidString.prefix(8)).db").path
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1, mock: nil, ledgerPath: ledger)
        let gw = fleet.proxyPorts[0]
        // Admits, then a denial (5 per minute), then an upstream reporting more than the bound.
        var statuses: [Int] = []
        for _ in 0..<7 {
            let small = FixtureTests.json(["model": "small", "max_tokens": 20, "messages": FixtureTests.user])
            statuses.append(try await call(port: gw, key: "sk-free-1", body: small, headers: [("x-fixture", "chat_n4.json")]).status)
        }
        #expect(statuses.contains(200) && statuses.contains(429), "\(statuses)")
        let body = FixtureTests.json(["model": "large", "max_tokens": 20, "messages": FixtureTests.user])
        #expect(try await call(port: gw, key: "sk-pro-1", body: body, headers: [("x-fixture", "chat_images.json")]).status == 200)
        // Scrape both, the coordinator after its soft-limit check has run.
        var scraped = Set<String>()
        let until = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < until {
            let c = try await call(port: fleet.coordinatorAdminPort, path: "/metrics", method: .GET, key: nil, body: nil)
            let g = try await call(port: fleet.adminPorts[0], path: "/metrics", method: .GET, key: nil, body: nil)
            #expect(c.status == 200 && g.status == 200)
            scraped = Self.families(c.body).union(Self.families(g.body))
            if used.isSubset(of: scraped) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        await fleet.stop()
        upstream.stop()
        try? FileManager.default.removeItem(atPath: ledger)
        #expect(used.subtracting(scraped).isEmpty, "named by the dashboard or the rules but not exported: \(used.subtracting(scraped).sorted())")

        // promtool: the rules, and each dashboard query as a recording rule (its PromQL parsed).
        guard let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            #expect(ProcessInfo.processInfo.environment["ALLOT_REQUIRE_PROMTOOL"] == nil, "promtool is missing (apt-get install prometheus)")
            return
        }
        let queries = FileManager.default.temporaryDirectory.appendingPathComponent("allot-dashboard-\(UUID().uuidString.prefix(8)).yaml")
        let recorded = exprs.enumerated().map { i, e in
            "      - record: allot_dashboard:query\(i)\n        expr: \"\(e.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\""))\""
        }
        try ("groups:\n  - name: dashboard\n    rules:\n" + recorded.joined(separator: "\n") + "\n").write(to: queries, atomically: true, encoding: .utf8)
        for file in [Self.directory.appendingPathComponent("allot-alerts.yaml").path, queries.path] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: promtool)
            p.arguments = ["check", "rules", file]
            let out = Pipe()
            (p.standardOutput, p.standardError) = (out, out)
            try p.run()
            p.waitUntilExit()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(p.terminationStatus == 0 && text.contains("SUCCESS"), "\(file): \(text)")
        }
        try? FileManager.default.removeItem(at: queries)
    }
}
