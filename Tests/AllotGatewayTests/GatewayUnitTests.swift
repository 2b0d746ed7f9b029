import AllotCore
import AllotGateway
import Foundation
import Testing

@Suite("Gateway parts")
struct GatewayUnitTests {
    @Test("configuration errors name the field")
    func configErrors() throws {
        func message(_ yaml: String) -> String {
            do { _ = try GatewayConfig(yaml: yaml); return "accepted" } catch { return "\(error)" }
        }
        let tiers = "tiers:\n  - name: free\n    templates: [{name: rpm, scope: [consumer], kind: rate, limit: 5}]\n"
        #expect(message(tiers + "gateway: {listn: 1}\n").contains("gateway.listn: unknown key"))
        #expect(message(tiers + "gateway: {upstream: ftp://x}\n").contains("gateway.upstream"))
        #expect(message(tiers + "gateway: {max_body_bytes: 10}\n").contains("gateway.max_body_bytes"))
        #expect(message(tiers + "gateway: {admission_wait: soon}\n").contains("gateway.admission_wait"))
        #expect(message(tiers + "models: [{name: m, input_usd_per_mtok: -1}]\n").contains("models[0]"))
        #expect(message(tiers + "models: [{name: m, colour: red}]\n").contains("models[0].colour: unknown key"))
        let ent = "tiers:\n  - name: free\n    templates: [{name: rpm, scope: [consumer], kind: rate, limit: 5}]\n    entitlements: "
        #expect(message(ent + "{models: [nope]}\n").contains("tiers[0].entitlements.models: 'nope'"))
        #expect(message(ent + "{routes: [chatty]}\n").contains("unknown route 'chatty'"))
        #expect(message(ent + "{runaway: {action: panic}}\n").contains("runaway.action"))
        #expect(message(ent + "{runaway: {factor: 0.5}}\n").contains("runaway.factor"))
        #expect(message(ent + "{max_tokens: 0}\n").contains("max_tokens must be positive"))
        #expect(message(ent + "{limits: 3}\n").contains("entitlements.limits: unknown key"))
        #expect(message(tiers) == "accepted")
    }

    @Test("consumers file: hashes only, unknown tiers and keys refused")
    func consumers() throws {
        let h = ConsumerDirectory.hash("sk-1")
        let d = try ConsumerDirectory(yaml: "consumers:\n  - {id: a, tier: pro, key_sha256: \(h)}\n", tiers: ["pro"])
        #expect(d.lookup(key: "sk-1")?.consumer.id == "a")
        #expect(d.lookup(key: "sk-2") == nil)
        #expect(d.lookup(key: "sk-1")?.keyID == String(h.prefix(12)))
        func message(_ yaml: String) -> String {
            do { _ = try ConsumerDirectory(yaml: yaml, tiers: ["pro"]); return "accepted" } catch { return "\(error)" }
        }
        #expect(message("consumers:\n  - {id: a, tier: gold, key_sha256: \(h)}\n").contains("'gold' is not configured"))
        #expect(message("consumers:\n  - {id: a, tier: pro, key: sk-1}\n").contains("consumers[0].key: unknown key"))
        #expect(message("consumers:\n  - {id: a, tier: pro, key_sha256: abc}\n").contains("64 hex digits"))
        #expect(message("consumers:\n  - {id: a, tier: pro, key_sha256: \(h)}\n  - {id: b, tier: pro, key_sha256: \(h)}\n").contains("listed twice"))
        #expect(message("consumers:\n  - {id: 'a/b', tier: pro, key_sha256: \(h)}\n").contains("consumers[0].id"))
        #expect(message("people: []\n").contains("one key, consumers"))
    }

    @Test("the plan bounds prompt tokens by body bytes and output by max_tokens or the model's cap")
    func plan() throws {
        let models = ["m": try ModelPrice(name: "m", inputUSDPerMTok: 1, outputUSDPerMTok: 4, maxOutputTokens: 1000)]
        let body = Data(#"{"model":"m","messages":[{"role":"user","content":"héllo"}],"max_tokens":50}"#.utf8)
        let p = try RequestPlan.make(route: .chat, body: body, models: models, entitlements: Entitlements(), tier: "t")
        #expect(p.inputBound == Int64(body.count) && p.outputBound == 50)
        #expect(p.costBound == Int64(body.count) * 1 + 50 * 4)
        let noMax = try RequestPlan.make(route: .chat, body: Data(#"{"model":"m","stream":true}"#.utf8), models: models,
                                         entitlements: Entitlements(), tier: "t")
        #expect(noMax.outputBound == 1000 && noMax.stream)
        let forwarded = try JSONSerialization.jsonObject(with: noMax.body) as? [String: Any]
        #expect((forwarded?["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)
        #expect(throws: GatewayError.self) {
            try RequestPlan.make(route: .chat, body: Data(#"{"model":"m","max_tokens":5000}"#.utf8), models: models,
                                 entitlements: Entitlements(), tier: "t")
        }
        let embed = try RequestPlan.make(route: .embeddings, body: Data(#"{"model":"m","input":"x"}"#.utf8), models: models,
                                         entitlements: Entitlements(), tier: "t")
        #expect(embed.outputBound == 0)
        #expect(try ModelPrice(name: "c", inputUSDPerMTok: 0.15, outputUSDPerMTok: 0.6, maxOutputTokens: 1).microDollars(input: 1, output: 0) == 1)
    }

    @Test("a plain answer larger than the parse buffer still settles to its usage, read from its tail")
    func largeAnswerUsage() {
        // An embeddings answer of 2,048 vectors runs to tens of MiB; its usage is at the end.
        let vector = "[" + Array(repeating: "-0.0123456789", count: 256).joined(separator: ",") + "]"
        var body = #"{"object":"list","data":["#
        for i in 0..<2_048 { body += (i == 0 ? "" : ",") + #"{"object":"embedding","index":\#(i),"embedding":\#(vector)}"# }
        let decoy = #"{\"usage\":{\"prompt_tokens\":1}}"#
        body += #"],"model":"e","note":"\#(decoy)","usage":{"prompt_tokens":81920,"total_tokens":81920},"x":"\#(decoy)"}"#
        let bytes = Array(body.utf8)
        #expect(bytes.count > 4 << 20)
        for step in [1_000, 65_536, 1 << 20] {
            var s = UsageScanner(streaming: false)
            var i = 0
            while i < bytes.count { s.consume(bytes[i..<min(bytes.count, i + step)]); i += step }
            s.finish()
            #expect(s.usage == Usage(input: 81_920, output: 0), "chunks of \(step)")
        }
        // No usage object in the tail: none (the bound is charged), never a guess.
        var none = UsageScanner(streaming: false, maxKeptBytes: 1024)
        none.consume(Array((#"{"data":""# + String(repeating: "a", count: 5_000) + #"","usage":[1]}"#).utf8))
        none.finish()
        #expect(none.usage == nil)
        var anthropic = UsageScanner(streaming: false, api: .anthropic, maxKeptBytes: 1024)
        anthropic.consume(Array((#"{"content":[{"type":"text","text":""# + String(repeating: "b", count: 5_000)
            + #""}],"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":7}}"#).utf8))
        anthropic.finish()
        #expect(anthropic.usage == Usage(input: 15, output: 7, cached: 5))
    }

    @Test("usage is found in a plain body and in the last event of a stream, split anywhere")
    func usage() {
        var plain = UsageScanner(streaming: false)
        let json = Array(#"{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#.utf8)
        plain.consume(json[0..<10]); plain.consume(json[10...])
        plain.finish()
        #expect(plain.usage == Usage(input: 12, output: 34))
        let sse = Array("data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9}}\r\n\r\ndata: [DONE]\n\n".utf8)
        for split in [1, 5, 17, 64, sse.count] {
            var s = UsageScanner(streaming: true)
            var i = 0
            while i < sse.count { s.consume(sse[i..<min(i + split, sse.count)]); i += split }
            s.finish()
            #expect(s.usage == Usage(input: 7, output: 9) && s.sawDone, "split \(split)")
        }
        var none = UsageScanner(streaming: true)
        none.consume(Array("data: {\"choices\":[]}\n\n".utf8))
        none.finish()
        #expect(none.usage == nil)
    }

    @Test("rate-limit headers: IETF pair and OpenAI's set")
    func headers() throws {
        let rpm = try BudgetSpec(id: "pro.rpm/consumer=a", unit: .requests, kind: .rate(limit: 60, period: .seconds(60), burst: 60))
        let tpm = try BudgetSpec(id: "pro.tpm/consumer=a", unit: .tokens, kind: .rate(limit: 1000, period: .seconds(60), burst: 1000))
        let h = Dictionary(uniqueKeysWithValues: RateLimitHeaders.make([BudgetStanding(spec: rpm, remaining: 30),
                                                                         BudgetStanding(spec: tpm, remaining: 1000)], now: .zero))
        #expect(h["RateLimit-Policy"] == "\"pro.rpm\";q=60;w=60, \"pro.tpm\";q=1000;w=60")
        #expect(h["RateLimit"] == "\"pro.rpm\";r=30;t=30, \"pro.tpm\";r=1000;t=1")
        #expect(h["x-ratelimit-limit-requests"] == "60" && h["x-ratelimit-remaining-requests"] == "30")
        #expect(h["x-ratelimit-reset-requests"] == "30s" && h["x-ratelimit-limit-tokens"] == "1000")
        #expect(RateLimitHeaders.openAIDuration(seconds: 3725) == "1h2m5s")
        // Anthropic's route: its own names, the reset as an RFC 3339 time rounded up.
        let t = Instant(nanoseconds: 1_796_296_632 * 1_000_000_000)
        let a = Dictionary(uniqueKeysWithValues: RateLimitHeaders.make([BudgetStanding(spec: rpm, remaining: 30),
                                                                         BudgetStanding(spec: tpm, remaining: 1000)], now: t, anthropic: true))
        #expect(a["anthropic-ratelimit-requests-limit"] == "60" && a["anthropic-ratelimit-requests-remaining"] == "30")
        #expect(a["anthropic-ratelimit-requests-reset"] == "2026-12-03T11:17:42Z")
        #expect(a["anthropic-ratelimit-tokens-reset"] == "2026-12-03T11:17:13Z" && a["anthropic-ratelimit-tokens-limit"] == "1000")
        #expect(!a.keys.contains { $0.hasPrefix("x-ratelimit") } && a["RateLimit"] != nil)
        for (secs, text) in [(Int64(0), "1970-01-01T00:00:00Z"), (951_782_400, "2000-02-29T00:00:00Z"), (4_102_444_799, "2099-12-31T23:59:59Z")] {
            #expect(RateLimitHeaders.rfc3339(Instant(nanoseconds: secs * 1_000_000_000)) == text)
        }
        #expect(RateLimitHeaders.rfc3339(Instant(nanoseconds: 1)) == "1970-01-01T00:00:01Z")
        #expect(BudgetStanding(spec: tpm, remaining: 0).secondsUntil(500, now: .zero) == 30)
    }

    @Test("runaway: a consumer far above its own baseline is flagged once per episode; steady traffic is not")
    func runaway() {
        var d = RunawayDetector()
        var p = RunawayPolicy()
        p.factor = 4; p.window = .seconds(10); p.baseline = .seconds(300); p.minRate = 1
        var t = Instant(nanoseconds: 0)
        var flags = 0
        // Two requests per second for ten minutes: never flagged.
        for _ in 0..<1200 {
            t = t + .milliseconds(500)
            if d.record("steady", policy: p, now: t).runaway { flags += 1 }
        }
        #expect(flags == 0)
        // Then 50 per second: flagged within a few seconds, raised once.
        var raised = 0, firstFlag: Int?
        for i in 0..<500 {
            t = t + .milliseconds(20)
            let r = d.record("steady", policy: p, now: t)
            if r.raised { raised += 1 }
            if r.runaway && firstFlag == nil { firstFlag = i }
        }
        #expect(raised == 1)
        #expect((firstFlag ?? 999) < 150)
    }
}
