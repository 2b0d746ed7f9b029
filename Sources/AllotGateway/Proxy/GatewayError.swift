import Foundation

/// A refusal, rendered as an OpenAI-format error: `{"error": {"message", "type", "code", "param"}}`.
public struct GatewayError: Error, Hashable, Sendable, CustomStringConvertible {
    public var status: Int
    public var type: String
    public var code: String
    public var message: String
    /// The budget or entitlement that decided, when there is one.
    public var budget: String?
    public var retryAfterSeconds: Int?

    public init(_ status: Int, type: String, code: String, _ message: String, budget: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.budget = budget
        retryAfterSeconds = retryAfter
    }

    public var description: String { "\(status) \(code): \(message)" }

    public static func badRequest(_ code: String, _ message: String) -> GatewayError {
        GatewayError(400, type: "invalid_request_error", code: code, message)
    }

    /// The JSON body.
    public var body: Data {
        var error: [String: Any] = ["message": message, "type": type, "code": code, "param": NSNull()]
        if let budget { error["budget"] = budget }
        return (try? JSONSerialization.data(withJSONObject: ["error": error], options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    }

    /// The same refusal in Anthropic's format: `{"type": "error", "error": {"type", "message"}}`
    /// (with our `code` and `budget` alongside).
    public var anthropicBody: Data {
        let type = switch status {
        case 400: "invalid_request_error"
        case 401: "authentication_error"
        case 403: "permission_error"
        case 404: "not_found_error"
        case 413: "request_too_large"
        case 429: "rate_limit_error"
        case 503: "overloaded_error"
        default: "api_error"
        }
        var error: [String: Any] = ["type": type, "message": message, "code": code]
        if let budget { error["budget"] = budget }
        return (try? JSONSerialization.data(withJSONObject: ["type": "error", "error": error],
                                            options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    }
}
