import AllotGateway
import AllotCore
import Foundation

/// The demo's deployment: tiers, models, consumers and the workload each consumer offers.
enum DemoScript {
    static let configYAML = """
    # The demo's deployment file: the coordinator reads tiers and budgets, the gateways
    # read the same file plus gateway, models and entitlements.
    lease: {ttl: 30s, refresh_interval: 5s}
    tiers:
      - name: free
        templates:
          - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 120, period: 1m, burst: 6}
          - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 90000, period: 1m, burst: 6000}
          - {name: month, scope: [consumer], unit: tokens, kind: quota, allowance: 2000000, window: month}
        entitlements: {models: [mini], routes: [chat, embeddings], max_tokens: 512, max_prompt_bytes: 8192}
      - name: pro
        templates:
          - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 1200, period: 1m, burst: 40}
          - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 900000, period: 1m, burst: 40000}
          - {name: spend, scope: [team], unit: micro_dollars, kind: quota, allowance: 50000000, window: month}
          - {name: inflight, scope: [consumer], kind: concurrency, limit: 16}
      - name: agent
        templates:
          - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 1800, period: 1m, burst: 30}
          - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 600000, period: 1m, burst: 20000}
          - {name: inflight, scope: [consumer], kind: concurrency, limit: 3}
        entitlements:
          models: [mini]
          max_chain_depth: 5
          runaway: {factor: 4, window: 3s, baseline: 60s, min_rate: 2, action: throttle}
    models:
      - {name: mini, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_output_tokens: 4096}
      - {name: large, input_usd_per_mtok: 2.5, output_usd_per_mtok: 10, max_output_tokens: 8192}
    gateway:
      upstream_timeout: 5s
      admission_wait: 100ms
    """

    /// The API a consumer calls, in its own request shape.
    enum API: String, Sendable {
        case chat, responses, messages

        var path: String {
            switch self {
            case .chat: "/v1/chat/completions"
            case .responses: "/v1/responses"
            case .messages: "/v1/messages"
            }
        }

        /// Request `i`'s body in this API's shape.
        func body(model: String, maxTokens: Int, stream: Bool, text: String) -> String {
            switch self {
            case .chat:
                "{\"model\":\"\(model)\",\"max_tokens\":\(maxTokens),\"stream\":\(stream),\"messages\":[{\"role\":\"user\",\"content\":\"\(text)\"}]}"
            case .responses:
                "{\"model\":\"\(model)\",\"max_output_tokens\":\(maxTokens),\"stream\":\(stream),\"input\":\"\(text)\"}"
            case .messages:
                "{\"model\":\"\(model)\",\"max_tokens\":\(maxTokens),\"stream\":\(stream),\"messages\":[{\"role\":\"user\",\"content\":\"\(text)\"}]}"
            }
        }
    }

    /// One consumer's share of the workload.
    struct Actor: Sendable {
        var id: String
        var tier: String
        var team: String
        var model: String
        /// Requests per second offered, as a function of the run's progress (0...1).
        var rate: @Sendable (Double) -> Double
        var streamEvery: Int
        var maxTokens: Int
        var completionTokens: Int
        var latencyMs: Int
        var chainDepth: Int?
        var api: API = .chat
        var key: String { "sk-demo-\(id)" }
    }

    static let actors: [Actor] = [
        Actor(id: "alice", tier: "free", team: "hobby", model: "mini", rate: { _ in 4 }, streamEvery: 3, maxTokens: 256,
              completionTokens: 120, latencyMs: 5),
        Actor(id: "bob", tier: "free", team: "hobby", model: "mini", rate: { _ in 1.5 }, streamEvery: 2, maxTokens: 256,
              completionTokens: 80, latencyMs: 5),
        // Anthropic's Messages API, long answers: the tokens/min cap binds, not the requests.
        Actor(id: "carol", tier: "pro", team: "research", model: "large", rate: { _ in 19 }, streamEvery: 2, maxTokens: 1600,
              completionTokens: 1400, latencyMs: 400, api: .messages),
        // OpenAI's Responses API.
        Actor(id: "dave", tier: "pro", team: "research", model: "mini", rate: { _ in 8 }, streamEvery: 4, maxTokens: 400,
              completionTokens: 150, latencyMs: 10, api: .responses),
        Actor(id: "eve", tier: "agent", team: "bots", model: "mini", rate: { _ in 5 }, streamEvery: 1, maxTokens: 300,
              completionTokens: 100, latencyMs: 400, chainDepth: 2),
        // Calm for the first third, then a loop gone wrong.
        Actor(id: "mallory", tier: "agent", team: "bots", model: "mini", rate: { $0 < 0.33 ? 2 : 40 }, streamEvery: 5, maxTokens: 200,
              completionTokens: 60, latencyMs: 5, chainDepth: 1),
    ]

    static var consumersYAML: String {
        "consumers:\n" + actors.map {
            "  - {id: \($0.id), team: \($0.team), tenant: demo, tier: \($0.tier), key_sha256: \(ConsumerDirectory.hash($0.key))}\n"
        }.joined()
    }
}
