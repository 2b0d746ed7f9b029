import AllotGateway
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// An OpenAI-compatible upstream for tests, the demo and benchmarks: chat completions
/// (plain and streaming), completions and embeddings, with deterministic `usage`; OpenAI's
/// Responses and Anthropic's Messages in their own shapes (`MockUpstream+Shapes.swift`).
///
/// Prompt tokens are ⌈UTF-8 bytes of the request body / 4⌉ (never above the gateway's
/// byte bound); completion tokens are `completionTokens`, capped by `max_tokens` (or
/// `max_completion_tokens`, `max_output_tokens`). A request
/// may override with headers: `x-mock-completion-tokens: N`, `x-mock-latency-ms: N`,
/// `x-mock-chunk-ms: N` (pause between stream events), and
/// `x-mock-fault: hang | cut | error | no-usage` (hang: answer nothing for `hangLimit`; cut:
/// stream half of the events, then drop the connection; error: a 500; no-usage: omit usage).
public final class MockUpstream: Service, Sendable {
    public struct Settings: Sendable {
        public var host = "127.0.0.1"
        public var port = 9000
        public var completionTokens: Int64 = 64
        public var latency: Duration = .zero
        /// Pause between stream events.
        public var chunkInterval: Duration = .milliseconds(2)
        /// Events a stream is split into (at most).
        public var chunks = 8
        public var hangLimit: Duration = .seconds(30)
        public init() {}
    }

    public let settings: Settings
    private let onListening: @Sendable (Int) -> Void
    private let logger: Logger

    public init(settings: Settings = Settings(), logger: Logger = Logger(label: "allot.mock"),
                onListening: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.settings = settings
        self.onListening = onListening
        var l = logger
        l.logLevel = .error
        self.logger = l
    }

    public func run() async throws {
        try await HTTPSupport.listener(host: settings.host, port: settings.port, logger: logger, route: { _ in "mock" },
                                       respond: { [self] r, _ in await self.respond(r) }, onBound: onListening).run()
    }

    func respond(_ request: Request) async -> Response {
        let path = request.uri.path
        if request.method == .get && path == "/v1/models" {
            return HTTPSupport.json(200, ["object": "list", "data": [["id": "mock", "object": "model"]]])
        }
        guard request.method == .post, ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"].contains(path) else {
            return HTTPSupport.json(404, ["error": ["message": "unknown path \(path)", "type": "invalid_request_error"]])
        }
        guard let body = try? await request.body.collect(upTo: 16 << 20),
              let json = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] else {
            return HTTPSupport.json(400, ["error": ["message": "the body is not JSON", "type": "invalid_request_error"]])
        }
        let fault = HTTPSupport.header(request, "x-mock-fault")
        let latency = HTTPSupport.header(request, "x-mock-latency-ms").flatMap(Int64.init).map { Duration.milliseconds($0) } ?? settings.latency
        if fault == "hang" {
            try? await Task.sleep(for: settings.hangLimit)
            return HTTPSupport.json(500, ["error": ["message": "hung", "type": "server_error"]])
        }
        if latency > .zero { try? await Task.sleep(for: latency) }
        if fault == "error" {
            return HTTPSupport.json(500, ["error": ["message": "the mock upstream failed on purpose", "type": "server_error"]])
        }
        let model = json["model"] as? String ?? "mock"
        let prompt = Int64((body.readableBytes + 3) / 4)
        var completion = HTTPSupport.header(request, "x-mock-completion-tokens").flatMap(Int64.init) ?? settings.completionTokens
        if let max = (json["max_tokens"] as? NSNumber ?? json["max_completion_tokens"] as? NSNumber ?? json["max_output_tokens"] as? NSNumber)?.int64Value {
            completion = min(completion, max)
        }
        if path == "/v1/embeddings" { completion = 0 }
        let usage: [String: Any] = ["prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion]
        let withUsage = fault != "no-usage"
        let stream = json["stream"] as? Bool ?? false
        let interval = HTTPSupport.header(request, "x-mock-chunk-ms").flatMap(Int64.init).map { Duration.milliseconds($0) } ?? settings.chunkInterval
        if path == "/v1/responses" || path == "/v1/messages" {
            let answer = Shaped(anthropic: path == "/v1/messages", model: model, prompt: prompt, completion: completion, withUsage: withUsage,
                                events: max(1, min(settings.chunks, Int(completion))), interval: interval, cut: fault == "cut")
            return stream ? answer.stream() : answer.whole()
        }
        if !stream {
            var object: [String: Any] = ["id": "mock-1", "object": path == "/v1/embeddings" ? "list" : "chat.completion", "model": model]
            if path == "/v1/embeddings" {
                object["data"] = [["object": "embedding", "index": 0, "embedding": [0.0, 0.1, 0.2]]]
            } else {
                object["choices"] = [["index": 0, "finish_reason": "stop",
                                      "message": ["role": "assistant", "content": String(repeating: "lorem ", count: Int(min(completion, 4096)))]]]
            }
            if withUsage { object["usage"] = usage }
            return HTTPSupport.json(200, object)
        }
        let includeUsage = ((json["stream_options"] as? [String: Any])?["include_usage"] as? Bool ?? false) && withUsage
        let events = max(1, min(settings.chunks, Int(completion)))
        let cut = fault == "cut"
        let completionTokens = completion
        var fields = HTTPFields()
        fields[.contentType] = "text/event-stream"
        HTTPSupport.add([("cache-control", "no-cache")], to: &fields)
        return Response(status: .ok, headers: fields, body: ResponseBody { writer in
            for i in 0..<events {
                if cut && i == events / 2 { throw CancellationError() }
                let delta = "{\"id\":\"mock-1\",\"object\":\"chat.completion.chunk\",\"model\":\"\(model)\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok\(i) \"}}]}"
                try await writer.write(ByteBuffer(string: "data: \(delta)\n\n"))
                if interval > .zero { try await Task.sleep(for: interval) }
            }
            if includeUsage {
                let u = "{\"id\":\"mock-1\",\"object\":\"chat.completion.chunk\",\"model\":\"\(model)\",\"choices\":[],\"usage\":{\"prompt_tokens\":\(prompt),\"completion_tokens\":\(completionTokens),\"total_tokens\":\(prompt + completionTokens)}}"
                try await writer.write(ByteBuffer(string: "data: \(u)\n\n"))
            }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await writer.finish(nil)
        })
    }
}
