import AllotDemo
import AllotCore
import AllotGateway
import Foundation
import Testing

@Suite("Gateway sidecar, runaway and metrics", .serialized)
struct SidecarAndMetricsTests {
    /// A sidecar call with `token` in its header (the test configuration's by default).
    func sidecar(_ port: Int, _ path: String, body: String, token: String? = "test-sidecar-token") async throws -> Reply {
        try await call(port: port, path: path, key: nil, body: body, headers: token.map { [("allot-sidecar-token", $0)] } ?? [])
    }

    @Test("sidecar: /v1/check reserves with the same headers, /v1/settle charges the actual amount; unknown ids are 404")
    func sidecar() async throws {
        let (config, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1, mock: nil)
        let admin = fleet.adminPorts[0]
        let check = #"{"consumer": "p1", "route": "chat", "model": "small", "input_tokens": 900, "output_tokens": 4000}"#
        let ok = try await sidecar(admin, "/v1/check", body: check)
        #expect(ok.status == 200)
        #expect(ok.json?["allowed"] as? Bool == true)
        #expect(ok.headers["x-ratelimit-limit-tokens"] == "20000")
        let id = try #require(ok.json?["reservation_id"] as? String)
        // 15,000 monthly: a second bound of 4,900 fits, a third too, the fourth does not.
        var allowed = 1
        var denial: Reply?
        for _ in 0..<3 {
            let r = try await sidecar(admin, "/v1/check", body: check)
            if r.status == 200 { allowed += 1 } else { denial = r }
        }
        #expect(allowed == 3)
        #expect(denial?.status == 429)
        #expect(denial?.json?["budget"] as? String == "pro.month/consumer=p1")
        #expect(denial?.headers["retry-after"] != nil)
        // Settle the first at its actual usage: the refund makes room for one more.
        let settled = try await sidecar(admin, "/v1/settle",
                                     body: #"{"reservation_id": "\#(id)", "input_tokens": 800, "output_tokens": 100}"#)
        #expect(settled.status == 200)
        let again = try await sidecar(admin, "/v1/check", body: #"{"key": "sk-pro-1", "route": "chat", "model": "small", "input_tokens": 900, "output_tokens": 2000}"#)
        #expect(again.status == 200)
        let twice = try await sidecar(admin, "/v1/settle", body: #"{"reservation_id": "\#(id)", "input_tokens": 1, "output_tokens": 1}"#)
        #expect(twice.status == 404)
        let bad = try await sidecar(admin, "/v1/check", body: #"{"consumer": "nobody"}"#)
        #expect(bad.status == 401)
        let garbage = try await sidecar(admin, "/v1/settle", body: "not json")
        #expect(garbage.status == 400)
        // Without the token, or with another, nothing is reserved or refunded.
        let anonymous = try await sidecar(admin, "/v1/check", body: check, token: nil)
        #expect(anonymous.status == 401 && anonymous.errorCode == "sidecar_token_missing")
        let wrong = try await sidecar(admin, "/v1/settle", body: #"{"reservation_id": "\#(id)", "refund": true}"#, token: "guess")
        #expect(wrong.status == 401 && wrong.errorCode == "sidecar_token_invalid")
        // Counts no budget can hold: refused or denied with an answer, never a crash.
        for n in ["4611686018427387904", "9223372036854775807", "9223372036854775808", "-1", "1e300"] {
            let huge = try await sidecar(admin, "/v1/check",
                                      body: #"{"consumer": "p1", "route": "chat", "model": "small", "input_tokens": \#(n), "output_tokens": \#(n)}"#)
            #expect([400, 429].contains(huge.status), "\(n): \(huge.status) \(huge.body)")
        }
        let metrics = try await call(port: admin, path: "/metrics", method: .GET, key: nil, body: nil)
        #expect(metrics.body.contains(#"allot_gateway_sidecar_refused_total{reason="missing_token"} 1"#))
        #expect(metrics.body.contains(#"allot_gateway_sidecar_refused_total{reason="wrong_token"} 1"#))
        await fleet.stop()
        // Held reservations are settled at their bound when the node stops (nothing leaks).
        let month = try #require(fleet.coordinator.allocatorStatus("pro.month/consumer=p1"))
        #expect(month.consumed == 900 + 2 * 4900 + 2900)
    }

    @Test("sidecar: counts at the edge of Int64 on a budget large enough to take them; the node keeps serving")
    func edgeCounts() async throws {
        // A quota of 4·10^18 tokens: a request of 10^18 + 10^18 fits its ceiling, so it is not
        // refused outright; the node measures that demand and sizes its asks from it.
        let yaml = testConfigYAML.replacingOccurrences(of: "      - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 1000000, period: 1m}",
                                                       with: "      - {name: huge, scope: [consumer], unit: tokens, kind: quota, allowance: 4000000000000000000, window: month}")
        let (config, consumers) = try testConfig(yaml: yaml)
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1, mock: nil)
        let admin = fleet.adminPorts[0]
        for n in ["1000000000000000000", "4611686018427387904", "9223372036854775807"] {
            let r = try await sidecar(admin, "/v1/check", body: #"{"consumer": "a1", "route": "chat", "model": "large", "input_tokens": \#(n), "output_tokens": \#(n)}"#)
            #expect([200, 400, 429].contains(r.status), "\(n): \(r.status) \(r.body)")
        }
        // Two refresh intervals: the node's poll sizes its asks from what it measured.
        try await Task.sleep(for: .milliseconds(2_200))
        let after = try await sidecar(admin, "/v1/check", body: #"{"consumer": "a1", "route": "chat", "model": "large", "input_tokens": 10, "output_tokens": 10}"#)
        #expect(after.status == 200 || after.status == 429, "\(after.status) \(after.body)")
        let health = try await call(port: admin, path: "/healthz", method: .GET, key: nil, body: nil)
        #expect(health.status == 200)
        await fleet.stop()
    }

    @Test("shadow mode over HTTP (real-time process test): a shadow tier lets every request through, names the budget that would have denied in a header, the sidecar's answer, the metric and the audit trail")
    func shadow() async throws {
        // The free tier (5 requests a minute, burst 5) in shadow mode.
        let yaml = testConfigYAML.replacingOccurrences(of: "  - name: free\n", with: "  - name: free\n    shadow: true\n")
            .replacingOccurrences(of: "admission_wait: 300ms", with: "admission_wait: 2s") // a cold start's leases, surely
        let (config, consumers) = try testConfig(yaml: yaml)
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1)
        let budget = "free.rpm/consumer=f1"
        var statuses: [Int] = [], named = 0
        for _ in 0..<9 {
            let r = try await call(port: fleet.proxyPorts[0], key: "sk-free-1", body: chatBody(maxTokens: 10))
            statuses.append(r.status)
            if r.headers["x-allot-would-deny"] == budget { named += 1 }
            #expect(r.headers["x-ratelimit-limit-requests"] == nil) // shadow limits stay out of the headers
        }
        #expect(statuses == Array(repeating: 200, count: 9))
        #expect(named >= 4) // at most the burst of 5 in these few seconds: the rest would have been denied
        let check = try await sidecar(fleet.adminPorts[0], "/v1/check", body: #"{"consumer": "f1", "route": "chat", "model": "small", "input_tokens": 10, "output_tokens": 10}"#)
        #expect(check.status == 200 && check.json?["would_deny"] as? String == budget)
        let metrics = try await call(port: fleet.adminPorts[0], path: "/metrics", method: .GET, key: nil, body: nil)
        #expect(metrics.body.contains("allot_gateway_would_deny_total{budget=\"\(budget)\",tier=\"free\"} \(named + 1)"))
        await fleet.stop()
        let recs = try auditRecords(fleet).filter { $0.consumer == "f1" }
        #expect(recs.filter { $0.wouldDeny == budget }.count == named + 1 && recs.allSatisfy { $0.decision == "admit" })
    }

    @Test("a runaway agent is flagged in metrics and the audit trail and throttled by its tier's policy")
    func runaway() async throws {
        let (config, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1)
        let port = fleet.proxyPorts[0]
        // Policy: flagged above 3 × max(baseline, 2/s) over a 2 s window: ~40 requests in a second trip it.
        var throttled = 0
        for _ in 0..<60 {
            let r = try await call(port: port, key: "sk-agent-2", body: chatBody(maxTokens: 10))
            if r.errorCode == "runaway_throttled" { throttled += 1 }
        }
        #expect(throttled > 0)
        // A calm agent is not affected.
        let calm = try await call(port: port, key: "sk-agent-1", body: chatBody(maxTokens: 10))
        #expect(calm.status == 200)
        let metrics = try await call(port: fleet.adminPorts[0], path: "/metrics", method: .GET, key: nil, body: nil)
        #expect(metrics.body.contains("allot_gateway_runaway_flags_total{consumer=\"a2\",tier=\"agent\"} 1"))
        #expect(metrics.body.contains("allot_gateway_requests_total{consumer=\"a2\",tier=\"agent\",model=\"small\",decision=\"admit\"}"))
        #expect(metrics.body.contains("allot_gateway_tokens_total{consumer=\"a2\",tier=\"agent\",model=\"small\",direction=\"output\"}"))
        #expect(metrics.body.contains("allot_gateway_upstream_latency_seconds_bucket"))
        #expect(metrics.body.contains("allot_gateway_reservation_error_tokens_total"))
        await fleet.stop()
        let recs = try auditRecords(fleet).filter { $0.consumer == "a2" }
        #expect(recs.contains { $0.runaway && $0.decision == "deny" && $0.budget == "runaway/consumer=a2" })
    }

    @Test("a reloaded consumers file takes effect at once: new keys work, removed keys are refused")
    func reloadConsumers() async throws {
        let (config, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1)
        let port = fleet.proxyPorts[0]
        #expect(try await call(port: port, key: "sk-new", body: chatBody()).status == 401)
        let yaml = "consumers:\n  - {id: newbie, tier: pro, key_sha256: \(ConsumerDirectory.hash("sk-new"))}\n"
        fleet.gateways[0].core.reload(consumers: try ConsumerDirectory(yaml: yaml, tiers: ["free", "pro", "agent"]))
        #expect(try await call(port: port, key: "sk-new", body: chatBody()).status == 200)
        #expect(try await call(port: port, key: "sk-pro-1", body: chatBody()).status == 401)
        await fleet.stop()
    }
}
