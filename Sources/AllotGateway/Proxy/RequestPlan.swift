import AllotCore
import Foundation

/// What a request may cost at most, worked out from its body before any budget is touched.
///
/// Input bound: the body's size in bytes (a BPE token is at least one byte of UTF-8, so no
/// tokenizer counts more prompt tokens than that), plus, for each non-text part (image, audio,
/// file), the model's configured maximum for that kind; a part kind without one is refused.
/// Output bound: the largest output cap the request sends (`max_tokens`,
/// `max_completion_tokens`, `max_output_tokens`), else the model's cap, times the choices
/// (`n`, `best_of`). Inputs the body does not carry (stored conversations, background
/// answers, hosted tools) are refused unless the model's config bounds them. docs/gateway.md.
public struct RequestPlan: Hashable, Sendable {
    public var route: Route
    public var model: String?
    public var stream: Bool
    public var inputBound: Int64
    public var outputBound: Int64
    public var costBound: Int64
    /// The body to forward (with `stream_options.include_usage` added to a stream that
    /// did not ask for usage).
    public var body: Data
    /// The gateway asked for the usage chunk of this stream (the client did not).
    public var addedUsage = false

    public init(route: Route, model: String?, stream: Bool, inputBound: Int64, outputBound: Int64, costBound: Int64,
                body: Data, addedUsage: Bool = false) {
        self.route = route
        self.model = model
        self.stream = stream
        self.inputBound = inputBound
        self.outputBound = outputBound
        self.costBound = costBound
        self.body = body
        self.addedUsage = addedUsage
    }

    /// The upper bound charged at reservation.
    public var reserveCost: Cost {
        Cost(requests: 1, tokens: Checked.sum(inputBound, outputBound), inputTokens: inputBound, outputTokens: outputBound,
             microDollars: costBound)
    }

    /// The most choices one request may ask for (OpenAI's own limit for `n`).
    static let maxChoices: Int64 = 128
    /// Anthropic adds a tool-use system prompt the body does not carry (a few hundred tokens).
    static let anthropicToolPrompt: Int64 = 1_000

    public static func make(route: Route, body: Data, models: [String: ModelPrice], entitlements: Entitlements,
                            tier: String) throws(GatewayError) -> RequestPlan {
        guard route.isModelRoute else {
            return RequestPlan(route: route, model: nil, stream: false, inputBound: 0, outputBound: 0, costBound: 0, body: body)
        }
        guard let object = try? JSONSerialization.jsonObject(with: body), var json = object as? [String: Any] else {
            throw .badRequest("invalid_json", "the request body is not a JSON object")
        }
        guard let model = json["model"] as? String, !model.isEmpty else {
            throw .badRequest("missing_model", "the request body names no model")
        }
        guard let price = models[model] else {
            throw GatewayError(404, type: "invalid_request_error", code: "model_not_found",
                               "the model '\(model)' does not exist or is not served by this gateway")
        }
        let api: ModelPrice.API = route.isAnthropic ? .anthropic : .openai
        guard price.apis.contains(api) else {
            throw .badRequest("model_api_mismatch", "the model '\(model)' is not served through the \(api.rawValue) API (models[].apis)")
        }
        if let allowed = entitlements.models, !allowed.contains(model) {
            throw GatewayError(403, type: "permission_error", code: "model_not_entitled",
                               "tier \(tier) is not entitled to model '\(model)' (entitlement models: \(allowed.sorted().joined(separator: ", ")))",
                               budget: "entitlement.models")
        }
        let bytes = Int64(body.count)
        if let max = entitlements.maxPromptBytes, bytes > max {
            throw GatewayError(413, type: "invalid_request_error", code: "prompt_too_large",
                               "the request is \(bytes) bytes; tier \(tier) allows at most \(max) (entitlement max_prompt_bytes)",
                               budget: "entitlement.max_prompt_bytes")
        }
        var inputBound = Checked.sum(bytes, try partsBound(json, route: route, price: price))
        inputBound = Checked.sum(inputBound, try unseenInput(json, route: route, price: price))

        // Output: the largest cap sent (a reasoning model spends under max_completion_tokens
        // whatever max_tokens says), else the model's; times the choices.
        var cap: Int64?
        for key in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            guard let n = try positiveInteger(json, key) else { continue }
            if n > price.maxOutputTokens {
                throw .badRequest("max_tokens_too_large", "\(key) is \(n); model '\(model)' allows at most \(price.maxOutputTokens)")
            }
            cap = max(cap ?? 0, n)
        }
        if route == .messages && cap == nil {
            throw .badRequest("missing_max_tokens", "max_tokens is required by the Messages API")
        }
        var outputBound: Int64 = route == .embeddings ? 0 : cap ?? price.maxOutputTokens
        if route != .embeddings, let max = entitlements.maxTokens, outputBound > max {
            throw GatewayError(400, type: "invalid_request_error", code: "max_tokens_not_entitled",
                               "max_tokens \(outputBound) is above tier \(tier)'s ceiling of \(max) (entitlement max_tokens); send max_tokens ≤ \(max)",
                               budget: "entitlement.max_tokens")
        }
        var choices: Int64 = 1
        if route == .completions, let prompts = json["prompt"] as? [Any], prompts.first is String || prompts.first is [Any] {
            // A list of prompts: each gets its own choices.
            choices = Int64(prompts.count)
        }
        var perPrompt: Int64 = 1
        for key in ["n", "best_of"] {
            guard let n = try positiveInteger(json, key) else { continue }
            guard route == .chat || route == .completions else {
                throw .badRequest("unsupported_parameter", "\(key) is not accepted on the \(route.rawValue) route")
            }
            guard n <= maxChoices else { throw .badRequest("invalid_\(key)", "\(key) is \(n); at most \(maxChoices)") }
            // best_of generates that many completions upstream and returns n of them.
            perPrompt = max(perPrompt, n)
        }
        outputBound = Checked.product(outputBound, Checked.product(max(1, choices), perPrompt))

        let stream = json["stream"] as? Bool ?? false
        var forward = body
        var added = false
        if stream && (route == .chat || route == .completions) {
            // Responses and Messages streams always carry usage; Chat Completions only when asked.
            var options = json["stream_options"] as? [String: Any] ?? [:]
            if options["include_usage"] as? Bool != true {
                options["include_usage"] = true
                json["stream_options"] = options
                forward = (try? JSONSerialization.data(withJSONObject: json)) ?? body
                added = true
            }
        }
        return RequestPlan(route: route, model: model, stream: stream, inputBound: inputBound, outputBound: outputBound,
                           costBound: price.boundMicroDollars(input: inputBound, output: outputBound), body: forward,
                           addedUsage: added)
    }

    /// The value of `key` as a positive integer; nil when absent or null; 400 otherwise.
    static func positiveInteger(_ json: [String: Any], _ key: String) throws(GatewayError) -> Int64? {
        guard let v = json[key], !(v is NSNull) else { return nil }
        guard !isBoolean(v), let number = v as? NSNumber,
              case let d = number.doubleValue, d >= 1, d <= 1e15, d == d.rounded() else {
            throw .badRequest("invalid_\(key)", "\(key) must be a positive integer")
        }
        return Int64(d)
    }

    /// JSON `true`/`false` (Foundation may hand them over as NSNumber 1/0).
    static func isBoolean(_ v: Any) -> Bool {
        if type(of: v) == Bool.self { return true }
        guard let n = v as? NSNumber else { return false }
        return String(cString: n.objCType) == "c"
    }

    // MARK: parts

    /// Part types whose cost is their text, already in the body's bytes.
    static let textParts: Set<String> = [
        "text", "input_text", "output_text", "refusal", "summary_text", "reasoning_text",
        "tool_use", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
        "thinking", "redacted_thinking", "reasoning", "message", "tool_result",
    ]
    /// Non-text part types, by the model's `max_part_tokens` kind that bounds them.
    static let boundedParts: [String: ModelPrice.Part] = [
        "image_url": .image, "input_image": .image, "image": .image,
        "input_audio": .audio, "audio": .audio,
        "file": .file, "input_file": .file, "document": .file,
    ]

    /// Tokens the request's non-text parts may cost beyond their bytes: messages' content
    /// parts (Chat Completions, Messages, tool results inside them), Responses input items.
    static func partsBound(_ json: [String: Any], route: Route, price: ModelPrice) throws(GatewayError) -> Int64 {
        var total: Int64 = 0
        var items: [Any] = []
        switch route {
        case .chat, .messages:
            for m in json["messages"] as? [Any] ?? [] {
                guard let m = m as? [String: Any] else { continue }
                // A previous audio answer brought back by id is input the body does not carry.
                if let a = m["audio"], !(a is NSNull) {
                    throw .badRequest("unsupported_part_type", "messages carrying audio from an earlier answer (audio.id) cannot be bounded")
                }
                if let c = m["content"] { items.append(c) }
            }
            if route == .messages, let system = json["system"] { items.append(system) }
        case .responses:
            if let input = json["input"] { items.append(input) }
        default:
            return 0
        }
        var walked = 0
        while let next = items.popLast() {
            guard let parts = next as? [Any] else { continue } // a plain string: text
            for part in parts {
                guard let p = part as? [String: Any] else { continue }
                // Responses shorthand `{role, content}` and `type: message` items, and tool
                // results, carry parts of their own.
                if let inner = p["content"], p["type"] == nil || p["type"] as? String == "message" || p["type"] as? String == "tool_result" {
                    walked += 1
                    guard walked < 1_000_000 else { throw .badRequest("invalid_json", "the request has too many content parts") }
                    items.append(inner)
                    continue
                }
                // Tool outputs given as parts (Responses) may carry images and files.
                if let output = p["output"] as? [Any] {
                    walked += 1
                    items.append(output)
                }

                guard let type = p["type"] as? String else {
                    throw .badRequest("invalid_part", "a content part has no type")
                }
                if textParts.contains(type) { continue }
                if type == "item_reference" {
                    throw .badRequest("unsupported_part_type", "input items of type item_reference refer to stored input the gateway cannot bound")
                }
                guard let kind = boundedParts[type] else {
                    throw .badRequest("unsupported_part_type", "content parts of type '\(type)' are not accepted: the gateway cannot bound their cost")
                }
                guard let each = price.maxPartTokens[kind] else {
                    throw .badRequest("unsupported_part_type",
                                      "model '\(price.name)' takes no \(kind.rawValue) parts (type '\(type)'; models[].max_part_tokens.\(kind.rawValue) is not set)")
                }
                total = Checked.sum(total, each)
            }
        }
        return total
    }

    /// Input the body does not carry: a stored conversation (bounded by the model's context
    /// window, or refused), background answers and hosted tools (refused), Anthropic's tool
    /// prompt (a fixed margin).
    static func unseenInput(_ json: [String: Any], route: Route, price: ModelPrice) throws(GatewayError) -> Int64 {
        var extra: Int64 = 0
        if route == .responses {
            if json["background"] as? Bool == true {
                throw .badRequest("background_not_supported", "background responses are not accepted: their usage arrives after the request ends")
            }
            for key in ["previous_response_id", "conversation", "prompt"] {
                guard let v = json[key], !(v is NSNull) else { continue }
                guard let window = price.contextWindowTokens else {
                    throw .badRequest("stored_input_not_bounded",
                                      "\(key) adds stored input the gateway cannot bound for model '\(price.name)' (models[].context_window_tokens is not set)")
                }
                extra = max(extra, window)
            }
        }
        for key in ["mcp_servers", "web_search_options"] where json[key] != nil && !(json[key] is NSNull) {
            throw .badRequest("unsupported_tool", "\(key) adds work billed outside the request's bound")
        }
        for tool in json["tools"] as? [Any] ?? [] {
            let type = (tool as? [String: Any])?["type"] as? String
            let clientSide = route == .messages ? (type == nil || type == "custom") : (type == "function" || type == "custom")
            guard clientSide else {
                throw .badRequest("unsupported_tool", "tools of type '\(type ?? "none")' are not accepted: hosted tools are billed outside the request's bound")
            }
        }
        if route == .messages, let tools = json["tools"] as? [Any], !tools.isEmpty { extra = Checked.sum(extra, anthropicToolPrompt) }
        return extra
    }
}
