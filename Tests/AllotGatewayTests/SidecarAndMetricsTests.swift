import AllotCore
import AllotGateway
import Foundation
import Testing

@Suite("Gateway sidecar, runaway and metrics", .serialized)
struct SidecarAndMetricsTests {
    @Test("sidecar: /v1/check reserves with the same headers, /v1/settle charges the actual amount; unknown ids are 404")
    func sidecar() async throws {
        let (config, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1, mock: nil)
        let admin = fleet.adminPorts[0]
        let check = #"{"consumer": "p1", "route": "chat", "model": "small", "input_tokens": 900, "output_tokens": 4000}"#
        let ok = try await call(port: admin, path: "/v1/check", key: nil, body: check)
        #expect(ok.status == 200)
        #expect(ok.json?["allowed"] as? Bool == true)
        #expect(ok.headers["x-ratelimit-limit-tokens"] == "20000")
        let id = try #require(ok.json?["reservation_id"] as? String)
        // 15,000 monthly: a second bound of 4,900 fits, a third too, the fourth does not.
        var allowed = 1
        var denial: Reply?
        for _ in 0..<3 {
            let r = try await call(port: admin, path: "/v1/check", key: nil, body: check)
            if r.status == 200 { allowed += 1 } else { denial = r }
        }
        #expect(allowed == 3)
        #expect(denial?.status == 429)
        #expect(denial?.json?["budget"] as? String == "pro.month/consumer=p1")
        #expect(denial?.headers["retry-after"] != nil)
        // Settle the first at its actual usage: the refund makes room for one more.
        let settled = try await call(port: admin, path: "/v1/settle", key: nil,
                                     body: #"{"reservation_id": "\#(id)", "input_tokens": 800, "output_tokens": 100}"#)
        #expect(settled.status == 200)
        let again = try await call(port: admin, path: "/v1/check", key: nil, body: #"{"key": "sk-pro-1", "route": "chat", "model": "small", "input_tokens": 900, "output_tokens": 2000}"#)
        #expect(again.status == 200)
        let twice = try await call(port: admin, path: "/v1/settle", key: nil, body: #"{"reservation_id": "\#(id)", "input_tokens": 1, "output_tokens": 1}"#)
        #expect(twice.status == 404)
        let bad = try await call(port: admin, path: "/v1/check", key: nil, body: #"{"consumer": "nobody"}"#)
        #expect(bad.status == 401)
        let garbage = try await call(port: admin, path: "/v1/settle", key: nil, body: "not json")
        #expect(garbage.status == 400)
        await fleet.stop()
        // Held reservations are settled at their bound when the node stops (nothing leaks).
        let month = try #require(fleet.coordinator.allocatorStatus("pro.month/consumer=p1"))
        #expect(month.consumed == 900 + 2 * 4900 + 2900)
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
