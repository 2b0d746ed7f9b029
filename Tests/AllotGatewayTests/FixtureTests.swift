import AllotDemo
import AllotCore
import AllotGateway
import Foundation
import Testing

/// The gateway against an upstream it did not write: recorded-shape answers of the real APIs
/// (`Fixtures/`), replayed whatever the request asked. For each, the reserved bound is at least
/// the reported usage, the charge is the reported usage, and ledger = audit to the token.
@Suite("Gateway against recorded API shapes", .serialized)
struct FixtureTests {
    static let keyEnv = "ALLOT_FIXTURE_TEST_UPSTREAM_KEY"

    /// One gateway (or `nodes`) in front of a fresh `FixtureUpstream`; `month`: the pro
    /// tier's monthly token quota (tokens/min then high enough never to bind first).
    func start(nodes: Int = 1, month: Int64? = nil, retrieve: Bool = false, ledgerPath: String? = nil) async throws -> (LocalFleet, FixtureUpstream) {
        setenv(Self.keyEnv, "sk-operator-key", 1)
        let upstream = FixtureUpstream()
        let port = try await upstream.start()
        var yaml = testConfigYAML
        if let month {
            yaml = yaml.replacingOccurrences(of: "allowance: 15000,", with: "allowance: \(month),")
                .replacingOccurrences(of: "{name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 20000, period: 1m}",
                                      with: "{name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 100000000, period: 1m}")
        }
        let (config, consumers) = try testConfig(yaml: yaml) { c in
            c.upstream = URL(string: "http://127.0.0.1:\(port)")!
            c.upstreamKeyEnv = Self.keyEnv
            c.models["large"]!.maxPartTokens = [.image: 1_600]
            if retrieve { c.entitlements["pro"]!.routes.insert(.retrieve) }
        }
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: nodes, mock: nil, ledgerPath: ledgerPath)
        return (fleet, upstream)
    }

    static let system = String(repeating: "You are a careful assistant for a fleet of gateways. ", count: 30)
    static func json(_ o: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: o, options: .sortedKeys), as: UTF8.self)
    }
    static var user: [[String: Any]] { [["role": "user", "content": "Say hello to the fleet."]] }
    static var image: [String: Any] { ["type": "image_url", "image_url": ["url": "https://example.com/harbour.png", "detail": "high"]] }

    /// (fixture, path, body, usage the fixture reports)
    static let cases: [(String, String, String, Int64)] = [
        ("chat_n4.json", "/v1/chat/completions", json(["model": "large", "messages": user, "max_tokens": 100, "n": 4]), 231),
        ("chat_images.json", "/v1/chat/completions",
         json(["model": "large", "max_tokens": 100, "messages": [["role": "user", "content": [["type": "text", "text": "What is in these?"], image, image, image]]]]), 2_345),
        ("chat_reasoning_cached.json", "/v1/chat/completions",
         json(["model": "large", "max_completion_tokens": 2_000, "messages": [["role": "system", "content": system], ["role": "user", "content": "6 × 7?"]]]), 2_608),
        ("chat_tools_stream.sse", "/v1/chat/completions",
         json(["model": "large", "max_tokens": 100, "stream": true, "messages": user,
               "tools": [["type": "function", "function": ["name": "get_weather", "parameters": ["type": "object", "properties": ["location": ["type": "string"]]]]]]]), 99),
        ("responses.json", "/v1/responses", json(["model": "large", "instructions": system, "input": "What do we share?", "max_output_tokens": 600]), 780),
        ("responses_stream.sse", "/v1/responses", json(["model": "large", "input": "Say hello to the fleet.", "max_output_tokens": 100, "stream": true]), 48),
        ("messages.json", "/v1/messages", json(["model": "large", "system": system, "max_tokens": 100, "messages": user]), 1_223),
        ("messages_stream.sse", "/v1/messages", json(["model": "large", "system": system, "max_tokens": 100, "messages": user, "stream": true]), 1_228),
        ("embeddings.json", "/v1/embeddings", json(["model": "small", "input": "Say hello to the fleet."]), 8),
    ]

    @Test("every usage field of the recorded shapes at the edges of Int64 (and not a number): answered, charged within the bound or at it, never a trap")
    func hostileUsage() async throws {
        let (fleet, _) = try await start(month: 1_000_000_000_000)
        let fields: [(String, String, String, String)] = [ // fixture, path, body, the field as recorded
            ("chat_n4.json", "/v1/chat/completions", Self.json(["model": "small", "messages": Self.user, "n": 4, "max_tokens": 60]), #""prompt_tokens":19"#),
            ("chat_n4.json", "/v1/chat/completions", Self.json(["model": "small", "messages": Self.user, "n": 4, "max_tokens": 60]), #""completion_tokens":212"#),
            ("chat_reasoning_cached.json", "/v1/chat/completions", Self.json(["model": "small", "messages": Self.user, "max_completion_tokens": 1200]), #""cached_tokens":1280"#),
            ("responses.json", "/v1/responses", Self.json(["model": "small", "input": "Say hello.", "max_output_tokens": 500]), #""input_tokens":328"#),
            ("responses.json", "/v1/responses", Self.json(["model": "small", "input": "Say hello.", "max_output_tokens": 500]), #""output_tokens":452"#),
            ("messages.json", "/v1/messages", Self.json(["model": "large", "max_tokens": 100, "messages": Self.user]), #""cache_creation_input_tokens":1188"#),
            ("messages.json", "/v1/messages", Self.json(["model": "large", "max_tokens": 100, "messages": Self.user]), #""ephemeral_1h_input_tokens":0"#),
            ("embeddings.json", "/v1/embeddings", Self.json(["model": "small", "input": "Say hello."]), #""prompt_tokens":8"#),
        ]
        let values = ["0", "-1", "9223372036854775807", "-9223372036854775808", "18446744073709551615", "4611686018427387904",
                      "1e300", "0.5", "\"12\"", "true", "null", "[]"]
        for (fixture, path, body, field) in fields {
            let name = field.split(separator: ":")[0]
            for v in values {
                let anthropic = path == "/v1/messages"
                var headers = [("x-fixture", fixture), ("x-fixture-replace", "\(field)=>\(name):\(v)")]
                if anthropic { headers.append(("x-api-key", "sk-pro-2")) }
                let r = try await call(port: fleet.proxyPorts[0], path: path, key: anthropic ? nil : "sk-pro-2", body: body, headers: headers)
                // 200 (usage read or the bound charged), or 429 once a huge valid count left a debt.
                #expect(r.status == 200 || r.status == 429, "\(fixture) \(name)=\(v): \(r.status) \(r.body)")
            }
        }
        // The gateway still serves everyone else (another team: huge valid counts may have spent
        // the pro team's money budget, which is right). The free consumer's tier budgets are made
        // on its first request, and a new budget may answer 429 until its first lease arrives
        // (the cold start issue 20 closes): asked again for up to 10 s, it must be served.
        var after = try await call(port: fleet.proxyPorts[0], key: "sk-free-1", body: chatBody(maxTokens: 10),
                                   headers: [("x-fixture", "chat_n4.json")])
        let deadline = ContinuousClock.now + .seconds(10)
        while after.status == 429 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            after = try await call(port: fleet.proxyPorts[0], key: "sk-free-1", body: chatBody(maxTokens: 10),
                                   headers: [("x-fixture", "chat_n4.json")])
        }
        #expect(after.status == 200, "\(after.status) \(after.body)")
        await fleet.stop()
    }

    @Test("every recorded shape: bound ≥ usage, charged = usage, ledger = audit; header hygiene both ways")
    func recordedShapes() async throws {
        let (fleet, upstream) = try await start()
        for (fixture, path, body, _) in Self.cases {
            // Anthropic's clients authenticate with x-api-key; the OpenAI ones with Bearer.
            let anthropic = path == "/v1/messages"
            var headers = [("x-fixture", fixture), ("openai-organization", "org-client"), ("openai-project", "proj-client"),
                           ("cookie", "session=client"), ("accept-encoding", "gzip, br"),
                           ("connection", "keep-alive, X-Client-Hop"), ("x-client-hop", "1")]
            if anthropic { headers.append(("x-api-key", "sk-pro-1")) }
            let r = try await call(port: fleet.proxyPorts[0], path: path, key: anthropic ? nil : "sk-pro-1", body: body, headers: headers)
            #expect(r.status == 200, "\(fixture): \(r.status) \(r.body)")
            // To the client: our rate-limit headers only, no upstream cookie.
            #expect(r.headers["set-cookie"] == nil && r.headers["x-upstream-hop"] == nil, "\(fixture)")
            #expect(r.headers["x-ratelimit-remaining-tokens"] != "149984", "\(fixture)")
            #expect(r.headers["anthropic-ratelimit-tokens-remaining"] != "79000", "\(fixture)")
            if anthropic {
                #expect(r.headers["anthropic-ratelimit-tokens-remaining"] != nil && r.headers["x-ratelimit-remaining-tokens"] == nil)
                #expect(r.headers["anthropic-ratelimit-tokens-reset"]?.hasSuffix("Z") == true, "\(fixture)")
            } else {
                #expect(r.headers["x-ratelimit-remaining-tokens"] != nil, "\(fixture)")
            }
        }
        // To the upstream: the operator's key only, identity encoding, none of the client's
        // organisation, project, cookie or key.
        let arrivals = upstream.received
        #expect(arrivals.count == Self.cases.count)
        for a in arrivals {
            #expect(a.headers["openai-organization"] == nil && a.headers["openai-project"] == nil && a.headers["cookie"] == nil)
            #expect(a.headers["x-client-hop"] == nil, "a header the client's Connection names is hop-by-hop")
            #expect(a.headers["accept-encoding"] == "identity")
            if a.target == "/v1/messages" {
                #expect(a.headers["x-api-key"] == "sk-operator-key" && a.headers["authorization"] == nil)
            } else {
                #expect(a.headers["authorization"] == "Bearer sk-operator-key" && a.headers["x-api-key"] == nil)
            }
        }
        await fleet.stop()
        upstream.stop()
        let records = try auditRecords(fleet).filter { $0.decision == "admit" }
        #expect(records.count == Self.cases.count)
        for (record, c) in zip(records, Self.cases) {
            #expect(record.settlement == "usage", "\(c.0)")
            #expect(record.inputTokens + record.outputTokens == c.3, "\(c.0): charged \(record.inputTokens + record.outputTokens)")
            #expect(record.reserved >= c.3, "\(c.0): bound \(record.reserved) < usage \(c.3)")
            #expect(record.overBound == nil)
        }
        let ledger = try #require(fleet.coordinator.allocatorStatus("pro.month/consumer=p1"))
        #expect(ledger.consumed == records.reduce(0) { $0 + $1.inputTokens + $1.outputTokens })
        // Cached input is priced at the model's cached rate (the test config sets none: the input rate).
        #expect(records[2].cachedTokens == 1_280)
    }

    @Test("3 gateways, 32 clients, every shape at once (n = 4, images, CJK, Responses, Messages, streams): the cap holds; ledger = audit = upstream")
    func adversarialFleet() async throws {
        let (fleet, upstream) = try await start(nodes: 3, month: 150_000)
        // Dense CJK text: 3 bytes per character, often a token or more each.
        let cjk = Self.json(["model": "large", "max_tokens": 100, "messages": [["role": "user", "content": String(repeating: "共享配额的网关舰队", count: 40)]]])
        let cases = Self.cases + [("chat_n4.json", "/v1/chat/completions", cjk, 231)]
        let deadline = ContinuousClock.now + .seconds(30)
        let statuses = try await withThrowingTaskGroup(of: [Int].self) { group in
            for client in 0..<32 {
                group.addTask {
                    var out: [Int] = []
                    var refusals = 0
                    // Bounded in count and time; stops once the quota refuses it three times running.
                    for i in 0..<60 where refusals < 3 && ContinuousClock.now < deadline {
                        let (fixture, path, body, _) = cases[(client + i) % cases.count]
                        let anthropic = path == "/v1/messages"
                        var headers = [("x-fixture", fixture)]
                        if anthropic { headers.append(("x-api-key", "sk-pro-1")) }
                        let r = try await call(port: fleet.proxyPorts[client % 3], path: path, key: anthropic ? nil : "sk-pro-1",
                                               body: body, headers: headers)
                        out.append(r.status)
                        refusals = r.status == 429 ? refusals + 1 : 0
                    }
                    return out
                }
            }
            var all: [Int] = []
            for try await s in group { all += s }
            return all
        }
        // What the upstream reported, summed over what reached it.
        let usage = Dictionary(cases.map { ($0.0, $0.3) }, uniquingKeysWith: { a, _ in a })
        let reported = upstream.received.reduce(Int64(0)) { $0 + (usage[$1.headers["x-fixture"] ?? ""] ?? 0) }
        await fleet.stop()
        upstream.stop()
        #expect(Set(statuses).isSubset(of: [200, 429]), "\(Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count))")
        #expect(statuses.contains(429), "the quota was never reached")
        let records = try auditRecords(fleet).filter { $0.decision == "admit" }
        let audited = records.reduce(Int64(0)) { $0 + $1.inputTokens + $1.outputTokens }
        let ledger = try #require(fleet.coordinator.allocatorStatus("pro.month/consumer=p1"))
        #expect(audited <= 150_000, "the fleet settled \(audited) of 150,000")
        #expect(ledger.consumed == audited, "ledger \(ledger.consumed) vs audit \(audited)")
        #expect(reported == audited, "upstream \(reported) vs audit \(audited)")
        #expect(records.allSatisfy { $0.settlement == "usage" && $0.overBound == nil })
        #expect(records.count == upstream.received.count)
    }

    @Test("a gzip-compressed answer settles to its exact usage")
    func gzip() async throws {
        let (fleet, upstream) = try await start()
        for (fixture, path, body, usage) in [Self.cases[0], Self.cases[5]] {
            let r = try await call(port: fleet.proxyPorts[0], path: path, key: "sk-pro-1", body: body,
                                   headers: [("x-fixture", fixture), ("x-fixture-gzip", "1")])
            #expect(r.status == 200 && r.headers["content-encoding"] == nil, "\(fixture): \(r.status) \(r.headers)")
            #expect(r.body.contains("\"usage\""), "\(fixture): the client gets the decoded body")
            _ = usage
        }
        await fleet.stop()
        upstream.stop()
        let records = try auditRecords(fleet).filter { $0.decision == "admit" }
        #expect(records.map(\.settlement) == ["usage", "usage"])
        #expect(records.map { $0.inputTokens + $0.outputTokens } == [231, 48])
    }

    @Test("non-canonical paths get 400 and unconfigured routes 404, and none reaches the upstream")
    func deniedByDefault() async throws {
        let (fleet, upstream) = try await start()
        let port = fleet.proxyPorts[0]
        for path in RoutesAndBoundsTests.variants where !path.isEmpty {
            let status = try await rawStatus(port: port, "POST \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-pro-1\r\n"
                + "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            #expect(status == 400, "\(path): \(status)")
        }
        for (method, path) in [("POST", "/v1/files"), ("GET", "/v1/batches"), ("POST", "/v1/fine_tuning/jobs"),
                               ("GET", "/v1/organization/usage/completions"), ("DELETE", "/v1/chat/completions"), ("GET", "/v1/chat/completions")] {
            let status = try await rawStatus(port: port, "\(method) \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-pro-1\r\n"
                + "Content-Length: 0\r\nConnection: close\r\n\r\n")
            #expect(status == 404, "\(method) \(path): \(status)")
        }
        #expect(upstream.received.isEmpty, "\(upstream.received.map { "\($0.method) \($0.target)" })")
        await fleet.stop()
        upstream.stop()
    }

    @Test("a tier's passthrough pairs reach the upstream, charged one request")
    func passThrough() async throws {
        setenv(Self.keyEnv, "sk-operator-key", 1)
        let upstream = FixtureUpstream()
        let uport = try await upstream.start()
        let (config, consumers) = try testConfig { c in
            c.upstream = URL(string: "http://127.0.0.1:\(uport)")!
            c.entitlements["pro"]!.passThrough = [try! PassThrough("GET /v1/files", field: "t")]
        }
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1, mock: nil)
        let ok = try await call(port: fleet.proxyPorts[0], path: "/v1/files/file-abc", method: .GET, key: "sk-pro-1", body: nil)
        #expect(ok.status == 200)
        let other = try await call(port: fleet.proxyPorts[0], path: "/v1/files", method: .POST, key: "sk-pro-1", body: "{}")
        #expect(other.status == 404)
        let free = try await call(port: fleet.proxyPorts[0], path: "/v1/files", method: .GET, key: "sk-free-1", body: nil)
        #expect(free.status == 404)
        #expect(upstream.received.map(\.target) == ["/v1/files/file-abc"])
        await fleet.stop()
        upstream.stop()
        let route = try #require(fleet.coordinator.allocatorStatus("pro.per-route/consumer=p1,route=other"))
        #expect(route.consumed == 1)
    }

    @Test("zero-cost routes answer 200 for a consumer idle longer than a lease TTL")
    func zeroCostIdle() async throws {
        // Off by default (stored responses are shared by every consumer behind the operator's
        // key): a tier that lists no routes may not fetch them.
        let (closed, closedUpstream) = try await start()
        let refused = try await call(port: closed.proxyPorts[0], path: "/v1/responses/resp_67ccd3a9da748190", method: .GET,
                                     key: "sk-pro-2", body: nil, headers: [("x-fixture", "responses.json")])
        #expect(refused.status == 403 && refused.body.contains("retrieve"), "\(refused.status) \(refused.body)")
        #expect(closedUpstream.received.isEmpty)
        await closed.stop()
        closedUpstream.stop()
        let (fleet, upstream) = try await start(retrieve: true)
        // p2 never sent a token request: no token lease on this node, and none is asked for
        // a zero amount. Model listing and a stored response still go through.
        for path in ["/v1/models", "/v1/models/large", "/v1/responses/resp_67ccd3a9da748190"] {
            let r = try await call(port: fleet.proxyPorts[0], path: path, method: .GET, key: "sk-pro-2", body: nil,
                                   headers: [("x-fixture", "models.json")])
            #expect(r.status == 200, "\(path): \(r.status) \(r.body)")
        }
        // A stored response fetched again reports the usage it was charged for when made: not again.
        let stored = try await call(port: fleet.proxyPorts[0], path: "/v1/responses/resp_67ccd3a9da748190", method: .GET,
                                    key: "sk-pro-2", body: nil, headers: [("x-fixture", "responses.json")])
        #expect(stored.status == 200 && stored.body.contains("\"usage\""))
        await fleet.stop()
        upstream.stop()
        let tokens = try auditRecords(fleet).filter { $0.decision == "admit" }.map { $0.inputTokens + $0.outputTokens }
        #expect(tokens == [0, 0, 0, 0])
        #expect(fleet.coordinator.allocatorStatus("pro.month/consumer=p2")?.consumed ?? 0 == 0)
    }

    @Test("an upstream that reports more than the bound is charged in full, flagged, and ledger = audit")
    func overBound() async throws {
        let (fleet, upstream) = try await start()
        // A short text request whose upstream reports three images' worth of input.
        let body = Self.json(["model": "large", "max_tokens": 20, "messages": Self.user])
        let r = try await call(port: fleet.proxyPorts[0], key: "sk-pro-1", body: body, headers: [("x-fixture", "chat_images.json")])
        #expect(r.status == 200)
        let metrics = try await call(port: fleet.adminPorts[0], path: "/metrics", method: .GET, key: nil, body: nil)
        #expect(metrics.body.contains("allot_gateway_settled_above_bound_total"))
        // What the slice could not pay is a debt the node asks for at once; the ledger counts
        // it when the grant repays it (bounded wait: 3 s).
        let gw = try #require(fleet.gateways.first)
        let debt = { gw.core.enforcer.withEnforcer { e in e.handle(for: "pro.month/consumer=p1").map { e.status($0).debt } ?? 0 } }
        let until = ContinuousClock.now + .seconds(3)
        while debt() > 0 && ContinuousClock.now < until { try await Task.sleep(for: .milliseconds(20)) }
        #expect(debt() == 0, "the overrun was not repaid")
        await fleet.stop()
        upstream.stop()
        let records = try auditRecords(fleet).filter { $0.decision == "admit" }
        #expect(records.count == 1)
        #expect(records.first?.overBound == true)
        #expect(records.first.map { $0.inputTokens + $0.outputTokens } == 2_345)
        let ledger = try #require(fleet.coordinator.allocatorStatus("pro.month/consumer=p1"))
        #expect(ledger.consumed == 2_345, "ledger \(ledger.consumed) vs audit 2,345")
    }
}
