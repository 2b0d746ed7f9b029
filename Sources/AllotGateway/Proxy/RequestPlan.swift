import AllotCore
import Foundation

/// What a request may cost at most, worked out from its body before any budget is touched.
///
/// The prompt bound is the body's size in bytes: a BPE token is at least one byte of UTF-8, so
/// no tokenizer can count more prompt tokens than that. The output bound is `max_tokens`
/// (or `max_completion_tokens`), else the model's configured cap.
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

    /// The upper bound charged at reservation.
    public var reserveCost: Cost {
        Cost(requests: 1, tokens: inputBound + outputBound, inputTokens: inputBound, outputTokens: outputBound,
             microDollars: costBound)
    }

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
        if let allowed = entitlements.models, !allowed.contains(model) {
            throw GatewayError(403, type: "permission_error", code: "model_not_entitled",
                               "tier \(tier) is not entitled to model '\(model)' (entitlement models: \(allowed.sorted().joined(separator: ", ")))",
                               budget: "entitlement.models")
        }
        let inputBound = Int64(body.count)
        if let max = entitlements.maxPromptBytes, inputBound > max {
            throw GatewayError(413, type: "invalid_request_error", code: "prompt_too_large",
                               "the request is \(inputBound) bytes; tier \(tier) allows at most \(max) (entitlement max_prompt_bytes)",
                               budget: "entitlement.max_prompt_bytes")
        }
        var outputBound: Int64 = route == .embeddings ? 0 : price.maxOutputTokens
        for key in ["max_tokens", "max_completion_tokens"] {
            guard let v = json[key], !(v is NSNull) else { continue }
            guard let n = (v as? NSNumber)?.int64Value, n > 0, (v as? NSNumber)?.doubleValue == Double(n) else {
                throw .badRequest("invalid_max_tokens", "\(key) must be a positive integer")
            }
            if n > price.maxOutputTokens {
                throw .badRequest("max_tokens_too_large", "\(key) is \(n); model '\(model)' allows at most \(price.maxOutputTokens)")
            }
            outputBound = n
        }
        if route != .embeddings, let max = entitlements.maxTokens, outputBound > max {
            throw GatewayError(400, type: "invalid_request_error", code: "max_tokens_not_entitled",
                               "max_tokens \(outputBound) is above tier \(tier)'s ceiling of \(max) (entitlement max_tokens); send max_tokens ≤ \(max)",
                               budget: "entitlement.max_tokens")
        }
        let stream = json["stream"] as? Bool ?? false
        var forward = body
        if stream {
            var options = json["stream_options"] as? [String: Any] ?? [:]
            if options["include_usage"] as? Bool != true {
                options["include_usage"] = true
                json["stream_options"] = options
                forward = (try? JSONSerialization.data(withJSONObject: json)) ?? body
            }
        }
        return RequestPlan(route: route, model: model, stream: stream, inputBound: inputBound, outputBound: outputBound,
                           costBound: price.microDollars(input: inputBound, output: outputBound), body: forward)
    }
}
