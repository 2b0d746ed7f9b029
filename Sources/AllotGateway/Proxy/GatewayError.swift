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
}
