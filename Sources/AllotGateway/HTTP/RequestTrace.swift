import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import NIOHTTP1
import Synchronization
import Tracing

/// A request's spans when tracing is on (`allot gateway --otlp-endpoint`): `gateway.request`
/// (a server span continuing the caller's W3C `traceparent`), and under it `allot.reserve`,
/// `upstream.call` (a client span; its own `traceparent` goes to the upstream) and
/// `allot.settle`. Off, nothing here runs: the proxy holds no tracer.
struct RequestTrace: Sendable {
    let tracer: any Tracer
    let root: OpenSpan

    /// Starts the request's span, its parent taken from the request's `traceparent` if any.
    static func start(_ tracer: (any Tracer)?, _ request: Request, id: String) -> RequestTrace? {
        guard let tracer else { return nil }
        var parent = ServiceContext.topLevel
        let carrier = propagated(request.headers)
        if !carrier.isEmpty { tracer.extract(carrier, into: &parent, using: FieldsExtractor()) }
        let root = tracer.startSpan("gateway.request", context: parent, ofKind: .server)
        root.attributes["http.request.method"] = request.method.rawValue
        root.attributes["url.path"] = request.uri.path
        root.attributes["allot.request_id"] = id
        return RequestTrace(tracer: tracer, root: OpenSpan(root))
    }

    /// What the tracer may read of a request: a well-formed W3C `traceparent` and its
    /// `tracestate`, nothing else (a tracer may log the carrier it could not read: never the
    /// caller's credentials).
    static func propagated(_ headers: HTTPFields) -> HTTPFields {
        var out = HTTPFields()
        guard let parent = headers[values: .traceparent].first, headers[values: .traceparent].count == 1,
              ProxyResponder.isTraceparent(parent) else { return out }
        out[.traceparent] = parent
        if let state = headers[.tracestate], state.utf8.count <= 512 { out[.tracestate] = state }
        return out
    }

    /// A child of the request's span, ended by the caller (or when dropped).
    func child(_ name: String, kind: SpanKind = .internal) -> OpenSpan {
        OpenSpan(tracer.startSpan(name, context: root.span.context, ofKind: kind))
    }

    /// Replaces the `traceparent` (and `tracestate`) forwarded upstream with `span`'s.
    func inject(_ span: OpenSpan, into headers: inout HTTPHeaders) {
        headers.remove(name: "traceparent")
        headers.remove(name: "tracestate")
        tracer.inject(span.span.context, into: &headers, using: HeadersInjector())
    }

    /// Ends the request's span with the answer's status: at once for an answer made here,
    /// after its body is written (or cut) for a forwarded one.
    func finish(_ response: inout Response) {
        root.span.attributes["http.response.status_code"] = Int(response.status.code)
        if response.status.code >= 500 { root.span.setStatus(.init(code: .error)) }
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
        span.span.attributes["allot.outcome"] = outcome.name
        admission.settle(outcome)
        span.end()
    }
}

/// A span ended exactly once: by `end()`, or when the last reference goes (an answer dropped
/// because its client left before the head was written never runs its body).
final class OpenSpan: Sendable {
    let span: any Span
    private let open = Mutex(true)

    init(_ span: any Span) { self.span = span }

    func end() {
        if open.withLock({ o in defer { o = false }; return o }) { span.end() }
    }

    deinit { end() }
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
