import AllotDemo
import AllotCore
import AllotGateway
import Foundation
import Testing

/// Must-show 1: through the gateway to the mock upstream, plain and streaming: usage settled
/// exactly, headers right, 429 exactly when a budget is spent.
@Suite("Gateway end to end", .serialized)
struct EndToEndTests {
    @Test("a plain completion is charged exactly the usage the upstream reported, with rate-limit headers")
    func plainCompletion() async throws {
        let (config, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1)
        let port = fleet.proxyPorts[0]
        let body = chatBody(maxTokens: 300)
        let r = try await call(port: port, key: "sk-pro-1", body: body, headers: [("x-mock-completion-tokens", "77")])
        #expect(r.status == 200)
        let usage = try #require(r.json?["usage"] as? [String: Any])
        let prompt = Int64((body.utf8.count + 3) / 4)
        #expect((usage["prompt_tokens"] as? Int).map(Int64.init) == prompt)
        #expect(r.headers["x-ratelimit-limit-tokens"] == "20000")
        #expect(r.headers["ratelimit-policy"]?.contains("\"pro.tpm\";q=20000;w=60") == true)
        #expect(r.headers["ratelimit-policy"]?.contains("\"pro.month\";q=15000;w=") == true)
        #expect(r.headers["ratelimit"]?.contains("\"pro.tpm\";r=") == true)
        #expect(r.headers["x-ratelimit-remaining-tokens"].flatMap(Int.init) != nil)
        #expect(r.headers["x-ratelimit-reset-tokens"]?.hasSuffix("s") == true)
        await fleet.stop()
        let records = try auditRecords(fleet)
        let rec = try #require(records.first { $0.consumer == "p1" })
        #expect(rec.decision == "admit" && rec.settlement == "usage")
        #expect(rec.inputTokens == prompt && rec.outputTokens == 77)
        #expect(rec.reserved == Int64(body.utf8.count) + 300)
        // 0.15 $/Mtok in, 0.6 out = 0.15 and 0.6 µ$ per token, rounded up once.
        #expect(rec.costMicroDollars == (prompt * 150 + 77 * 600 + 999) / 1000)
        #expect(rec.keyID == String(ConsumerDirectory.hash("sk-pro-1").prefix(12)))
        // The coordinator's ledger holds exactly what was settled once the node gave back.
        let month = try #require(fleet.coordinator.allocatorStatus("pro.month/consumer=p1"))
        #expect(month.consumed == prompt + 77)
        #expect(month.outstanding == 0)
    }

    @Test("a stream is passed through and settled from the usage in its last event")
    func streaming() async throws {
        let (config, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1)
        let body = chatBody(maxTokens: 500, stream: true)
        let r = try await call(port: fleet.proxyPorts[0], key: "sk-pro-1", body: body, headers: [("x-mock-completion-tokens", "123")])
        #expect(r.status == 200)
        #expect(r.headers["content-type"]?.contains("text/event-stream") == true)
        #expect(r.body.contains("data: [DONE]"))
        // The gateway asked for usage (include_usage) and settles from it, but the client
        // did not ask: it never sees the chunk.
        #expect(!r.body.contains("\"usage\""), "the added usage chunk reached the client")
        #expect(r.body.components(separatedBy: "data: ").count == 10, "8 deltas and [DONE], whole")
        #expect(r.headers["x-ratelimit-limit-tokens"] == "20000")
        // A client that asked for it gets it.
        let asked = body.replacingOccurrences(of: "\"stream\":true", with: "\"stream\":true,\"stream_options\":{\"include_usage\":true}")
        let r2 = try await call(port: fleet.proxyPorts[0], key: "sk-pro-1", body: asked, headers: [("x-mock-completion-tokens", "7")])
        #expect(r2.body.contains("\"completion_tokens\":7"))
        await fleet.stop()
        let recs = try auditRecords(fleet).filter { $0.consumer == "p1" }
        let rec = try #require(recs.first)
        #expect(rec.settlement == "usage" && rec.outputTokens == 123)
        #expect(recs.count == 2 && recs[1].settlement == "usage" && recs[1].outputTokens == 7)
        // The mock counts the forwarded body, which gained stream_options.
        #expect(rec.inputTokens > 0 && rec.inputTokens <= Int64(body.utf8.count))
        let month = try #require(fleet.coordinator.allocatorStatus("pro.month/consumer=p1"))
        #expect(month.consumed == recs.reduce(0) { $0 + $1.inputTokens + $1.outputTokens })
    }

    @Test("429 exactly when the requests budget is spent, naming the budget, with Retry-After")
    func exhaustion() async throws {
        let (config, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1)
        var statuses: [Int] = []
        var last: Reply?
        for _ in 0..<7 {
            let r = try await call(port: fleet.proxyPorts[0], key: "sk-free-1", body: chatBody(maxTokens: 50))
            statuses.append(r.status)
            last = r
        }
        #expect(statuses == [200, 200, 200, 200, 200, 429, 429])
        let denied = try #require(last)
        #expect(denied.errorCode == "rate_limit_exceeded")
        #expect(denied.errorBudget == "free.rpm/consumer=f1")
        #expect(denied.headers["retry-after"].flatMap(Int.init).map { $0 >= 1 && $0 <= 60 } == true)
        #expect(denied.headers["x-ratelimit-remaining-requests"] == "0")
        #expect(denied.headers["x-ratelimit-limit-requests"] == "5")
        #expect(denied.headers["ratelimit"]?.contains("\"free.rpm\";r=0;") == true)
        await fleet.stop()
        let records = try auditRecords(fleet)
        #expect(records.filter { $0.decision == "deny" }.map(\.budget) == ["free.rpm/consumer=f1", "free.rpm/consumer=f1"])
    }

    @Test("budgets per model and per route; model listing under its route budget; a per-consumer override wins")
    func scopesAndOverrides() async throws {
        let (config, consumers) = try testConfig { c in
            // free.rpm for f1 only: 2 per minute instead of the tier's 5.
            c.shared.budgets.append(try! BudgetSpec(id: "free.rpm/consumer=f1", unit: .requests,
                                                    kind: .rate(limit: 2, period: .seconds(60), burst: 2)))
        }
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1)
        let port = fleet.proxyPorts[0]
        let chat = try await call(port: port, key: "sk-pro-1", body: chatBody(model: "large"))
        #expect(chat.status == 200)
        #expect(chat.headers["ratelimit-policy"]?.contains("\"pro.per-model\";q=600;w=60") == true)
        let models = try await call(port: port, path: "/v1/models", method: .GET, key: "sk-pro-1", body: nil)
        #expect(models.status == 200 && models.body.contains("\"object\":\"list\""))
        let gw = try #require(fleet.gateways.first)
        let ids = ["pro.per-model/consumer=p1,model=large", "pro.per-route/consumer=p1,route=chat", "pro.per-route/consumer=p1,route=models"]
        for id in ids {
            let consumed = gw.core.enforcer.withEnforcer { e in e.handle(for: BudgetID(id)).map { e.status($0).consumed } }
            #expect(consumed == 1, "\(id)")
        }
        // The free tier may not use other routes.
        let denied = try await call(port: port, path: "/v1/models", method: .GET, key: "sk-free-1", body: nil)
        #expect(denied.status == 403 && denied.errorCode == "route_not_entitled")
        var statuses: [Int] = []
        for _ in 0..<3 { statuses.append(try await call(port: port, key: "sk-free-1", body: chatBody(maxTokens: 10)).status) }
        #expect(statuses == [200, 200, 429])
        await fleet.stop()
    }
}
