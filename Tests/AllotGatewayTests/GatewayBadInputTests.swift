import AllotDemo
import AllotCore
import AllotGateway
import Foundation
import AllotTransport
import Logging
import NIOPosix
import Testing

/// Must-show 4: bad input gets a clear error and loses nothing.
@Suite("Gateway bad input", .serialized)
struct GatewayBadInputTests {
    /// Reserved tokens on p1's monthly budget on every node (0 = nothing leaked).
    func reserved(_ fleet: LocalFleet, _ id: BudgetID = "pro.month/consumer=p1") -> Int64 {
        fleet.gateways.reduce(0) { sum, gw in
            sum + gw.core.enforcer.withEnforcer { e in e.handle(for: id).map { e.status($0).reserved } ?? 0 }
        }
    }

    @Test("identity, body and entitlement errors are refused before any budget is touched")
    func refusals() async throws {
        let (config, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1)
        let port = fleet.proxyPorts[0]
        var r = try await call(port: port, key: nil, body: chatBody())
        #expect(r.status == 401 && r.errorCode == "missing_api_key")
        #expect((r.json?["error"] as? [String: Any])?["type"] as? String == "invalid_request_error")
        r = try await call(port: port, key: "sk-nobody", body: chatBody())
        #expect(r.status == 401 && r.errorCode == "invalid_api_key")
        r = try await call(port: port, key: "sk-pro-1", body: "{\"model\": \"small\", \"messages\": [")
        #expect(r.status == 400 && r.errorCode == "invalid_json")
        r = try await call(port: port, key: "sk-pro-1", body: "{\"messages\": []}")
        #expect(r.status == 400 && r.errorCode == "missing_model")
        r = try await call(port: port, key: "sk-pro-1", body: chatBody(model: "gpt-9"))
        #expect(r.status == 404 && r.errorCode == "model_not_found")
        r = try await call(port: port, key: "sk-pro-1", body: chatBody(prompt: String(repeating: "x", count: 9000)))
        #expect(r.status == 413 && r.errorCode == "body_too_large")
        r = try await call(port: port, key: "sk-pro-1", body: chatBody(maxTokens: -3))
        #expect(r.status == 400 && r.errorCode == "invalid_max_tokens")
        // Entitlements: the free tier may call `small` on chat and embeddings only, ≤ 256 tokens, ≤ 4 KiB prompts.
        r = try await call(port: port, key: "sk-free-1", body: chatBody(model: "large"))
        #expect(r.status == 403 && r.errorCode == "model_not_entitled" && r.errorBudget == "entitlement.models")
        r = try await call(port: port, path: "/v1/completions", key: "sk-free-1", body: chatBody())
        #expect(r.status == 403 && r.errorCode == "route_not_entitled")
        r = try await call(port: port, key: "sk-free-1", body: chatBody(maxTokens: 1000))
        #expect(r.status == 400 && r.errorCode == "max_tokens_not_entitled")
        r = try await call(port: port, key: "sk-free-1", body: chatBody(prompt: String(repeating: "y", count: 5000)))
        #expect(r.status == 413 && r.errorCode == "prompt_too_large")
        // Agents: chain depth above 3 is refused; a garbled depth is a 400.
        r = try await call(port: port, key: "sk-agent-1", body: chatBody(), headers: [("x-allot-chain-depth", "4")])
        #expect(r.status == 429 && r.errorCode == "chain_depth_exceeded")
        r = try await call(port: port, key: "sk-agent-1", body: chatBody(), headers: [("x-allot-chain-depth", "deep")])
        #expect(r.status == 400 && r.errorCode == "invalid_chain_depth")
        r = try await call(port: port, key: "sk-agent-1", body: chatBody(), headers: [("x-allot-chain-depth", "3")])
        #expect(r.status == 200)
        // None of it spent a token of the free consumer's budgets.
        r = try await call(port: port, key: "sk-free-1", body: chatBody(maxTokens: 10))
        #expect(r.status == 200 && r.headers["x-ratelimit-remaining-requests"] != nil)
        await fleet.stop()
        let denials = try auditRecords(fleet).filter { $0.decision == "reject" }
        #expect(denials.count == 11, "every refusal of a known consumer is audited: \(denials.map(\.budget))")
    }

    @Test("a dead upstream is a 502 and refunds the reservation")
    func upstreamDown() async throws {
        let (config, consumers) = try testConfig { $0.upstream = URL(string: "http://127.0.0.1:9")! }
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1, mock: nil)
        let r = try await call(port: fleet.proxyPorts[0], key: "sk-pro-1", body: chatBody(maxTokens: 500))
        #expect(r.status == 502 && r.errorCode == "upstream_unreachable")
        #expect(r.body.contains("nothing was charged"))
        #expect(reserved(fleet) == 0)
        await fleet.stop()
        let rec = try #require(try auditRecords(fleet).first)
        #expect(rec.settlement == "refund" && rec.inputTokens == 0 && rec.outputTokens == 0 && rec.upstreamStatus == 502)
        #expect(fleet.coordinator.allocatorStatus("pro.month/consumer=p1")?.consumed == 0)
    }

    @Test("an upstream that hangs is a 504 with the reservation refunded; a stream cut in the middle is charged its bound")
    func hangAndCut() async throws {
        let (config, consumers) = try testConfig()
        var mock = MockUpstream.Settings()
        mock.hangLimit = .seconds(2)
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1, mock: mock)
        let port = fleet.proxyPorts[0]
        let started = ContinuousClock.now
        let hang = try await call(port: port, key: "sk-pro-1", body: chatBody(maxTokens: 400), headers: [("x-mock-fault", "hang")])
        #expect(hang.status == 504 && hang.errorCode == "upstream_timeout")
        #expect(ContinuousClock.now - started < .seconds(2), "gateway.upstream_timeout is 1s")
        #expect(reserved(fleet) == 0)
        let body = chatBody(maxTokens: 400, stream: true)
        let cut = try await call(port: port, key: "sk-pro-1", body: body, headers: [("x-mock-fault", "cut")])
        #expect(cut.status == 200, "\(cut.body)")
        #expect(!cut.body.contains("[DONE]"))
        #expect(reserved(fleet) == 0)
        let noUsage = try await call(port: port, key: "sk-pro-1", body: chatBody(maxTokens: 300), headers: [("x-mock-fault", "no-usage")])
        #expect(noUsage.status == 200)
        await fleet.stop()
        let recs = try auditRecords(fleet)
        #expect(recs.map(\.settlement) == ["refund", "bound", "bound"])
        #expect(recs[1].outputTokens == 400 && recs[2].outputTokens == 300)
        let charged = recs.reduce(Int64(0)) { $0 + $1.inputTokens + $1.outputTokens }
        #expect(fleet.coordinator.allocatorStatus("pro.month/consumer=p1")?.consumed == charged)
    }

    @Test("a dead coordinator: a budget that fails closed answers 503, not a silent admit")
    func deadCoordinator() async throws {
        let (config, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1)
        // Stop the coordinator's listener only: kill the whole group, then ask a fresh gateway.
        await fleet.stop()
        var lone = config
        lone.name = "gw-lone"
        lone.listenPort = 0
        lone.adminPort = 0
        lone.auditDirectory = nil
        lone.coordinatorPort = fleet.coordinatorPort
        let ports = PortBox(count: 2)
        let tls = try TLSMaterialStore { try TLSMaterial.load(dir: fleet.directory.appendingPathComponent("certs"), role: .node, name: "gw-1") }
        let gw = try GatewayService(config: lone, consumers: consumers,
                                    transport: TLSLeaseTransport(host: "127.0.0.1", port: fleet.coordinatorPort, tls: tls, group: .singletonMultiThreadedEventLoopGroup),
                                    logger: .init(label: "t") { _ in SwiftLogNoOpLogHandler() },
                                    onListening: { p, a in ports.set(0, p); ports.set(1, a) })
        let task = Task { try await gw.run() }
        let (port, admin) = (try await ports.wait(0), try await ports.wait(1))
        let r = try await call(port: port, key: "sk-pro-1", body: chatBody())
        #expect(r.status == 503 && r.errorCode == "budget_unavailable")
        #expect(r.headers["retry-after"] == "1")
        let ready = try await call(port: admin, path: "/readyz", method: .GET, key: nil, body: nil)
        #expect(ready.status == 503)
        task.cancel()
        _ = await task.result
    }
}
