import AllotGateway
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension MockUpstream {
    /// An answer in OpenAI's Responses shape (`usage.input_tokens`, `output_tokens`; a stream
    /// ends with `response.completed`) or Anthropic's Messages shape (`message_start` carries
    /// the input tokens, `message_delta` the output tokens), whole or streamed.
    struct Shaped: Sendable {
        var anthropic: Bool
        var model: String
        var prompt: Int64
        var completion: Int64
        var withUsage: Bool
        var events: Int
        var interval: Duration
        var cut: Bool

        var text: String { String(repeating: "lorem ", count: Int(min(completion, 4096))) }

        func whole() -> Response {
            var object: [String: Any]
            if anthropic {
                object = ["id": "msg_mock", "type": "message", "role": "assistant", "model": model, "stop_reason": "end_turn",
                          "content": [["type": "text", "text": text]]]
                if withUsage { object["usage"] = ["input_tokens": prompt, "output_tokens": completion] }
            } else {
                object = response(status: "completed")
                object["output"] = [["type": "message", "role": "assistant", "content": [["type": "output_text", "text": text]]]]
            }
            return HTTPSupport.json(200, object)
        }

        func response(status: String) -> [String: Any] {
            var r: [String: Any] = ["id": "resp_mock", "object": "response", "status": status, "model": model, "output": [] as [Any]]
            if withUsage && status == "completed" {
                r["usage"] = ["input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion]
            }
            return r
        }

        func stream() -> Response {
            var fields = HTTPFields()
            fields[.contentType] = "text/event-stream"
            let me = self
            return Response(status: .ok, headers: fields, body: ResponseBody { writer in
                func send(_ event: String, _ data: [String: Any]) async throws {
                    let json = String(decoding: try JSONSerialization.data(withJSONObject: data, options: .sortedKeys), as: UTF8.self)
                    try await writer.write(ByteBuffer(string: "event: \(event)\ndata: \(json)\n\n"))
                }
                if me.anthropic {
                    var start: [String: Any] = ["id": "msg_mock", "type": "message", "role": "assistant", "model": me.model, "content": [] as [Any]]
                    if me.withUsage { start["usage"] = ["input_tokens": me.prompt, "output_tokens": 1] }
                    try await send("message_start", ["type": "message_start", "message": start])
                    try await send("content_block_start", ["type": "content_block_start", "index": 0, "content_block": ["type": "text", "text": ""]])
                } else {
                    try await send("response.created", ["type": "response.created", "response": me.response(status: "in_progress")])
                }
                for i in 0..<me.events {
                    if me.cut && i == me.events / 2 { throw CancellationError() }
                    if me.anthropic {
                        try await send("content_block_delta", ["type": "content_block_delta", "index": 0, "delta": ["type": "text_delta", "text": "tok\(i) "]])
                    } else {
                        try await send("response.output_text.delta", ["type": "response.output_text.delta", "output_index": 0, "delta": "tok\(i) "])
                    }
                    if me.interval > .zero { try await Task.sleep(for: me.interval) }
                }
                if me.anthropic {
                    try await send("content_block_stop", ["type": "content_block_stop", "index": 0])
                    var delta: [String: Any] = ["type": "message_delta", "delta": ["stop_reason": "end_turn"]]
                    if me.withUsage { delta["usage"] = ["output_tokens": me.completion] }
                    try await send("message_delta", delta)
                    try await send("message_stop", ["type": "message_stop"])
                } else {
                    try await send("response.completed", ["type": "response.completed", "response": me.response(status: "completed")])
                }
                try await writer.finish(nil)
            })
        }
    }
}
