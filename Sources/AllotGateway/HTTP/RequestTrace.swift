import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import NIOHTTP1
import Tracing

/// A request's spans when tracing is on (`allot gateway --otlp-endpoint`): `gateway.request`
/// (a server span continuing the caller's W3C `traceparent`), and under it `allot.reserve`,
/// `upstream.call` (a client span; its own `traceparent` goes to the upstream) and
/// `allot.settle`. Off, nothing here runs: the proxy holds no tracer.
struct RequestTrace: Sendable {
    let tracer: any Tracer
    let root: any Span

    /// Starts the request's span, its parent taken from the request's `traceparent` if any.
    static func start(_ tracer: (any Tracer)?, _ request: Request, id: String) -> RequestTrace? {
        guard let tracer else { return nil }
        var parent = ServiceContext.topLevel
        tracer.extract(request.headers, into: &parent, using: FieldsExtractor())
        let root = tracer.startSpan("gateway.request", context: parent, ofKind: .server)
        root.attributes["http.request.method"] = request.method.rawValue
        root.attributes["url.path"] = request.uri.path
        root.attributes["allot.request_id"] = id
        return RequestTrace(tracer: tracer, root: root)
    }

    /// A child of the request's span; the caller ends it.
    func child(_ name: String, kind: SpanKind = .internal) -> any Span {
        tracer.startSpan(name, context: root.context, ofKind: kind)
    }

    /// Replaces the `traceparent` (and `tracestate`) forwarded upstream with `span`'s.
    func inject(_ span: any Span, into headers: inout HTTPHeaders) {
        headers.remove(name: "traceparent")
        headers.remove(name: "tracestate")
        tracer.inject(span.context, into: &headers, using: HeadersInjector())
    }

    /// Ends the request's span with the answer's status: at once for an answer made here,
    /// after its body is written (or cut) for a forwarded one.
    func finish(_ response: inout Response) {
        root.attributes["http.response.status_code"] = Int(response.status.code)
        if response.status.code >= 500 { root.setStatus(.init(code: .error)) }
        let root = self.root
        let body = response.body
        response.body = ResponseBody(contentLength: body.contentLength) { writer in
            defer { root.end() }
            try await body.write(writer)
        }
    }

    /// Settles `admission` inside an `allot.settle` span.
    func settle(_ admission: Admission, _ outcome: GatewayCore.Outcome) {
        let span = child("allot.settle")
        span.attributes["allot.outcome"] = outcome.name
        admission.settle(outcome)
        span.end()
    }
}

extension GatewayCore.Outcome {
    /// How the settlement reads in a span: `usage`, `refund`, `error` or `bound`.
    var name: String {
        switch self {
        case .usage: "usage"
        case .upstreamFailed: "refund"
        case .upstreamError: "error"
        case .incomplete: "bound"
        }
    }
}

private struct FieldsExtractor: Extractor {
    func extract(key: String, from carrier: HTTPFields) -> String? {
        HTTPField.Name(key).flatMap { carrier[$0] }
    }
}

private struct HeadersInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout HTTPHeaders) {
        carrier.replaceOrAdd(name: key, value: value)
    }
}
