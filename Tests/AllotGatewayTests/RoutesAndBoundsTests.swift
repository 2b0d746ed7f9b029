import AllotCore
@testable import AllotGateway
import Foundation
import Testing

/// Routes deny by default, paths must be canonical, and every request an upstream accepts has
/// a bound it cannot exceed: `n`, images, every output cap, the Responses and Messages APIs.
@Suite("Routes and request bounds")
struct RoutesAndBoundsTests {
    static let variants = [
        "/v1/chat/completions/", "//v1/chat/completions", "/v1/./chat/completions", "/v1/chat//completions",
        "/v1/chat/completions;x", "/v1/chat/completions%2F", "/V1/chat/completions", "/v1/foo/../chat/completions",
        "/v1/chat/completions%2f", "/v1/chat/%63ompletions", "", "/", "/v1/chat/completions/.", "/v1/Models",
    ]

    @Test("every non-canonical spelling of a route is refused as such", arguments: variants)
    func nonCanonical(path: String) {
        #expect(RouteTable.standard.match(method: "POST", target: path) == .nonCanonical)
    }

    @Test("the table maps (method, path) to routes; anything else is unknown")
    func table() {
        let t = RouteTable.standard
        #expect(t.match(method: "POST", target: "/v1/chat/completions") == .route(.chat))
        #expect(t.match(method: "POST", target: "/v1/chat/completions?x=1") == .route(.chat))
        #expect(t.match(method: "POST", target: "/v1/responses") == .route(.responses))
        #expect(t.match(method: "POST", target: "/v1/messages") == .route(.messages))
        #expect(t.match(method: "GET", target: "/v1/models") == .route(.models))
        #expect(t.match(method: "GET", target: "/v1/models/gpt-4o-mini") == .route(.models))
        #expect(t.match(method: "GET", target: "/v1/responses/resp_67ccd3a9da748190") == .route(.retrieve))
        for (m, p) in [("GET", "/v1/chat/completions"), ("DELETE", "/v1/models/x"), ("POST", "/v1/files"),
                       ("POST", "/v1/batches"), ("GET", "/v1/organization/usage/completions"), ("POST", "/v1/fine_tuning/jobs"),
                       ("POST", "/v1/responses/resp_1/cancel")] {
            #expect(t.match(method: m, target: p) == .unknown, "\(m) \(p)")
        }
    }

    @Test("gateway.routes replaces the table: only the listed (method, path) pairs are forwarded")
    func configuredRoutes() throws {
        let base = "tiers: [{name: t, templates: [{name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 10, period: 1s}]}]\n"
        let c = try GatewayConfig(yaml: base + """
            gateway:
              routes:
                - {method: POST, path: /openai/deployments/*/chat/completions, route: chat}
                - {method: GET, path: /v1/models, route: models}
            """)
        #expect(c.routes.match(method: "POST", target: "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21") == .route(.chat))
        #expect(c.routes.match(method: "GET", target: "/v1/models") == .route(.models))
        #expect(c.routes.match(method: "POST", target: "/v1/chat/completions") == .unknown)
        #expect(c.routes.match(method: "POST", target: "/openai/deployments/a/b/chat/completions") == .unknown)
        #expect(c.routes.match(method: "POST", target: "/openai/deployments/../chat/completions") == .nonCanonical)
        #expect(try GatewayConfig(yaml: base).routes == RouteTable.standard)
        let bad = [
            "{method: FETCH, path: /v1/x, route: chat}", "{method: POST, path: /v1/x/, route: chat}",
            "{method: POST, path: v1/x, route: chat}", "{method: POST, path: /v1/x*, route: chat}",
            "{method: POST, path: /v1/x, route: other}", "{method: POST, path: /v1/x, route: nope}",
            "{method: POST, path: /v1/x}", "{method: POST, path: /v1/x, route: chat, model: m}",
            "{method: POST, path: /v1/%2e, route: chat}",
        ]
        for entry in bad {
            #expect(throws: AllotError.self, "\(entry)") { try GatewayConfig(yaml: base + "gateway: {routes: [\(entry)]}") }
        }
        let twice = "gateway: {routes: [{method: POST, path: /v1/x, route: chat}, {method: POST, path: /v1/x, route: embeddings}]}"
        #expect(throws: AllotError.self) { try GatewayConfig(yaml: base + twice) }
    }

    @Test("a tier's passthrough pairs cover whole segments only")
    func passThrough() throws {
        let p = try PassThrough("GET /v1/files", field: "t")
        #expect(p.covers(method: "GET", path: "/v1/files"))
        #expect(p.covers(method: "GET", path: "/v1/files/file-abc"))
        #expect(!p.covers(method: "GET", path: "/v1/filesystem"))
        #expect(!p.covers(method: "POST", path: "/v1/files"))
        for bad in ["GET", "GET v1/files", "FETCH /v1/files", "GET /v1/files/", "GET /v1/../x"] {
            #expect(throws: AllotError.self) { try PassThrough(bad, field: "t") }
        }
    }

    // MARK: bounds

    static let models: [String: ModelPrice] = {
        var gpt = try! ModelPrice(name: "gpt", inputUSDPerMTok: 2.5, outputUSDPerMTok: 10, maxOutputTokens: 16_384,
                                  cachedInputUSDPerMTok: 1.25)
        gpt.maxPartTokens = [.image: 1_600, .audio: 4_000]
        gpt.contextWindowTokens = 128_000
        var claude = try! ModelPrice(name: "claude", inputUSDPerMTok: 3, outputUSDPerMTok: 15, maxOutputTokens: 64_000)
        claude.apis = [.anthropic]
        claude.maxPartTokens = [.image: 1_600, .file: 100_000]
        let plain = try! ModelPrice(name: "plain", inputUSDPerMTok: 1, outputUSDPerMTok: 1, maxOutputTokens: 1_000)
        return ["gpt": gpt, "claude": claude, "plain": plain]
    }()

    func plan(_ route: Route, _ body: [String: Any]) throws(GatewayError) -> RequestPlan {
        let data = try! JSONSerialization.data(withJSONObject: body)
        return try RequestPlan.make(route: route, body: data, models: Self.models, entitlements: Entitlements(), tier: "t")
    }

    func refusal(_ route: Route, _ body: [String: Any]) -> String? {
        do { _ = try plan(route, body); return nil } catch { return error.code }
    }

    static var image: [String: Any] { ["type": "image_url", "image_url": ["url": "https://example.com/a.png", "detail": "high"]] }

    @Test("n and best_of multiply the output bound; the largest output cap sent wins")
    func choicesAndCaps() throws {
        let msg: [[String: Any]] = [["role": "user", "content": "hi"]]
        #expect(try plan(.chat, ["model": "gpt", "messages": msg, "max_tokens": 100, "n": 4]).outputBound == 400)
        #expect(try plan(.completions, ["model": "gpt", "prompt": "hi", "max_tokens": 50, "n": 2, "best_of": 5]).outputBound == 250)
        // A reasoning model spends under max_completion_tokens whatever max_tokens says.
        #expect(try plan(.chat, ["model": "gpt", "messages": msg, "max_completion_tokens": 900, "max_tokens": 10]).outputBound == 900)
        #expect(try plan(.chat, ["model": "gpt", "messages": msg, "max_tokens": 900, "max_completion_tokens": 10]).outputBound == 900)
        #expect(try plan(.chat, ["model": "gpt", "messages": msg]).outputBound == 16_384)
        #expect(try plan(.responses, ["model": "gpt", "input": "hi", "max_output_tokens": 600]).outputBound == 600)
    }

    /// (key, JSON value as sent)
    static let adversarial: [(String, String)] = [
        ("n", "0"), ("n", "-1"), ("n", "129"), ("n", "1e300"), ("n", "true"), ("n", "\"4\""), ("n", "2.5"),
        ("n", "-9223372036854775808"), ("max_tokens", "0"), ("max_tokens", "-1"), ("max_tokens", "9223372036854775807"),
        ("max_tokens", "18446744073709551615"), ("max_tokens", "1e19"), ("max_completion_tokens", "[1]"), ("best_of", "false"),
        ("max_output_tokens", "{}"), ("n", "1.0000000000000002"),
    ]

    @Test("adversarial numbers are refused, never trapped on", arguments: adversarial)
    func adversarialNumbers(key: String, value: String) {
        let body = #"{"model":"gpt","messages":[{"role":"user","content":"hi"}],""# + key + #"":"# + value + "}"
        do {
            _ = try RequestPlan.make(route: .chat, body: Data(body.utf8), models: Self.models, entitlements: Entitlements(), tier: "t")
            Issue.record("\(key)=\(value) was accepted")
        } catch {
            #expect(error.status == 400, "\(key)=\(value): \(error)")
        }
    }

    @Test("each non-text part adds the model's maximum; a kind without one is refused, naming it")
    func parts() throws {
        let text: [String: Any] = ["type": "text", "text": "describe these"]
        let chat = try plan(.chat, ["model": "gpt", "max_tokens": 10,
                                    "messages": [["role": "user", "content": [text, Self.image, Self.image, Self.image]]]])
        let bytes = Int64(try JSONSerialization.data(withJSONObject: ["model": "gpt", "max_tokens": 10,
                                                                      "messages": [["role": "user", "content": [text, Self.image, Self.image, Self.image]]]]).count)
        #expect(chat.inputBound == bytes + 3 * 1_600)
        // Responses: input items with parts, and the shorthand {role, content}.
        let r = try plan(.responses, ["model": "gpt", "input": [["role": "user", "content": [
            ["type": "input_text", "text": "what is this"], ["type": "input_image", "image_url": "https://example.com/b.jpg"]]]]])
        #expect(r.inputBound > 1_600)
        // Anthropic: an image inside a tool result counts too.
        let m = try plan(.messages, ["model": "claude", "max_tokens": 100, "messages": [["role": "user", "content": [
            ["type": "tool_result", "tool_use_id": "toolu_1", "content": [["type": "image", "source": ["type": "url", "url": "https://e.com/c.png"]]]],
            ["type": "document", "source": ["type": "url", "url": "https://e.com/d.pdf"]]]]]])
        #expect(m.inputBound > 101_600)
        // No bound configured for the kind: refused, naming the part type.
        do {
            _ = try plan(.chat, ["model": "plain", "messages": [["role": "user", "content": [Self.image]]]])
            Issue.record("an image on a model without an image bound was accepted")
        } catch {
            #expect(error.code == "unsupported_part_type" && error.message.contains("image_url"))
        }
        #expect(refusal(.chat, ["model": "gpt", "messages": [["role": "user", "content": [["type": "video_url"]]]]]) == "unsupported_part_type")
        #expect(refusal(.chat, ["model": "gpt", "messages": [["role": "user", "content": [["type": "file", "file": ["file_id": "f"]]]]]]) == "unsupported_part_type")
        #expect(refusal(.responses, ["model": "gpt", "input": [["type": "item_reference", "id": "msg_1"]]]) == "unsupported_part_type")
    }

    @Test("input the body does not carry is bounded by config or refused")
    func unseenInput() throws {
        #expect(refusal(.responses, ["model": "gpt", "input": "hi", "background": true]) == "background_not_supported")
        #expect(refusal(.responses, ["model": "plain", "input": "hi", "previous_response_id": "resp_1"]) == "stored_input_not_bounded")
        #expect(try plan(.responses, ["model": "gpt", "input": "hi", "previous_response_id": "resp_1"]).inputBound > 128_000)
        #expect(refusal(.responses, ["model": "gpt", "input": "hi", "tools": [["type": "web_search_preview"]]]) == "unsupported_tool")
        #expect(refusal(.chat, ["model": "gpt", "messages": [["role": "user", "content": "hi"]], "tools": [["type": "function", "function": ["name": "f"]]]]) == nil)
        #expect(refusal(.messages, ["model": "claude", "max_tokens": 10, "messages": [["role": "user", "content": "hi"]],
                                    "tools": [["type": "web_search_20250305", "name": "web_search"]]]) == "unsupported_tool")
        let tools = try plan(.messages, ["model": "claude", "max_tokens": 10, "messages": [["role": "user", "content": "hi"]],
                                         "tools": [["name": "get_weather", "input_schema": ["type": "object"]]]])
        #expect(tools.inputBound > RequestPlan.anthropicToolPrompt)
    }

    @Test("the Messages API needs max_tokens and a model served through it")
    func messagesShape() {
        #expect(refusal(.messages, ["model": "claude", "messages": [["role": "user", "content": "hi"]]]) == "missing_max_tokens")
        #expect(refusal(.messages, ["model": "plain", "max_tokens": 5, "messages": [["role": "user", "content": "hi"]]]) == nil)
        #expect(refusal(.chat, ["model": "claude", "messages": [["role": "user", "content": "hi"]]]) == "model_api_mismatch")
    }

    @Test("money bounds saturate instead of wrapping; cache reads and writes are priced at their own rates")
    func pricing() throws {
        let gpt = Self.models["gpt"]!
        #expect(gpt.microDollars(input: .max, output: .max) == .max)
        #expect(gpt.microDollars(input: 1_000, output: 0) == 2_500)
        #expect(gpt.microDollars(input: 1_000, output: 0, cached: 1_000) == 1_250)
        #expect(gpt.microDollars(input: 1_000, output: 0, cached: 5_000) == 1_250) // never more cached than input
        #expect(Checked.sum(.max, 1) == .max && Checked.product(.min, 2) == .min && Checked.product(-3, .max) == .min)
        // Anthropic's cache: reads at 0.1×, 5-minute writes at 1.25×, 1-hour writes at 2× the input price.
        let claude = try ModelPrice(name: "claude", inputUSDPerMTok: 3, outputUSDPerMTok: 15, maxOutputTokens: 64_000,
                                    cachedInputUSDPerMTok: 0.3, cacheWriteUSDPerMTok: 3.75, cacheWriteHourUSDPerMTok: 6)
        let u = try #require(Usage.from(usage: ["input_tokens": 100, "cache_read_input_tokens": 1_000, "cache_creation_input_tokens": 3_000,
                                                "cache_creation": ["ephemeral_5m_input_tokens": 2_000, "ephemeral_1h_input_tokens": 1_000],
                                                "output_tokens": 10], anthropic: true))
        #expect(u == Usage(input: 4_100, output: 10, cached: 1_000, cacheWrite: 3_000, cacheWriteHour: 1_000))
        // 100 × 3 + 1,000 × 0.3 + 2,000 × 3.75 + 1,000 × 6 + 10 × 15 = 14,250 micro-dollars
        #expect(claude.microDollars(u) == 14_250)
        // The bound prices every input token at the dearest rate: never short of what the cache does.
        #expect(claude.boundMicroDollars(input: 4_100, output: 10) == 4_100 * 6 + 150)
        #expect(claude.boundMicroDollars(input: .max, output: 1) == .max)
        // Adversarial counts: more written or for an hour than there is input is capped.
        #expect(claude.microDollars(Usage(input: 10, output: 0, cached: 5, cacheWrite: .max, cacheWriteHour: .max)) == 2 + 30)
        #expect(try ModelPrice(name: "x", inputUSDPerMTok: 1, outputUSDPerMTok: 1, maxOutputTokens: 1).cacheWriteHourNanoPerToken == 1_000)
        #expect(throws: AllotError.self) {
            try ModelPrice(name: "x", inputUSDPerMTok: 1, outputUSDPerMTok: 1, maxOutputTokens: 1, cacheWriteUSDPerMTok: -1)
        }
    }

    // MARK: usage, every shape

    static let fixtureUsage: [(file: String, api: ModelPrice.API, streaming: Bool, usage: Usage)] = [
        ("chat_n4.json", .openai, false, Usage(input: 19, output: 212)),
        ("chat_images.json", .openai, false, Usage(input: 2_328, output: 17)),
        ("chat_reasoning_cached.json", .openai, false, Usage(input: 1_418, output: 1_190, cached: 1_280)),
        ("chat_tools_stream.sse", .openai, true, Usage(input: 82, output: 17)),
        ("responses.json", .openai, false, Usage(input: 328, output: 452, cached: 256)),
        ("responses_stream.sse", .openai, true, Usage(input: 37, output: 11)),
        ("messages.json", .anthropic, false, Usage(input: 21 + 1_188, output: 14, cacheWrite: 1_188)),
        ("messages_stream.sse", .anthropic, true, Usage(input: 25 + 1_188, output: 15, cached: 1_188)),
        ("embeddings.json", .openai, false, Usage(input: 8, output: 0)),
    ]

    @Test("usage is read from every recorded shape, in one piece and byte by byte", arguments: 0..<9)
    func usageShapes(index: Int) throws {
        let f = Self.fixtureUsage[index]
        let data = try FixtureUpstream.fixture(f.file)
        var whole = UsageScanner(streaming: f.streaming, api: f.api)
        whole.consume(data)
        whole.finish()
        #expect(whole.usage == f.usage, "\(f.file)")
        var bytes = UsageScanner(streaming: f.streaming, api: f.api)
        for b in data { bytes.consume(CollectionOfOne(b)) }
        bytes.finish()
        #expect(bytes.usage == f.usage, "\(f.file) byte by byte")
    }

    @Test("a stream cut before its final usage event reports none (the bound is charged)")
    func cutStreams() throws {
        for (file, api) in [("messages_stream.sse", ModelPrice.API.anthropic), ("responses_stream.sse", .openai)] {
            let text = String(decoding: try FixtureUpstream.fixture(file), as: UTF8.self)
            let cut = text.components(separatedBy: "\n\n").dropLast(3).joined(separator: "\n\n")
            var s = UsageScanner(streaming: true, api: api)
            s.consume(Data(cut.utf8))
            s.finish()
            #expect(s.usage == nil, "\(file)")
        }
        var bad = UsageScanner(streaming: false)
        bad.consume(Data(#"{"usage":{"prompt_tokens":-5,"completion_tokens":1e300}}"#.utf8))
        bad.finish()
        #expect(bad.usage == nil)
    }

    @Test("the usage chunk the gateway added is cut out of the stream, whole events only, however it is split")
    func addedUsageFilter() throws {
        let data = try FixtureUpstream.fixture("chat_tools_stream.sse")
        let text = String(decoding: data, as: UTF8.self)
        let expected = text.components(separatedBy: "\n\n").filter { !$0.contains("\"choices\":[]") }.joined(separator: "\n\n")
        func filtered(_ bytes: [UInt8], chunks size: Int) -> String {
            var f = AddedUsageFilter()
            var out: [UInt8] = []
            for i in stride(from: 0, to: bytes.count, by: size) { out += f.pass(bytes[i..<min(i + size, bytes.count)]) }
            return String(decoding: out + f.finish(), as: UTF8.self)
        }
        for size in [1, 7, 64, data.count] {
            #expect(filtered(Array(data), chunks: size) == expected, "chunks of \(size)")
        }
        // CRLF line ends, split at every offset of the terminator.
        let crlf = Array(text.replacingOccurrences(of: "\n", with: "\r\n").utf8)
        let expectedCRLF = expected.replacingOccurrences(of: "\n", with: "\r\n")
        for size in [1, 2, 3, 5] {
            #expect(filtered(crlf, chunks: size) == expectedCRLF, "CRLF chunks of \(size)")
        }
    }
}
